"""Eligibility as pure logic: cohort parser, percentage buckets, windows, firmware, precedence."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_compat import CompatMatrix
from gateway.core.bucket import bucket, in_rollout
from gateway.core.cohort import CohortSyntaxError, Everyone, parse_cohort
from gateway.core.device import DeviceRecord
from gateway.core.eligibility import decide, parse_ok
from gateway.core.manifest import parse_deployment

NOW = 1_790_000_000.0


def dep(version: str = "1.0.0", **kw: Any):  # type: ignore[no-untyped-def]
    doc = {
        "model_id": "detector",
        "version": version,
        "artifact_url": f"https://r/artifacts/detector/{version}/m.bin",
        "signature_url": f"https://r/artifacts/detector/{version}/m.bin.sig",
        "sha256": "a" * 64,
        "length": 10,
        **kw,
    }
    return parse_deployment(doc)


def device(dev_id: str = "cam-1", version: str | None = None, **attrs: str) -> DeviceRecord:
    return DeviceRecord(dev_id, attrs=attrs, model_id="detector" if version else None, model_version=version)


# -- cohort expressions -----------------------------------------------------------------------------


def test_cohort_grammar_and_matching() -> None:
    e = parse_cohort('region:eu-west AND (hw:rev2 OR hw:rev3) AND NOT line:"line 3"')
    assert e.matches({"region": "eu-west", "hw": "rev3", "line": "line 4"})
    assert not e.matches({"region": "eu-west", "hw": "rev3", "line": "line 3"})
    assert not e.matches({"region": "us", "hw": "rev2"})
    assert parse_cohort("hw:rev*").matches({"hw": "rev12"}) and not parse_cohort("hw:rev*").matches(
        {"hw": "r"}
    )
    assert parse_cohort("NOT line:3").matches({})  # an absent attribute never matches a term
    assert parse_cohort("a:1 or b:2 and c:3") == parse_cohort("a:1 OR (b:2 AND c:3)")  # AND binds tighter
    assert isinstance(parse_cohort(""), Everyone) and isinstance(parse_cohort("  *  "), Everyone)
    assert parse_cohort(r'name:"say \"hi\""').matches({"name": 'say "hi"'})


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("hw:rev2 AND", 11),
        ("(hw:rev2", 8),
        ("hw rev2", 2),
        ("hw:", 3),
        ('hw:"open', 3),
        ("hw:a)", 4),
        ("AND:x", 0),
    ],
)
def test_cohort_errors_name_the_position(text: str, position: int) -> None:
    with pytest.raises(CohortSyntaxError) as info:
        parse_cohort(text)
    assert info.value.position == position and f"position {position}" in str(info.value)


def test_cohort_bounds() -> None:
    with pytest.raises(CohortSyntaxError, match="nested deeper"):
        parse_cohort("(" * 100 + "a:1" + ")" * 100)
    with pytest.raises(CohortSyntaxError, match="longer than"):
        parse_cohort("a:1 OR " * 1000)


keys = st.sampled_from(["hw", "fw", "region", "line", "x_y.z"])
values = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
terms = st.builds(
    lambda k, val, p: (
        f"{k}:{chr(34)}{val.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}{chr(34)}{'*' if p else ''}"
    ),
    keys,
    values,
    st.booleans(),
)
exprs = st.recursive(
    terms,
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"{a} AND {b}", inner, inner),
        st.builds(lambda a, b: f"{a} OR {b}", inner, inner),
        st.builds(lambda a: f"NOT {a}", inner),
        st.builds(lambda a: f"({a})", inner),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(exprs)
def test_cohort_print_parse_round_trip(text: str) -> None:
    e = parse_cohort(text)
    assert parse_cohort(str(e)) == e


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_random_text_only_ever_raises_syntax_errors(text: str) -> None:
    try:
        parse_cohort(text).matches({"hw": "rev2"})
    except CohortSyntaxError:
        pass


# -- percentage buckets ------------------------------------------------------------------------------


def test_buckets_are_stable_uniform_and_monotone() -> None:
    assert bucket("detector@1.0.0", "cam-1") == bucket("detector@1.0.0", "cam-1")
    ids = [f"dev-{i}" for i in range(10_000)]
    share = sum(in_rollout(5, "detector@1.0.0", d) for d in ids) / len(ids)
    assert 0.04 <= share <= 0.06


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 100), st.floats(0, 100), st.text(min_size=1, max_size=20))
def test_raising_the_percentage_only_adds_devices(p1: float, p2: float, dev: str) -> None:
    lo, hi = sorted((p1, p2))
    if in_rollout(lo, "detector@2.0.0", dev):
        assert in_rollout(hi, "detector@2.0.0", dev)


# -- decisions ---------------------------------------------------------------------------------------


def test_reasons() -> None:
    assert decide([], device(fw="1.0.0"), NOW).reason == "no_deployment"
    assert decide([dep(target_cohort="hw:rev9")], device(hw="rev2"), NOW).reason == "not_in_cohort"
    assert decide([dep(rollout_percentage=0)], device(), NOW).reason == "not_in_rollout"
    assert decide([dep(start_time="2099-01-01T00:00:00Z")], device(), NOW).reason == "before_window"
    assert decide([dep(end_time="2020-01-01T00:00:00Z")], device(), NOW).reason == "after_window"
    assert decide([dep(compatibility={"min_firmware": "1.8.0"})], device(), NOW).reason == "firmware_unknown"
    old = decide([dep(compatibility={"min_firmware": "1.8.0"})], device(fw="1.6.0"), NOW)
    assert old.reason == "firmware_too_old" and old.blocked_by_firmware == "1.0.0"
    assert (
        decide([dep(compatibility={"max_firmware": "1.0.0"})], device(fw="2.0.0"), NOW).reason
        == "firmware_too_new"
    )
    assert decide([dep(target_cohort="hw:(")], device(hw="rev2"), NOW).reason == "bad_cohort"
    assert decide([dep()], device(version="1.0.0"), NOW).reason == "up_to_date"
    assert decide([dep()], device(version="1.5.0"), NOW).reason == "up_to_date"  # never a downgrade
    ok = decide([dep()], device(version="0.9.0"), NOW)
    assert ok.reason == "eligible" and ok.deployment is not None


def test_window_is_half_open_and_uses_the_gateways_now() -> None:
    d = dep(start_time="2026-09-21T00:00:00Z", end_time="2026-09-22T00:00:00Z")
    start, end = d.start_time, d.end_time
    assert start is not None and end is not None
    assert decide([d], device(), start).reason == "eligible"
    assert decide([d], device(), end).reason == "after_window"
    # A device's own clock is not an input at all: its claimed time in attributes changes nothing.
    assert decide([d], device(time="2026-09-21T12:00:00Z"), end + 10).reason == "after_window"


def test_newest_allowed_version_wins_and_firmware_first() -> None:
    deps = [
        dep("1.0.0"),
        dep("2.0.0", compatibility={"min_firmware": "1.8.0"}),
        dep("3.0.0", compatibility={"min_firmware": "2.0.0"}),
        dep("4.0.0", target_cohort="hw:rev9"),
    ]
    d = decide(deps, device(fw="1.9.0", hw="rev2", version="1.0.0"), NOW)
    assert d.deployment is not None and d.deployment.version == "2.0.0" and d.blocked_by_firmware == "3.0.0"
    d = decide(deps, device(fw="2.0.0", hw="rev2", version="1.0.0"), NOW)
    assert d.deployment is not None and d.deployment.version == "3.0.0" and d.blocked_by_firmware is None


def test_matrix_restricts_and_blocks() -> None:
    matrix = CompatMatrix.from_json(
        {"models": {"detector": {"1.0.0": ["1.0.0"], "2.0.0": ["1.0.0", "2.0.0"]}}}
    )
    d = decide([dep("1.0.0"), dep("2.0.0")], device(fw="1.5.0"), NOW, matrix)
    assert d.deployment is not None and d.deployment.version == "1.0.0" and d.blocked_by_firmware == "2.0.0"


def test_a_bad_cohort_rejects_only_that_deployment() -> None:
    assert parse_ok(dep(target_cohort="hw:(")) is not None and parse_ok(dep()) is None
    d = decide([dep("2.0.0", target_cohort="hw:("), dep("1.0.0")], device(hw="rev2"), NOW)
    assert d.deployment is not None and d.deployment.version == "1.0.0"


def test_cohorts_can_name_the_device_and_its_version() -> None:
    assert decide([dep(target_cohort="device_id:cam-1")], device("cam-1"), NOW).reason == "eligible"
    assert (
        decide([dep("2.0.0", target_cohort="model_version:1.*")], device(version="1.5.0"), NOW).reason
        == "eligible"
    )
    assert (
        decide([dep("2.0.0", target_cohort="model_version:1.*")], device(version="0.5.0"), NOW).reason
        == "not_in_cohort"
    )


def test_other_model() -> None:
    d = decide([dep()], DeviceRecord("cam-1", model_id="segmenter", model_version="1.0.0"), NOW)
    assert d.reason == "other_model"
