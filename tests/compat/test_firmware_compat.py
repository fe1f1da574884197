"""firmware_compat: version order (a total order), ranges, the matrix file, "update firmware first"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_compat import (
    CompatMatrix,
    FirmwareRange,
    MatrixError,
    Offer,
    VersionError,
    choose,
    parse_version,
)
from gateway.service.settings import load_matrix

ROOT = Path(__file__).resolve().parents[2]


def v(text: str):  # type: ignore[no-untyped-def]
    return parse_version(text)


def test_forms_and_order() -> None:
    assert v("fw_1.8.0") == v("1.8.0") == v("1.8") == v("v1.8.0") == v("1.8.0+build.7")
    assert v("model-3.0.0").prefix == "model-"
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
               "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.2.0", "1.10.0", "2.0.0"]  # fmt: skip
    parsed = [v(t) for t in ordered]
    assert sorted(reversed(parsed)) == parsed  # SemVer 2.0.0 section 11's own example, and more
    for bad in ("", "1..0", "1.0.0-", "01x", "1.0.0-01", "fw_", "1.2.3.4.5", "x" * 200, "１.０.０"):
        with pytest.raises(VersionError):
            parse_version(bad)


versions = st.builds(
    lambda nums, pre, prefix: prefix + ".".join(map(str, nums)) + (("-" + ".".join(pre)) if pre else ""),
    st.lists(st.integers(0, 30), min_size=1, max_size=3),
    st.lists(st.sampled_from(["rc", "alpha", "beta", "1", "2", "10", "x-y"]), max_size=3),
    st.sampled_from(["", "fw_", "v", "model-"]),
)


@settings(max_examples=300, deadline=None)
@given(versions, versions, versions)
def test_version_order_is_total(a: str, b: str, c: str) -> None:
    x, y, z = v(a), v(b), v(c)
    assert (x < y) + (x == y) + (x > y) == 1  # exactly one holds
    if x <= y and y <= x:
        assert x == y and hash(x) == hash(y)  # antisymmetric
    if x <= y and y <= z:
        assert x <= z  # transitive


def test_ranges_are_inclusive() -> None:
    r = FirmwareRange.parse("1.8.0", "2.9.9")
    assert r.contains(v("1.8.0")) and r.contains(v("2.9.9")) and r.contains(v("2.9.9-rc.1"))
    assert not r.contains(v("1.8.0-rc.1")) and not r.contains(v("3.0.0"))
    assert r.too_old(v("1.7.9")) and r.too_new(v("3.0.0"))
    assert FirmwareRange.parse(None, None).contains(v("0.0.1"))


def test_matrix_example_file_and_nearest_lower_row() -> None:
    m = load_matrix(ROOT / "config" / "compat_matrix.example.json")
    assert m.supported("detector", v("1.9.3"), v("2.0.0"))  # uses the fw_1.8.0 row
    assert not m.supported("detector", v("1.7.0"), v("2.0.0"))
    assert not m.supported("detector", v("1.5.0"), v("1.0.0"))  # below every row
    assert m.supported("other-model", v("0.1.0"), v("9.0.0"))  # not in the matrix: not restricted


def test_matrix_errors_name_the_entry(tmp_path: Path) -> None:
    for doc, expected in (
        ({"models": {"detector": {"fw_1": "1.0.0"}}}, "models.detector.fw_1"),
        ({"models": {"detector": {"garbage": ["1.0.0"]}}}, "models.detector.garbage"),
        ({"nothing": 1}, "models:"),
    ):
        p = tmp_path / "m.json"
        p.write_text(json.dumps(doc))
        with pytest.raises(MatrixError, match=expected):
            load_matrix(p)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(MatrixError, match="not valid JSON"):
        load_matrix(tmp_path / "bad.json")


def test_update_firmware_first() -> None:
    offers = [
        Offer(v("1.0.0"), FirmwareRange.parse("1.0.0", None), "m1"),
        Offer(v("2.0.0"), FirmwareRange.parse("1.8.0", None), "m2"),
        Offer(v("3.0.0"), FirmwareRange.parse("2.0.0", None), "m3"),
    ]
    c = choose(offers, v("1.9.0"))
    assert (
        c.chosen is not None
        and c.chosen.item == "m2"
        and c.blocked_by is not None
        and c.blocked_by.item == "m3"
    )
    c = choose(offers, v("2.1.0"))
    assert c.chosen is not None and c.chosen.item == "m3" and c.blocked_by is None
    c = choose(offers, v("0.9.0"))
    assert c.chosen is None and c.blocked_by is not None and c.blocked_by.item == "m3" and not c.too_new
    c = choose([Offer(v("1.0.0"), FirmwareRange.parse(None, "1.5.0"), "old")], v("2.0.0"))
    assert c.chosen is None and c.too_new
    matrix = CompatMatrix.from_json({"models": {"det": {"1.0.0": ["1.0.0"], "2.0.0": ["1.0.0", "2.0.0"]}}})
    free = [Offer(v("1.0.0"), FirmwareRange(), "a"), Offer(v("2.0.0"), FirmwareRange(), "b")]
    c = choose(free, v("1.5.0"), model_id="det", matrix=matrix)
    assert (
        c.chosen is not None
        and c.chosen.item == "a"
        and c.blocked_by is not None
        and c.blocked_by.item == "b"
    )
