"""The gate panel's shadow agreement in a real headless browser (chromium), at a phone's width,
against a real gateway whose two reference agents ran a class-swapping candidate in shadow: the page
shows the agreement under its minimum, per class, and the swapped pair on top, with no Python value
on screen and nothing wider than the phone."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.agent.test_agent import HEALTH, gateway
from tests.agent.test_shadow_agent import SHADOW, SWAPS, agents, baseline_windows, gate
from tests.browser.test_dashboard import PHONE, REPRS, browser, until
from tests.conftest import Registry
from tests.gw import until as async_until

pytestmark = pytest.mark.slow  # a long system story: SLOW_TESTS=1 runs it (a .ci/run step)

__all__ = ["browser"]  # the fixture, used by name
GATE = "detector@2.0.0"


async def test_the_panel_shows_the_shadow_agreement_on_a_phone(
    browser: WebDriver, reg: Registry, tmp_path: Path
) -> None:
    reg.publish(os.urandom(50_000), version="1.0.0", health=HEALTH)
    with gateway(reg, tmp_path / "data", SHADOW) as gw:
        fleet = agents(gw, reg, tmp_path, SWAPS, 11)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(a.run(stop)) for a in fleet]
        try:
            await async_until(lambda: all("healthy" in a.events for a in fleet), timeout_s=30, what="1.0.0")
            await baseline_windows(gw, 6)
            reg.publish(os.urandom(50_000), version="2.0.0", health=HEALTH)
            for _ in range(900):
                g = await gate(gw)
                if g is not None and g["stage"] == "halted":
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("not halted in 90 s")
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        page = await asyncio.to_thread(_look, browser, f"http://{gw.operator}/")
    assert "Shadow agreement" in page and "minimum 97 %" in page
    assert "person → forklift" in page and "forklift → person" in page
    assert "per class (minimum 90 %)" in page


def _look(browser: WebDriver, url: str) -> str:
    browser.get(url)
    box = f'article[data-gate="{GATE}"] .g-agreement'
    until(lambda: "Shadow agreement" in browser.find_element(By.CSS_SELECTOR, box).text, 20, "the agreement")
    text = browser.find_element(By.CSS_SELECTOR, box).text
    body = browser.find_element(By.TAG_NAME, "body").text
    assert not REPRS.findall(body), REPRS.findall(body)[:5]
    width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1] == PHONE["width"], width
    shot = os.environ.get("DASHBOARD_SCREENSHOT")
    if shot:  # a picture of it, for a person to look at
        el = browser.find_element(By.CSS_SELECTOR, box)
        browser.execute_script("arguments[0].scrollIntoView()", el)
        browser.save_screenshot(shot)
    return str(text)
