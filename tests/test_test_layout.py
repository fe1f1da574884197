"""The test tree itself: it mirrors ``gateway/``, no package shadows the standard library, and the
reference agent runs.

``tests/http/`` once shadowed the standard library's ``http``, so running ``python tests/reference_agent.py``
(the script's folder comes first on ``sys.path``) died in aiohttp's ``from http import HTTPStatus``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent
GATEWAY = TESTS.parent / "gateway"
# folders named otherwise than the room they test (``tests/http`` would shadow the stdlib's ``http``)
ALIASES = {"http_api": "http", "compat": "firmware_compat"}
# folders of tests that cross rooms: the benches, the browser, fuzzing, whole-system runs, the device
# side end to end against a real gateway, and the install (``deploy/``)
ACROSS = {"bench", "browser", "fuzz", "system", "devices", "deploy"}
AT_THE_TOP = {"test_house.py", "test_lint.py", "test_test_layout.py"}  # tests of the tree itself
STARTS_PEERS = {"tests.gw", "tests.peers", "tests.conftest", "subprocess", "aiohttp"}


def rooms() -> set[str]:
    return {p.name for p in GATEWAY.iterdir() if (p / "__init__.py").exists()} | {"firmware_compat"}


def test_every_folder_of_tests_is_a_room_of_the_gateway_or_says_why_not() -> None:
    folders = {p.name for p in TESTS.iterdir() if (p / "__init__.py").exists()}
    stray = sorted(f for f in folders if ALIASES.get(f, f) not in rooms() and f not in ACROSS)
    assert stray == [], f"a folder of tests/ mirrors a room of gateway/: {stray}"


def test_subfolders_mirror_the_rooms_subpackages() -> None:
    stray = [
        str(sub.relative_to(TESTS))
        for room in TESTS.iterdir()
        if (room / "__init__.py").exists() and room.name not in ACROSS
        for sub in room.iterdir()
        if (sub / "__init__.py").exists()
        and not (GATEWAY / ALIASES.get(room.name, room.name) / sub.name / "__init__.py").exists()
    ]
    assert stray == [], f"a subfolder of tests/ mirrors a subpackage of gateway/: {stray}"


def test_only_the_tree_s_own_tests_stand_at_the_top() -> None:
    loose = sorted(p.name for p in TESTS.glob("test_*.py") if p.name not in AT_THE_TOP)
    assert loose == [], f"these belong in the folder of the room they test: {loose}"


def gateway_imports(path: Path) -> tuple[set[str], set[str]]:
    """The gateway modules ``path`` imports, and everything else it imports."""
    ours: set[str] = set()
    other: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        for name in names:
            (ours if name.startswith("gateway.") else other).add(name)
    return ours, other


def test_pure_tests_of_the_core_live_in_tests_core() -> None:
    """A test that imports only the core and starts no peer is a test of the core, wherever it is."""
    misplaced = []
    for path in TESTS.rglob("test_*.py"):
        ours, other = gateway_imports(path)
        starts = {o for o in other if o.split(".")[0] in ("subprocess", "aiohttp") or o in STARTS_PEERS}
        pure = bool(ours) and all(m.startswith("gateway.core") for m in ours) and not starts
        if pure and path.relative_to(TESTS).parts[0] != "core":
            misplaced.append(str(path.relative_to(TESTS)))
    assert sorted(misplaced) == [], f"pure core tests outside tests/core: {misplaced}"


def test_no_folder_or_module_in_tests_shadows_the_standard_library() -> None:
    names = {p.name for p in TESTS.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    names |= {p.stem for p in TESTS.glob("*.py")}
    assert sorted(names & sys.stdlib_module_names) == []


def test_the_reference_agent_runs_as_a_script() -> None:
    done = subprocess.run(
        [sys.executable, str(TESTS / "reference_agent.py")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
