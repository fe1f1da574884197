"""Fuzz fixtures: a per-session count of the cases each parser was fed, printed at the end."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.fuzz.profile import CASES, EXAMPLES


@pytest.fixture(scope="session")
def cases(pytestconfig: pytest.Config) -> Counter[str]:
    """``cases[parser] += 1`` once per generated input (a session fixture: Hypothesis reuses it);
    ``cases[parser + " -> outcome"]`` counts outcomes (accepted, 4xx, ...), not added to the total."""
    return pytestconfig.stash.setdefault(CASES, Counter())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    counted = config.stash.get(CASES, None)
    if not counted:
        return
    terminalreporter.section("fuzz cases run")
    for name, n in sorted(counted.items()):
        terminalreporter.write_line(f"{name:<40} {n:>8}")
    total = sum(n for name, n in counted.items() if " -> " not in name)
    terminalreporter.write_line(f"{'total (inputs fed)':<40} {total:>8}  (FUZZ_EXAMPLES={EXAMPLES})")
