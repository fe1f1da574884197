"""The house rules, read from the imports with ``ast`` (see the floors in ``gateway/__init__.py``).

- ``gateway/core`` is pure: it imports the standard library (but no asyncio, sockets, files or
  processes), ``firmware_compat`` and itself, nothing else of the gateway;
- no import cycles anywhere in ``gateway/`` (``TYPE_CHECKING`` imports count: a cycle of types is
  a cycle of knowledge);
- the store never imports network code (http, mirror, broker); http never imports the broker or
  the service; ``runtime`` imports only the core;
- the two programs beside the house keep to themselves: the device agent imports nothing of the
  gateway but the core, the registry no I/O room (only the core and the pure signature helpers);
- nothing but the entry points stands loose at the top of ``gateway/``: every module is in a room;
- the core (and ``firmware_compat``) neither swallows every error (``except Exception``,
  ``except BaseException``, a bare ``except``) nor logs (``import logging``): it names the errors
  it expects and returns what happened as a value, for the shell to log.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_CORE = {
    "asyncio",
    "aiohttp",
    "amqtt",
    "zeroconf",
    "sqlite3",
    "psutil",
    "socket",
    "os",
    "subprocess",
}


def module_name(path: Path) -> str:
    parts = (path.relative_to(ROOT) if path.is_relative_to(ROOT) else Path(path.name)).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """Every module ``path`` imports: ``from a.b import c`` is ``a.b.c`` when that is a module of
    ours, else ``a.b`` (``c`` is a name defined there)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base]) if base else ".".join(up)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in MODULES else base), node.lineno


def sources(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


MODULES = {module_name(p): p for p in sources("gateway", "firmware_compat")}
ROOMS = sorted(p.name for p in (ROOT / "gateway").iterdir() if (p / "__init__.py").exists())
ENTRY_POINTS = {"__init__.py", "__main__.py", "cli.py"}  # the package, ``python -m gateway``, the CLI
# the registry's reach: the core, itself, the pure signature helpers, crash-safe writes
REGISTRY_MAY = {
    *(m for m in MODULES if m.startswith(("gateway.core", "gateway.registry"))),
    *("gateway.trust.keys", "gateway.trust.canonical", "gateway.runtime.atomic"),
}


def test_only_the_entry_points_stand_loose_at_the_top() -> None:
    loose = sorted(p.name for p in (ROOT / "gateway").glob("*.py") if p.name not in ENTRY_POINTS)
    assert loose == [], f"every module belongs in a room of gateway/: {loose}"


def own(target: str) -> str | None:
    """The gateway module ``target`` names (a module, or a name inside one), if any."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def test_the_core_imports_only_the_standard_library_firmware_compat_and_itself() -> None:
    bad = []
    for path in sources("gateway/core"):
        for target, line in imports(path):
            top = target.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}: {target}"
            if (
                top in FORBIDDEN_IN_CORE
                or (top == "gateway" and not target.startswith("gateway.core"))
                or (
                    top not in ("gateway", "firmware_compat", "__future__")
                    and top not in sys.stdlib_module_names
                )
            ):
                bad.append(where)
    assert not bad, "the core must stay pure:\n" + "\n".join(bad)


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        if not name.startswith("gateway"):
            continue
        targets = {own(t) for t, _ in imports(path)}
        edges[name] = {t for t in targets if t and t != name and t.startswith("gateway") and t != "gateway"}
    return edges


def test_no_import_cycles() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("room", "never"),
    [
        ("gateway.store", ("gateway.http", "gateway.mirror", "gateway.broker")),
        ("gateway.http", ("gateway.broker", "gateway.service")),
        ("gateway.runtime", tuple(f"gateway.{r}" for r in ROOMS if r not in ("core", "runtime"))),
        ("gateway.agent", tuple(f"gateway.{r}" for r in ROOMS if r not in ("core", "agent"))),
    ],
)
def test_rooms_import_only_rooms_below_them(room: str, never: tuple[str, ...]) -> None:
    bad = [
        f"{name} -> {target}"
        for name, targets in graph().items()
        if name.startswith(room)
        for target in targets
        if target.startswith(never)
    ]
    assert not bad, "\n".join(bad)


def test_the_registry_reaches_only_the_core_and_the_signature_helpers() -> None:
    bad = [
        f"{name} -> {target}"
        for name, targets in graph().items()
        if name.startswith("gateway.registry")
        for target in targets
        if target not in REGISTRY_MAY
    ]
    assert not bad, "\n".join(bad)


def test_the_rules_can_fail(tmp_path: Path) -> None:
    """The core check reads what is written: an ``import asyncio`` in a core module is caught."""
    probe = tmp_path / "probe.py"
    probe.write_text("import asyncio\nfrom gateway.mirror import mirror\n")
    found = {t for t, _ in imports(probe)}
    assert "asyncio" in found and "gateway.mirror.mirror" in found


CATCH_ALL = {"Exception", "BaseException"}


def swallows_and_logs(path: Path) -> list[str]:
    """Each ``except`` that catches everything (bare, ``Exception``, ``BaseException``, alone or
    in a tuple) and each import of ``logging`` in ``path``, as ``path:line: what``."""
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ExceptHandler):
            caught = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            names = {c.id if isinstance(c, ast.Name) else getattr(c, "attr", None) for c in caught if c}
            if node.type is None or names & CATCH_ALL:
                found.append(f"{where}:{node.lineno}: except {ast.unparse(node.type) if node.type else ''}")
    found += [f"{where}:{line}: import {t}" for t, line in imports(path) if t.split(".")[0] == "logging"]
    return found


def test_the_core_names_the_errors_it_expects_and_does_not_log() -> None:
    bad = [f for path in sources("gateway/core", "firmware_compat") for f in swallows_and_logs(path)]
    assert not bad, "the core returns what happened as a value; the shell logs it:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "code",
    [
        "try:\n    pass\nexcept Exception:\n    pass\n",
        "try:\n    pass\nexcept:\n    pass\n",
        "try:\n    pass\nexcept (ValueError, BaseException) as exc:\n    pass\n",
        "try:\n    pass\nexcept builtins.Exception:\n    pass\n",
        "import logging\n",
        "from logging import getLogger\n",
        "import logging.handlers\n",
    ],
)
def test_the_core_rules_can_fail(tmp_path: Path, code: str) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(code)
    assert swallows_and_logs(probe), f"not caught: {code!r}"
    probe.write_text("try:\n    pass\nexcept (ValueError, KeyError):\n    pass\n")
    assert not swallows_and_logs(probe)


MAX_MODULE_LINES = 400  # a module past this is asking to become a package
MAX_FUNCTION_LINES = 80


def test_modules_and_functions_stay_small() -> None:
    big = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in MODULES.values()
        if (n := len(p.read_text().splitlines())) >= MAX_MODULE_LINES
    ]
    long = [
        f"{p.relative_to(ROOT)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines"
        for p in MODULES.values()
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not big and not long, "\n".join(big + long)
