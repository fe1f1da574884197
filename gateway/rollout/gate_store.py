"""Gate state on disk: one JSON file for the current state of every gate, and an append-only audit
log (JSON lines, fsynced) of every decision with its time, wave, criterion, figures and sample sizes.
The state file is replaced atomically (:mod:`gateway.runtime.atomic`), so a crash leaves the old or the new.

Reading is strict: a file that is not JSON, or JSON of another shape (an unknown or missing key, a
value of the wrong type, an unknown stage) raises :class:`~gateway.core.errors.DamagedStateError` naming
the file and the key, never a ``KeyError`` from deep inside; the keeper then moves it aside and
starts in safe mode (:mod:`gateway.rollout.keeper`). The audit log skips lines it cannot read.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from gateway.core.errors import DamagedStateError
from gateway.core.figures import Figures
from gateway.core.gates import Decision, GateState, Stage
from gateway.runtime import atomic

_T = TypeVar("_T")

MAX_AUDIT_READ = 10_000
ALWAYS_WRITTEN = ("ran", "downloaded", "failed", "candidate", "baseline", "decisions")


def _convert(hint: Any, value: Any, where: str) -> Any:
    """``value`` as the type ``hint`` names (the few shapes gate state uses), or DamagedStateError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where)
    if hint is Figures and isinstance(value, dict):
        # evidence written before it was Figures listed its devices (the keys of per_device)
        return _build(Figures, {k: v for k, v in value.items() if k != "devices"}, where)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _build(hint, value, where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise _Shape(f"{where}: unknown {hint.__name__.lower()} {value!r}") from None
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    if origin in (frozenset, tuple) and isinstance(value, list | tuple):
        return origin(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) and isinstance(value, dict):
        return {_convert(args[0], k, where): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    raise _Shape(f"{where}: expected {getattr(hint, '__name__', hint)}, found {type(value).__name__}")


class _Shape(ValueError):
    """A stored document that does not have the shape of its dataclass (says where and why)."""


def _build(cls: type[_T], doc: Any, where: str) -> _T:
    if not isinstance(doc, dict):
        raise _Shape(f"{where}: expected an object, found {type(doc).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(doc) - set(fields))
    if unknown:
        raise _Shape(f"{where}: unknown key {unknown[0]!r}")
    missing = [
        n
        for n, f in fields.items()
        if n not in doc and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise _Shape(f"{where}: missing key {missing[0]!r}")
    return cls(**{k: _convert(hints[k], v, f"{where}.{k}") for k, v in doc.items()})


def state_to_json(s: GateState) -> dict[str, Any]:
    """One gate's state, its reference left out (:class:`GateStore` keeps it in a file of its own)."""
    out = dataclasses.asdict(dataclasses.replace(s, reference={}))
    for key in ("ran", "downloaded", "failed", "observed", "preexisting"):
        out[key] = sorted(out[key])
    return out


def state_from_json(doc: Any, where: str = "gate") -> GateState:
    """One gate's stored state; ValueError naming the key when it is not a gate's shape."""
    missing = [k for k in ALWAYS_WRITTEN if isinstance(doc, dict) and k not in doc]
    if missing:  # every file ever written has these; keys added later (``observed``...) default
        raise _Shape(f"{where}: missing key {missing[0]!r}")
    state = _build(GateState, doc, where)
    if state.stage not in set(Stage):
        raise _Shape(f"{where}.stage: unknown stage {state.stage!r}")
    return state


def _meta_from_json(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise _Shape(f"expected an object, found {type(doc).__name__}")
    unknown = sorted(set(doc) - {"known", "baselines", "ungated", "cloud_held"})
    if unknown:
        raise _Shape(f"unknown key {unknown[0]!r}")
    out: dict[str, Any] = {}
    for key in ("known", "baselines"):
        value = doc.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise _Shape(f"{key}: expected an object of manifests")
        out[key] = value
    for key in ("ungated", "cloud_held"):
        value = doc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _Shape(f"{key}: expected a list of model@version")
        out[key] = value
    return out


class GateStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.state_path = folder / "gates.json"
        self.audit_path = folder / "gates-audit.jsonl"
        self.meta_path = folder / "gates-meta.json"
        # each gate's devices' levels on its baseline: large, and fixed once its first wave opens, so
        # kept apart from gates.json (rewritten every window) and written only when one changes
        self.reference_path = folder / "gates-reference.json"
        self._written: dict[str, object] = {}

    def load(self) -> dict[str, GateState]:
        """Every gate's state; {} when there is no file; DamagedStateError when it cannot be read.
        An unreadable reference file is moved aside: its gates judge on without relative rows."""
        doc = atomic.read_json(self.state_path, {})
        try:
            if not isinstance(doc, dict) or not isinstance(doc.get("gates", {}), dict):
                raise _Shape('expected an object {"gates": {"<model@version>": {...}}}')
            gates = {k: state_from_json(v, f"gates.{k}") for k, v in doc.get("gates", {}).items()}
        except (ValueError, TypeError) as exc:
            raise DamagedStateError(str(self.state_path), f"wrong schema ({exc})") from exc
        refs = self._load_references()
        out = {k: dataclasses.replace(g, reference=refs[k]) if k in refs else g for k, g in gates.items()}
        self._written = {k: g.reference for k, g in out.items()}
        return out

    def _load_references(self) -> dict[str, Any]:
        try:
            doc = atomic.read_json(self.reference_path, {})
            refs = doc.get("references", {}) if isinstance(doc, dict) else None
            if not isinstance(refs, dict):
                raise _Shape('expected an object {"references": {...}}')
            hint = typing.get_type_hints(GateState)["reference"]
            return {k: _convert(hint, v, f"references.{k}") for k, v in refs.items()}
        except (DamagedStateError, ValueError, TypeError):
            atomic.move_aside(self.reference_path)
            return {}

    def load_meta(self) -> dict[str, Any]:
        """What the keeper keeps beside the gates; DamagedStateError when it is not that shape."""
        doc = atomic.read_json(self.meta_path, {})
        try:
            return _meta_from_json(doc)
        except (ValueError, TypeError) as exc:
            raise DamagedStateError(str(self.meta_path), f"wrong schema ({exc})") from exc

    def save(
        self,
        gates: Mapping[str, GateState],
        new_decisions: Iterable[Decision],
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Blocking: append the decisions to the audit log (fsync), then replace the state files."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(d.to_json(), sort_keys=True) for d in new_decisions]
        if lines:
            with self.audit_path.open("a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
                f.flush()
                os.fsync(f.fileno())
        if any(self._written.get(k) is not g.reference for k, g in gates.items()) or set(
            self._written
        ) != set(gates):
            refs = {k: g.reference for k, g in gates.items()}
            atomic.write_json(self.reference_path, {"references": refs})  # before the state naming them
            self._written = dict(refs)
        atomic.write_json(self.state_path, {"gates": {k: state_to_json(v) for k, v in gates.items()}})
        if meta is not None:
            atomic.write_json(self.meta_path, dict(meta))

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        out = []
        with self.audit_path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a torn last line after a power cut
        return out[-MAX_AUDIT_READ:]
