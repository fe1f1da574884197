"""How hard the fuzz tests try, chosen by the environment, and the count of cases they ran.

The default run stays modest (``FUZZ_EXAMPLES`` unset: 200 examples per pure parser, a quarter of
that per server test), so the whole suite keeps its time budget. A longer run, for a CI step::

    FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/fuzz -q

The settings are applied to the fuzz tests only (never loaded as the global Hypothesis profile), so
other property tests in the suite keep their own budgets. No example database is written: a
failure prints its reproducing example, which goes into the test as an ``@example``.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
SERVER_EXAMPLES = max(20, EXAMPLES // 4)

_COMMON = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}
FUZZ = settings(max_examples=EXAMPLES, **_COMMON)  # type: ignore[arg-type]
FUZZ_SERVER = settings(max_examples=SERVER_EXAMPLES, **_COMMON)  # type: ignore[arg-type]

CASES = pytest.StashKey[Counter[str]]()
