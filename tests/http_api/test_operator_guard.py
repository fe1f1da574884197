"""The operator API against cross-site requests and DNS rebinding, through real HTTP.

The attack from issue 11: a web page in a browser on the box posts ``text/plain`` JSON with a
foreign ``Origin`` to the loopback operator API and aborts a rollout for good. It must get 403 and
change nothing; curl and the ``ota-gateway`` CLI (no Origin) must keep working."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import cli
from gateway.http.operator import refusal
from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import gateway_settings, running, until

V1, V2 = os.urandom(20_000), os.urandom(20_000)
GATE = "detector@2.0.0"
TOKEN = "the-csrf-token"
NAMES = frozenset({"gw-box", "gw-box.local"})


# -- the pure decision -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers", "body", "status"),
    [
        ("GET", {"Host": "127.0.0.1:8081"}, False, None),
        ("GET", {"Host": "evil.example:8081"}, False, 403),  # DNS rebinding, reads too
        ("GET", {"Host": "localhost:8081"}, False, None),
        ("GET", {"Host": "gw-box.local:8081"}, False, None),
        ("GET", {"Host": "[::1]:8081"}, False, None),
        ("GET", {}, False, None),  # HTTP/1.0 without Host: not a browser
        # the issue's attack
        (
            "POST",
            {"Host": "127.0.0.1:8081", "Origin": "http://evil.example", "Content-Type": "text/plain"},
            True,
            403,
        ),
        ("POST", {"Host": "127.0.0.1:8081", "Origin": "null", "Content-Type": "application/json"}, True, 403),
        (
            "POST",
            {
                "Host": "127.0.0.1:8081",
                "Referer": "http://evil.example/x",
                "Content-Type": "application/json",
            },
            True,
            403,
        ),
        (
            "POST",
            {"Host": "127.0.0.1:8081", "Origin": "http://127.0.0.1:9999", "Content-Type": "application/json"},
            True,
            403,
        ),
        (
            "POST",
            {"Host": "127.0.0.1:8081", "Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"},
            True,
            403,
        ),
        # same origin, but not from our dashboard page (no token): still refused
        (
            "POST",
            {"Host": "127.0.0.1:8081", "Origin": "http://127.0.0.1:8081", "Content-Type": "application/json"},
            True,
            403,
        ),
        (
            "POST",
            {
                "Host": "127.0.0.1:8081",
                "Origin": "http://127.0.0.1:8081",
                "Content-Type": "application/json",
                "X-OTA-CSRF": "nope",
            },
            True,
            403,
        ),
        (
            "POST",
            {
                "Host": "127.0.0.1:8081",
                "Origin": "http://127.0.0.1:8081",
                "Content-Type": "application/json",
                "X-OTA-CSRF": TOKEN,
            },
            True,
            None,
        ),
        (
            "POST",
            {
                "Host": "127.0.0.1:8081",
                "Referer": "http://127.0.0.1:8081/",
                "Content-Type": "application/json",
                "X-OTA-CSRF": TOKEN,
            },
            True,
            None,
        ),
        # curl / the CLI: no Origin, JSON or no body at all
        ("POST", {"Host": "127.0.0.1:8081", "Content-Type": "application/json"}, True, None),
        ("POST", {"Host": "127.0.0.1:8081"}, False, None),
        ("POST", {"Host": "127.0.0.1:8081", "Content-Type": "text/plain"}, True, 415),
        ("POST", {"Host": "127.0.0.1:8081", "Content-Type": "application/x-www-form-urlencoded"}, False, 415),
        ("POST", {"Host": "127.0.0.1:8081"}, True, 415),
        ("POST", {"Host": "evil.example:8081", "Content-Type": "application/json"}, True, 403),
    ],
)
def test_refusal(method: str, headers: dict[str, str], body: bool, status: int | None) -> None:
    got = refusal(method, headers, has_body=body, names=NAMES, csrf_token=TOKEN)
    assert (got[0] if got else None) == status, got


HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=40
) | st.sampled_from(
    [
        "http://[",
        "http://[::1",
        "null",
        "http://127.0.0.1:8081",
        "[::1]:8081",
        ":",
        "http://a@b/",
        "https://x:99999",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["GET", "POST", "DELETE", "PATCH"]),
    st.dictionaries(
        st.sampled_from(["Host", "Origin", "Referer", "Content-Type", "Sec-Fetch-Site", "X-OTA-CSRF"]),
        HEADER_TEXT,
    ),
    st.booleans(),
)
def test_refusal_never_raises_and_never_lets_a_foreign_browser_post_through(
    method: str, headers: dict[str, str], body: bool
) -> None:
    got = refusal(method, headers, has_body=body, names=NAMES, csrf_token=TOKEN)
    assert got is None or got[0] in (403, 415)
    if got is None and method != "GET" and ("Origin" in headers or "Referer" in headers):
        assert headers.get("X-OTA-CSRF") == TOKEN


# -- a real gateway with a real gate -----------------------------------------------------------------


@pytest.fixture
async def gw(reg: Registry, tmp_path: Path) -> AsyncIterator[Gateway]:
    reg.publish(V1, version="1.0.0")
    async with running(gateway_settings(reg, tmp_path / "data")) as g:
        await until(lambda: g.store.is_verified(hashlib.sha256(V1).hexdigest()), what="v1 mirrored")
        reg.publish(V2, version="2.0.0")
        await until(lambda: g.store.is_verified(hashlib.sha256(V2).hexdigest()), what="v2 mirrored")
        await g.site_loop.step_gates(g.clock())  # as the report loop would, a few seconds later
        assert GATE in g.gates.gates
        yield g


def operator_base(gw: Gateway) -> str:
    host, port = gw.operator_addresses[0][:2]
    return f"{host}:{port}"


async def curl(*argv: str) -> tuple[int, str]:
    """The real curl, as in the issue: ``-w`` prints the status after the body."""
    curl_bin = shutil.which("curl")
    if curl_bin is None:
        pytest.fail("curl is not installed")
    proc = await asyncio.create_subprocess_exec(
        curl_bin, "-s", "-w", "\n%{http_code}", *argv, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    body, _, code = out.decode().rpartition("\n")
    return int(code), body


def gate_state(gw: Gateway) -> tuple[object, ...]:
    g = gw.gates.gates[GATE]
    controls = [e for e in gw.gates.store.audit() if "operator:" in json.dumps(e)]
    return g.stage, g.held_by, controls


async def test_the_issue_s_csrf_abort_is_refused_and_changes_nothing(gw: Gateway) -> None:
    before = gate_state(gw)
    status, body = await curl(
        "-X", "POST", "-H", "Origin: http://evil.example", "-H", "Content-Type: text/plain",
        "--data", '{"who":"x","why":"y"}', f"{operator_base(gw)}/gates/{GATE}/abort",
    )  # fmt: skip
    assert status == 403 and "cross-origin" in body
    await gw.site_loop.step_gates(gw.clock())
    assert gate_state(gw) == before and gw.gates.gates[GATE].stage != "aborted"
    assert gw.stats["operator.refused_403"] == 1
    # The same without a content type a browser can send cross-site without a preflight: 415.
    status, body = await curl(
        "-X", "POST", "-H", "Content-Type: text/plain", "--data", '{"who":"x","why":"y"}',
        f"{operator_base(gw)}/gates/{GATE}/abort",
    )  # fmt: skip
    assert status == 415 and "application/json" in body
    assert gate_state(gw) == before


async def test_dns_rebinding_host_is_refused_for_reads_and_writes(gw: Gateway) -> None:
    base = operator_base(gw)
    status, body = await curl("-H", "Host: evil.example", f"{base}/status")
    assert status == 403 and "rebinding" in body
    status, _ = await curl(
        "-X", "POST", "-H", "Host: evil.example", "-H", "Content-Type: application/json",
        "--data", '{"who":"x","why":"y"}', f"{base}/gates/{GATE}/hold",
    )  # fmt: skip
    assert status == 403 and gw.gates.gates[GATE].held_by is None
    status, _ = await curl(f"{base}/status")
    assert status == 200


async def test_curl_without_origin_and_the_cli_still_work(
    gw: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = operator_base(gw)
    status, _ = await curl(
        "-X", "POST", "-H", "Content-Type: application/json", "--data", '{"who":"ann","why":"checking"}',
        f"{base}/gates/{GATE}/hold",
    )  # fmt: skip
    assert status == 200
    await until(lambda: gw.gates.gates[GATE].held_by, what="held")
    config = tmp_path / "gw.toml"
    config.write_text(f'data_dir = "{gw.settings.data_dir}"\n[operator]\nlisten = "{base}"\n')
    code = await asyncio.to_thread(
        cli.main, ["gate", "release", GATE, "--why", "looks fine", "--config", str(config)]
    )
    capsys.readouterr()
    assert code == 0
    await until(lambda: gw.gates.gates[GATE].held_by is None, what="released")


async def test_the_dashboard_s_own_buttons_work_same_origin_with_its_token(gw: Gateway) -> None:
    base = "http://" + operator_base(gw)
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/") as r:
            page = await r.text()
        m = re.search(r'<meta name="ota-csrf" content="([A-Za-z0-9_\-]+)">', page)
        async with s.get(base + "/dashboard/state") as r:
            shown = [g["deployment"] for g in (await r.json())["gates"] if "hold" in g["controls"]]
        assert m is not None and GATE in shown
        body = json.dumps({"who": "dashboard", "why": "from the page"})
        headers = {"Origin": base, "Content-Type": "application/json"}
        async with s.post(f"{base}/gates/{GATE}/hold", data=body, headers=headers) as r:
            assert r.status == 403 and "X-OTA-CSRF" in await r.text()  # same origin, no token
        async with s.post(
            f"{base}/gates/{GATE}/hold", data=body, headers={**headers, "X-OTA-CSRF": m[1]}
        ) as r:
            assert r.status == 200
    assert gw.gates.gates[GATE].held_by is not None or gw.gates.gates[GATE].stage == "held"


async def test_with_a_token_off_loopback_the_origin_and_host_rules_still_apply(
    reg: Registry, tmp_path: Path
) -> None:
    reg.publish(V1, version="1.0.0")
    settings = gateway_settings(
        reg, tmp_path / "data", operator={"listen": "127.0.0.1:0", "token": "op-token-1"}
    )
    async with running(settings) as gw:
        base = operator_base(gw)
        auth = ("-H", "Authorization: Bearer op-token-1")
        status, _ = await curl(*auth, "-X", "POST", "-H", "Origin: http://evil.example",
                               "-H", "Content-Type: application/json", f"{base}/cache/prune")  # fmt: skip
        assert status == 403
        status, _ = await curl(*auth, "-H", "Host: evil.example", f"{base}/status")
        assert status == 403
        status, _ = await curl(
            *auth, "-X", "POST", "-H", "Content-Type: application/json", f"{base}/cache/prune"
        )
        assert status == 200


async def test_deeply_nested_operator_bodies_are_400(gw: Gateway) -> None:
    status, body = await curl(
        "-X", "POST", "-H", "Content-Type: application/json", "--data", "[" * 60_000,  # under the 64 KiB body cap, far past the recursion limit
        f"{operator_base(gw)}/gates/{GATE}/hold",
    )  # fmt: skip
    assert status == 400 and "deeper" in body
