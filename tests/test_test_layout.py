"""The test tree itself: no package shadows the standard library, and the reference agent runs.

``tests/http/`` once shadowed the standard library's ``http``, so running ``python tests/agent.py``
(the script's folder comes first on ``sys.path``) died in aiohttp's ``from http import HTTPStatus``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent


def test_no_folder_or_module_in_tests_shadows_the_standard_library() -> None:
    names = {p.name for p in TESTS.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    names |= {p.stem for p in TESTS.glob("*.py")}
    assert sorted(names & sys.stdlib_module_names) == []


def test_the_reference_agent_runs_as_a_script() -> None:
    done = subprocess.run(
        [sys.executable, str(TESTS / "agent.py")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
