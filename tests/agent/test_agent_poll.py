"""The agent's reading of a poll answer (``gateway.agent.poll``), table by table: ``Retry-After`` in
every form a gateway could send, clamped into a sane range; the manifest's shape; the words for a wait."""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

import pytest

from gateway.agent.errors import AgentError
from gateway.agent.poll import MAX_RETRY_S, MIN_RETRY_S, Waiting, check_manifest, retry_after, why_no_update

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, 60.0),  # none: the default
        ("300", 300.0),
        ("0", MIN_RETRY_S),
        ("-5", MIN_RETRY_S),
        ("inf", MAX_RETRY_S),
        ("-inf", MIN_RETRY_S),
        ("nan", 60.0),
        ("1e308", MAX_RETRY_S),
        ("soon", 60.0),
        ("", 60.0),
        (formatdate(NOW + 120, usegmt=True), 120.0),
        (formatdate(NOW - 3600, usegmt=True), MIN_RETRY_S),  # a date in the past
        (formatdate(NOW + 10**7, usegmt=True), MAX_RETRY_S),
        ("Wed, 99 Foo 2015 07:28:00 GMT", 60.0),
    ],
)
def test_retry_after_is_clamped_into_a_sane_range(header: str | None, expected: float) -> None:
    headers = {} if header is None else {"Retry-After": header}
    assert retry_after(headers, 60.0, now=NOW) == pytest.approx(expected, abs=1.0)


def test_the_ceiling_is_the_agents_own() -> None:
    assert retry_after({"Retry-After": "inf"}, 60.0, max_s=30.0) == 30.0
    assert retry_after({}, 600.0, max_s=30.0) == 30.0  # the default is clamped too


GOOD = {
    "model_id": "m",
    "version": "1",
    "sha256": "ab" * 32,
    "artifact_url": "u",
    "signature_url": "s",
    "length": 5,
}


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ([1, 2, 3], "an array"),
        (None, "null"),
        ("x", "a string"),
        ({**GOOD, "model_id": 5}, "lacks model_id"),
        ({k: v for k, v in GOOD.items() if k != "length"}, "length is None"),
        ({**GOOD, "length": "5"}, "length is '5'"),
        ({**GOOD, "length": True}, "length is True"),
        ({**GOOD, "length": -1}, "length is -1"),
    ],
)
def test_a_manifest_of_the_wrong_shape_is_named(doc: Any, why: str) -> None:
    with pytest.raises(AgentError, match=why):
        check_manifest(doc)
    assert check_manifest(dict(GOOD)) == GOOD


def test_a_wait_says_why_and_when() -> None:
    why = why_no_update(
        204, {"X-OTA-Reason": "waiting_for_wave", "X-OTA-Blocked-By-Firmware": "3.0.0"}, False
    )
    assert why == "no update for now (waiting_for_wave, blocked by firmware 3.0.0)"
    assert why_no_update(304, {}, False) == "nothing new since the last manifest"
    assert why_no_update(200, {}, True) == "installed the update"
    text = Waiting("cam-7", why, 312.4, NOW).text()
    assert (
        text.startswith("cam-7: no update for now (waiting_for_wave") and "asking again in 312 s (at " in text
    )
