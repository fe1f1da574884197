"""The dashboard in a real headless browser (Debian's chromium through chromedriver and selenium),
against a real ``ota-gateway serve`` process, at a phone's width (390 px).

It loads the page once and never reloads it; then, from outside, devices poll over HTTP and post
metrics (one-second telemetry windows) and the page must show them by itself: the devices appear
in the list, a health chart of the gate gains a point. Then the operator presses *hold* on the gate,
confirms it with a reason, and the gate is held on the page and through the operator API. On the
way it checks what a person would see: no horizontal scroll, no Python value (``None``,
``False``, epoch seconds, byte counts) anywhere on screen. It prints the page weight (bytes
transferred for the page and its assets, and for one state update) and the time to first paint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Registry
from tests.peers import free_port, gateway_process, serve_args, stop, wait_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
GATE = "detector@2.0.0"
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
ENV = {
    "OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.3",
    "OTA_GATEWAY_TELEMETRY__WINDOW_S": "1.0",
    "OTA_GATEWAY_UPLINK__REPORT_INTERVAL_S": "1.0",
    "OTA_GATEWAY_GATES__FIRST_VERSION": "open",  # 1.0.0 is the stable baseline; 2.0.0 is gated
}
REPRS = re.compile(r"\b(None|True|False)\b|\b1[6-9]\d{8}(\.\d+)?\b|\b\d{7,} bytes\b")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extras")
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(
        "chromium and chromium-driver are not installed (.ci/run installs them)", allow_module_level=True
    )

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

pytestmark = pytest.mark.slow  # the browser test: SLOW_TESTS=1 runs it (a .ci/run step)


def until(cond: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = cond()
        except Exception:  # the page is being redrawn under us: ask again
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)  # polling a condition with a deadline


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="chromium-test-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def gateway(reg: Registry, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real gateway process with detector 1.0.0 (stable) and 2.0.0 (gated) mirrored."""
    reg.publish(os.urandom(30_000), version="1.0.0")
    http_port = free_port()
    args = serve_args(tmp_path / "data", str(reg.root), http_port, site=reg.site, trusted_key=reg.public_key)
    operator = args[args.index("--operator") + 1]
    proc = gateway_process(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(http_port, 20)
        wait_port(int(operator.rsplit(":", 1)[1]), 20)
        op = f"http://{operator}"
        mirrored = lambda: [d["mirrored"] for d in json.loads(http("GET", f"{op}/status")[1])["deployments"]]  # noqa: E731
        until(lambda: mirrored() == [True], 30, "1.0.0 mirrored")  # so 2.0.0 has a baseline
        reg.publish(os.urandom(30_000), version="2.0.0")
        until(lambda: GATE in http("GET", f"{op}/gates")[1].decode(), 30, "the gate of 2.0.0")
        yield f"http://127.0.0.1:{http_port}", op
    finally:
        stop(proc)


def poll(device_api: str, device: str, version: str) -> None:
    q = f"model_id=detector&model_version={version}&hw=rev2&fw=1.4.0"
    status, _ = http("GET", f"{device_api}/devices/{device}/updates?{q}")
    assert status in (200, 204), status


def metrics(device_api: str, device: str, version: str, latency_ms: float) -> None:
    body = {"device_id": device, "timestamp": time.time(), "model_id": "detector",
            "model_version": version, "avg_latency_ms": latency_ms, "num_inferences": 100,
            "num_errors": 1, "error_rate": 0.01, "cpu_percent": 35.0, "ram_percent": 40.0,
            "uptime_seconds": 100, "temperature_c": 51.5}  # fmt: skip
    status, text = http("POST", f"{device_api}/devices/{device}/metrics", body)
    assert status in (200, 204), text


def points(driver: WebDriver) -> int:
    svg = driver.find_element(By.CSS_SELECTOR, f'article[data-gate="{GATE}"] svg.chart')
    return int(svg.get_attribute("data-points") or 0)


def weights(driver: WebDriver) -> dict[str, Any]:
    """Bytes over the wire (transferSize) for the page, its script and style, and state updates."""
    return driver.execute_script(  # type: ignore[no-any-return]
        """
        const nav = performance.getEntriesByType('navigation')[0];
        const res = performance.getEntriesByType('resource');
        const assets = res.filter((r) => /app\\.(js|css)$/.test(r.name));
        const states = res.filter((r) => /dashboard\\/state/.test(r.name));
        const paint = Object.fromEntries(performance.getEntriesByType('paint').map((p) => [p.name, p.startTime]));
        return {
          page: nav.transferSize, page_body: nav.decodedBodySize,
          assets: assets.reduce((n, r) => n + r.transferSize, 0),
          assets_body: assets.reduce((n, r) => n + r.decodedBodySize, 0),
          state: states.length ? states[states.length - 1].transferSize : 0,
          state_body: states.length ? states[states.length - 1].decodedBodySize : 0,
          first_paint_ms: paint['first-paint'], first_contentful_paint_ms: paint['first-contentful-paint'],
          dom_content_loaded_ms: nav.domContentLoadedEventEnd,
        };
        """
    )


def test_the_dashboard_live_on_a_phone(browser: WebDriver, gateway: tuple[str, str]) -> None:
    device_api, op = gateway
    browser.get(op + "/")
    until(lambda: browser.find_element(By.ID, "live").text == "live", 20, "the first state update")
    until(lambda: browser.find_elements(By.CSS_SELECTOR, f'article[data-gate="{GATE}"]'), 20, "the gate")
    first = weights(browser)
    navigations = browser.execute_script("return performance.getEntriesByType('navigation').length")

    # devices appear as they poll (the list refreshes itself)
    for i in range(4):
        poll(device_api, f"cam-{i:02d}", "1.0.0")
    rows = lambda: browser.find_elements(By.CSS_SELECTOR, "#device-rows tr[data-device]")  # noqa: E731
    until(lambda: len(rows()) == 4, 20, "four devices in the list")
    assert "cam-03" in browser.find_element(By.ID, "device-rows").text

    # a chart gains a point: metrics on both versions, a one-second window closes
    before = points(browser)
    for i in range(4):
        metrics(device_api, f"cam-{i:02d}", "2.0.0" if i == 0 else "1.0.0", 40.0 + i)
    until(lambda: points(browser) > before, 30, "a new point on the gate's latency chart")

    # hold, with the confirmation accepted
    hold = browser.find_element(By.CSS_SELECTOR, f'button[data-gate="{GATE}"][data-action="hold"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", hold)
    hold.click()
    until(lambda: browser.find_element(By.ID, "confirm").get_attribute("open") is not None, 5, "the dialog")
    browser.find_element(By.ID, "confirm-who").send_keys("ann")
    browser.find_element(By.ID, "confirm-why").send_keys("checking the cameras on line 2")
    browser.find_element(By.ID, "confirm-ok").click()
    gate = lambda: browser.find_element(By.CSS_SELECTOR, f'article[data-gate="{GATE}"]')  # noqa: E731
    until(lambda: gate().get_attribute("data-held") == "yes", 20, "the gate held on the page")
    assert "HELD by ann" in gate().text
    until(lambda: "checking the cameras on line 2" in gate().text, 10, "the hold in the timeline")
    api = json.loads(http("GET", f"{op}/gates")[1])
    held = next(g for g in api["gates"] if g["deployment"] == GATE)
    assert held["held_by"] == "operator:ann"

    # what a person sees: nothing wider than the phone, no Python values, never reloaded
    width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1] == PHONE["width"], width
    text = browser.find_element(By.TAG_NAME, "body").text
    assert not REPRS.findall(text), REPRS.findall(text)[:5]
    assert browser.execute_script("return performance.getEntriesByType('navigation').length") == navigations

    w = weights(browser)
    print(
        f"\ndashboard page weight: page {first['page']} B + assets {first['assets']} B = "
        f"{first['page'] + first['assets']} B transferred ({first['page_body'] + first['assets_body']} B "
        f"uncompressed); one state update {w['state']} B ({w['state_body']} B uncompressed, one gate, "
        f"charts inline)\ndashboard first paint {first['first_paint_ms']:.0f} ms, first contentful "
        f"paint {first['first_contentful_paint_ms']:.0f} ms, DOMContentLoaded {first['dom_content_loaded_ms']:.0f} ms"
    )
    shot = os.environ.get("DASHBOARD_SCREENSHOT")
    if shot:  # a picture of it, for a person to look at
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**PHONE, "height": 3000})
        browser.save_screenshot(shot)
