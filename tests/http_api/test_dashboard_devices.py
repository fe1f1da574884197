"""The dashboard's device list (pure filtering and paging, then through a real gateway's operator
API with 100,000 devices) and how its page and assets are served."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.device import DeviceRecord
from gateway.http.dashboard.devices import MAX_LIMIT, DeviceQuery, device_state, select
from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import gateway_settings, running

NOW = 1_790_000_000.0


def fleet() -> list[DeviceRecord]:
    return [
        DeviceRecord("cam-01", {"hw": "rev2", "fw": "1.4"}, frozenset({"poll"}), 0, NOW - 10, "detector", "1.0.0"),
        DeviceRecord("cam-02", {"hw": "rev2"}, frozenset({"poll"}), 0, NOW - 1000, "detector", "2.0.0",
                     last_event="rolled_back"),
        DeviceRecord("cam-03", {"hw": "rev1"}, frozenset({"poll"}), 0, NOW - 90_000, "detector", "1.0.0",
                     blocked_by_firmware="2.0.0"),
        DeviceRecord("door-1", {"line": "north"}, frozenset({"mdns"}), 0, NOW - 30, gone=True),
        DeviceRecord("door-2", {}, frozenset({"poll"}), 0, NOW - 20, last_event="downloaded"),
    ]  # fmt: skip


def ids(query: dict[str, str]) -> list[str]:
    page = select(fleet(), DeviceQuery.parse(query), now=NOW, cohort_attribute="hw")
    return [d["id"] for d in page["devices"]]


@pytest.mark.parametrize(
    ("query", "want"),
    [
        ({}, ["cam-01", "door-2", "door-1", "cam-02", "cam-03"]),  # seen most lately first
        ({"version": "1.0.0"}, ["cam-01", "cam-03"]),
        ({"version": "detector@2.0.0"}, ["cam-02"]),
        ({"version": "none"}, ["door-2", "door-1"]),
        ({"cohort": "rev2"}, ["cam-01", "cam-02"]),
        ({"cohort": "(none)"}, ["door-2", "door-1"]),
        ({"state": "rolled back"}, ["cam-02"]),
        ({"state": "gone"}, ["door-1"]),
        ({"state": "updating"}, ["door-2"]),
        ({"seen": "5m"}, ["cam-01", "door-2", "door-1"]),
        ({"seen": "older"}, ["cam-03"]),
        ({"blocked": "yes"}, ["cam-03"]),
        ({"blocked": "no", "cohort": "rev1"}, []),
        ({"q": "NORTH"}, ["door-1"]),  # attribute values, any case
        ({"q": "cam", "limit": "2"}, ["cam-01", "cam-02"]),
        ({"q": "cam", "limit": "2", "offset": "2"}, ["cam-03"]),
    ],
)
def test_filters(query: dict[str, str], want: list[str]) -> None:
    assert ids(query) == want


def test_a_page_says_how_many_match_and_where_the_fleet_is() -> None:
    page = select(fleet(), DeviceQuery.parse({"cohort": "rev2"}), now=NOW, cohort_attribute="hw")
    assert (page["total"], page["known"]) == (2, 5)
    assert page["facets"]["version"] == [["1.0.0", 2], ["none", 2], ["2.0.0", 1]]
    assert ["(none)", 2] in page["facets"]["cohort"] and page["facets"]["blocked"] == 1
    row = next(d for d in select(fleet(), DeviceQuery(), now=NOW, cohort_attribute="hw")["devices"]
               if d["id"] == "cam-03")  # fmt: skip
    assert row == {
        "id": "cam-03", "model": "detector@1.0.0", "cohort": "rev1", "firmware": "–", "state": "running",
        "last_seen": "1 day 1 h ago", "last_event": "–", "blocked": "needs newer firmware for 2.0.0",
    }  # fmt: skip
    assert device_state(DeviceRecord("x")) == "polling"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ({"limit": str(MAX_LIMIT + 1)}, "limit: a whole number from 1 to 200"),
        ({"limit": "0"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "x"}, "offset"),
        ({"seen": "2w"}, "seen: 5m, 1h, 1d or older"),
        ({"state": "happy"}, "state: one of running"),
        ({"blocked": "maybe"}, "blocked: yes or no"),
        ({"sort": "id"}, "unknown parameter 'sort'"),
        ({"q": "x" * 101}, "q: at most 100 characters"),
    ],
)
def test_a_bad_parameter_is_refused_naming_it(query: dict[str, str], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        DeviceQuery.parse(query)


# -- through the real operator API -----------------------------------------------------------------


@pytest.fixture
async def gw(reg: Registry, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running(gateway_settings(reg, tmp_path / "data")) as g:
        yield g


def base(gw: Gateway) -> str:
    host, port = gw.operator_addresses[0][:2]
    return f"http://{host}:{port}"


async def test_100k_devices_are_sent_one_bounded_page_at_a_time(gw: Gateway) -> None:
    now = time.time()
    for i in range(100_000):  # the inventory as the device API would leave it
        gw.inventory.upsert(
            f"d{i:06d}", {"hw": f"rev{i % 3}", "model_version": f"1.{i % 4}.0"}, source="poll", now=now - i
        )
    async with aiohttp.ClientSession() as s:
        started = time.perf_counter()
        async with s.get(base(gw) + "/dashboard/devices", params={"cohort": "rev1", "limit": "200"}) as r:
            assert r.status == 200
            page = await r.json()
            size = len(await r.read())
        took = time.perf_counter() - started
        assert page["total"] == 33_333 and len(page["devices"]) == 200 and page["known"] == 100_000
        assert page["devices"][0]["id"] == "d000001"  # seen most lately first
        assert size < 100_000
        async with s.get(base(gw) + "/dashboard/devices", params={"limit": "100000"}) as r:
            assert r.status == 400 and "limit" in await r.text()
    print(f"\n100,000 devices: one filtered page of 200 in {took * 1000:.0f} ms ({size} B of JSON)")


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(["q", "version", "state", "seen", "blocked", "offset", "limit", "x"]),
                       st.text(max_size=12)))  # fmt: skip
def test_any_query_is_a_page_or_a_400_never_a_500(query: dict[str, str]) -> None:
    try:
        page = select(fleet(), DeviceQuery.parse(query), now=NOW, cohort_attribute="hw")
    except ValueError as exc:
        assert str(exc)
    else:
        assert len(page["devices"]) <= MAX_LIMIT


async def test_the_page_and_its_assets_are_served_from_memory_with_strict_headers(gw: Gateway) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(base(gw) + "/") as r:
            assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
            csp = r.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert r.headers["Content-Encoding"] == "gzip"
            assert "{{CSRF}}" not in await r.text()
        async with s.get(base(gw) + "/dashboard/app.js") as r:
            etag = r.headers["ETag"]
            assert r.status == 200 and "text/javascript" in r.headers["Content-Type"]
        async with s.get(base(gw) + "/dashboard/app.js", headers={"If-None-Match": etag}) as r:
            assert r.status == 304
        async with s.get(base(gw) + "/dashboard/state") as r:
            assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
            doc = await r.json()
        assert doc["site"] == "test-site" and doc["gates"] == []
        assert "No signed index accepted yet: devices are offered nothing" in doc["alerts"]
