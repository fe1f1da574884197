"""Gate state on disk: one JSON file for the current state of every gate, and an append-only audit
log (JSON lines, fsynced) of every decision with its time, wave, criterion, figures and sample sizes.
The state file is replaced atomically (:mod:`gateway.atomic`), so a crash leaves the old or the new.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gateway import atomic
from gateway.core.figures import Figures
from gateway.core.gates import Decision, GateState, Verdict

MAX_AUDIT_READ = 10_000


def _evidence(doc: Mapping[str, Any]) -> Figures:
    return Figures.from_json(doc)  # also the evidence written before it was Figures


def _decision(doc: Mapping[str, Any]) -> Decision:
    return Decision(**{**doc, "verdicts": tuple(Verdict(**v) for v in doc.get("verdicts", ()))})


def state_to_json(s: GateState) -> dict[str, Any]:
    out = dataclasses.asdict(s)
    for key in ("ran", "downloaded", "failed", "observed", "preexisting"):
        out[key] = sorted(out[key])
    return out


def state_from_json(doc: Mapping[str, Any]) -> GateState:
    return GateState(
        **{
            **doc,
            "ran": frozenset(doc["ran"]),
            "downloaded": frozenset(doc["downloaded"]),
            "failed": frozenset(doc["failed"]),
            "observed": frozenset(doc.get("observed", ())),
            "preexisting": frozenset(doc.get("preexisting", ())),
            "heard": dict(doc.get("heard", {})),
            "candidate": _evidence(doc["candidate"]),
            "baseline": _evidence(doc["baseline"]),
            "decisions": tuple(_decision(d) for d in doc["decisions"]),
        }
    )


class GateStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.state_path = folder / "gates.json"
        self.audit_path = folder / "gates-audit.jsonl"
        self.meta_path = folder / "gates-meta.json"

    def load(self) -> dict[str, GateState]:
        doc = atomic.read_json(self.state_path, {}) or {}
        return {k: state_from_json(v) for k, v in doc.get("gates", {}).items()}

    def load_meta(self) -> dict[str, Any]:
        return atomic.read_json(self.meta_path, {}) or {}

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
