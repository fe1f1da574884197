"""The DDI documents and bodies as pure values: action ids, sleep, feedback and configData parsing.

The feedback bodies are the ones SWUpdate 2022.12's suricatta sends (``server_hawkbit.c``), byte
for byte in shape: a numeric ``id`` in deployment feedback, ``progress`` in ``result``, and the
``time`` as ``%Y%m%dT%H%M%S``."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from gateway.core import ddi
from gateway.core.errors import FormatError

SHA = "ab" * 32


def suricatta_feedback(action: int, finished: str, execution: str, *details: str) -> dict[str, Any]:
    return {
        "id": action,
        "time": "20261206T012551",
        "status": {
            "result": {"progress": {"cnt": 0, "of": 1}, "finished": finished},
            "execution": execution,
            "details": list(details),
        },
    }


def test_action_ids_are_stable_in_range_and_differ_by_what_they_offer() -> None:
    rng = random.Random(28)
    seen: set[int] = set()
    for _ in range(2000):
        version = f"{rng.randrange(100)}.{rng.randrange(100)}.{rng.randrange(1000)}"
        sha = f"{rng.getrandbits(256):064x}"
        a = ddi.action_id("m", version, sha, rollback=False)
        assert a == ddi.action_id("m", version, sha, rollback=False)
        assert 1 <= a <= ddi.ACTION_ID_MAX
        assert a != ddi.action_id("m", version, sha, rollback=True)
        seen.add(a)
    assert len(seen) == 2000
    assert ddi.parse_action_id(str(a)) == a


@pytest.mark.parametrize("text", ["0", "-1", "2147483648", "1e3", "", "12a", "99999999999", "١٢"])
def test_bad_action_ids_are_refused(text: str) -> None:
    with pytest.raises(FormatError):
        ddi.parse_action_id(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.2, "00:00:01"), (5, "00:00:05"), (300, "00:05:00"), (3725, "01:02:05"), (10**9, "23:59:59")],
)
def test_sleep_is_hh_mm_ss_below_a_day(seconds: float, text: str) -> None:
    assert ddi.sleep_text(seconds) == text


def test_a_cancellation_goes_before_any_offer_and_config_data_is_asked_for() -> None:
    c = "http://gw/DEFAULT/controller/v1/dev1"
    doc = ddi.base_document(c, 300, deployment=7, cancel=5, config_data=True)
    assert doc["config"]["polling"]["sleep"] == "00:05:00"
    assert doc["_links"] == {
        "cancelAction": {"href": f"{c}/cancelAction/5"},
        "configData": {"href": f"{c}/configData"},
    }
    doc = ddi.base_document(c, 300, deployment=7, cancel=None, config_data=False)
    assert doc["_links"] == {"deploymentBase": {"href": f"{c}/deploymentBase/7"}}
    assert "_links" not in ddi.base_document(c, 300, deployment=None, cancel=None, config_data=False)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_deployment_names_its_links_for_the_scheme_and_carries_every_hash(scheme: str) -> None:
    art = ddi.Artifact(
        "u.swu", 10, SHA, "1" * 40, "5" * 32, f"{scheme}://gw/artifacts/m/2/u.swu", f"{scheme}://x.MD5SUM"
    )
    doc = json.loads(json.dumps(ddi.deployment_document(9, "m", "2", art)))
    assert doc["id"] == "9" and doc["deployment"]["update"] == "forced"
    (chunk,) = doc["deployment"]["chunks"]
    assert (chunk["name"], chunk["version"]) == ("m", "2")
    (a,) = chunk["artifacts"]
    assert a["hashes"] == {"sha1": "1" * 40, "md5": "5" * 32, "sha256": SHA} and a["size"] == 10
    key = "download" if scheme == "https" else "download-http"
    assert a["_links"][key]["href"] == art.url and len(a["_links"]) == 2


@pytest.mark.parametrize(
    ("finished", "execution", "event", "closed"),
    [
        ("none", "proceeding", "downloaded", False),
        ("none", "scheduled", "downloaded", False),
        ("none", "resumed", "downloaded", False),
        ("none", "download", "downloaded", False),
        ("none", "downloaded", "downloaded", False),
        ("success", "closed", "healthy", True),
        ("failure", "closed", "failed", True),
        ("failure", "proceeding", "failed", False),
        ("none", "canceled", None, True),
        ("none", "rejected", None, True),
    ],
)
def test_feedback_means_the_native_events(
    finished: str, execution: str, event: str | None, closed: bool
) -> None:
    fb = ddi.parse_feedback(suricatta_feedback(42, finished, execution, "Installed Chunk."), 42)
    assert ddi.feedback_event(fb) == event
    assert fb.closed is closed
    assert fb.reason() == "Installed Chunk."


def test_suricatta_cancel_feedback_and_a_string_id_parse() -> None:
    body = {"id": "42", "time": "x", "status": {"result": {"finished": "success"}, "execution": "closed",
            "details": ["cancellation acknowledged."]}}  # fmt: skip
    fb = ddi.parse_feedback(body, 42)
    assert fb.closed and fb.action_id == 42


HOSTILE: list[Any] = [
    [],
    "closed",
    None,
    {},
    {"status": "closed"},
    {"id": 41, "status": {"execution": "closed", "result": {"finished": "success"}}},  # not this URL's action
    {"id": True, "status": {"execution": "closed", "result": {"finished": "success"}}},
    {"id": [42], "status": {"execution": "closed", "result": {"finished": "success"}}},
    {"status": {"execution": "exploded", "result": {"finished": "success"}}},
    {"status": {"execution": ["closed"], "result": {"finished": "success"}}},
    {"status": {"execution": "closed", "result": {"finished": "maybe"}}},
    {"status": {"execution": "closed", "result": "success"}},
    {"status": {"execution": "closed", "result": {"finished": "none"}}},  # closed, but how?
    {"status": {"execution": "closed", "result": {"finished": "failure"}, "details": "x"}},
    {"status": {"execution": "closed", "result": {"finished": "failure"}, "details": [1, 2]}},
    {"status": {"execution": "closed", "result": {"finished": "failure"}, "details": ["x"] * 65}},
    {"status": {"execution": "closed", "result": {"finished": "failure"}, "details": ["x" * 5000]}},
]


@pytest.mark.parametrize("body", HOSTILE)
def test_hostile_feedback_is_refused(body: Any) -> None:
    with pytest.raises(FormatError):
        ddi.parse_feedback(body, 42)


def test_config_data_is_the_devices_attributes_bounded_as_a_polls() -> None:
    body = {"id": "", "time": "20261206T012551", "status": {"result": {"finished": "success"}, "execution": "closed"},
            "data": {"hw": "rev2", "fw": "3.1.0", "model_id": "cam"}}  # fmt: skip
    assert ddi.parse_config_data(body) == {"hw": "rev2", "fw": "3.1.0", "model_id": "cam"}
    for bad in (
        {"data": []},
        {"data": {"hw": 2}},
        {"data": {"1hw": "x"}},
        {"data": {"hw": "x" * 200}},
        {"data": {"hw": "a\nb"}},
        {"data": {f"k{i}": "v" for i in range(40)}},
        {"data": {"model_version": "../1"}},
        {"data": {"hw": "x"}, "mode": "explode"},
        ["data"],
    ):
        with pytest.raises(FormatError):
            ddi.parse_config_data(bad)


def test_a_feedbacks_reason_is_one_bounded_printable_line() -> None:
    body = suricatta_feedback(
        7, "failure", "closed", "ERROR : x\nFAKE LOG LINE\r", "", "\x1b[31mred", "y" * 3000
    )
    reason = ddi.parse_feedback(body, 7).reason()
    assert reason is not None and reason.isprintable() and len(reason) == ddi.MAX_REASON_CHARS
    assert reason.startswith("ERROR : x FAKE LOG LINE ; ")
    assert ddi.parse_feedback(suricatta_feedback(7, "none", "proceeding", " ", ""), 7).reason() is None
