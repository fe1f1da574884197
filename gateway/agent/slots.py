"""Two A/B slots under a state folder and the ``current`` pointer that picks one.

    STATE/a/model.bin  STATE/a/slot.json     one installed model and what it is
    STATE/b/model.part STATE/b/download.json  a transfer in progress (sha256, ETag for If-Range)
    STATE/current -> a                        the active slot: a symlink, swapped by rename

A new model is always written into the slot that is *not* current, checked, then made current by
one ``rename`` of a fresh symlink over ``current`` (atomic on POSIX): after a power cut at any
instant the device boots either the old model or the new one, never half of one. The other slot
keeps the previous model, which is what a rollback switches back to. Every write here goes to a
temp file, is fsynced, renamed and its folder fsynced (the same discipline as the gateway's store).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from gateway.agent.errors import AgentError

SLOT_NAMES = ("a", "b")
MODEL = "model.bin"
PARTIAL = "model.part"
META = "slot.json"
DOWNLOAD = "download.json"
POINTER = "current"


@dataclass(frozen=True)
class SlotInfo:
    """What one slot holds (a verified model) or nothing."""

    name: str
    model_id: str
    version: str
    sha256: str


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, doc: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        json.dump(doc, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _read_json(path: Path) -> dict[str, str] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # missing or torn: the slot counts as empty and is written again
    return doc if isinstance(doc, dict) else None


class Slots:
    """The A/B slots of one device. Synchronous and small: callers on an event loop run it in a
    worker thread."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def open(cls, root: Path) -> Slots:
        """Create the folders and point ``current`` at ``a`` the first time."""
        for name in SLOT_NAMES:
            (root / name).mkdir(parents=True, exist_ok=True)
        slots = cls(root)
        if not (root / POINTER).is_symlink():
            slots._point(SLOT_NAMES[0])
        return slots

    def current_name(self) -> str:
        name = os.readlink(self.root / POINTER)
        if name not in SLOT_NAMES:
            raise AgentError(f"{self.root / POINTER} points at {name!r}, not a slot")
        return name

    def other_name(self) -> str:
        return SLOT_NAMES[1 - SLOT_NAMES.index(self.current_name())]

    def model_path(self, name: str) -> Path:
        return self.root / name / MODEL

    def info(self, name: str) -> SlotInfo | None:
        doc = _read_json(self.root / name / META)
        if doc is None or not self.model_path(name).exists():
            return None
        try:
            return SlotInfo(name, doc["model_id"], doc["version"], doc["sha256"])
        except KeyError:
            return None

    def current(self) -> SlotInfo | None:
        return self.info(self.current_name())

    def previous(self) -> SlotInfo | None:
        """The other slot's model: what a rollback goes back to."""
        return self.info(self.other_name())

    def prepare(self, sha256: str) -> tuple[Path, str | None]:
        """The inactive slot made ready for ``sha256``: its partial file (kept when it is a
        transfer of these very bytes, so it resumes) and the ETag it was fetched with."""
        slot = self.root / self.other_name()
        partial, started = slot / PARTIAL, _read_json(slot / DOWNLOAD)
        if started is not None and started.get("sha256") == sha256 and partial.exists():
            return partial, started.get("etag")
        shutil.rmtree(slot, ignore_errors=True)  # the previous model there is overwritten now
        slot.mkdir()
        _write_json(slot / DOWNLOAD, {"sha256": sha256})
        _fsync_dir(self.root)
        return partial, None

    def remember_etag(self, sha256: str, etag: str) -> None:
        _write_json(self.root / self.other_name() / DOWNLOAD, {"sha256": sha256, "etag": etag})

    def discard_partial(self) -> None:
        """A transfer whose bytes failed verification: start from nothing next time."""
        slot = self.root / self.other_name()
        for name in (PARTIAL, DOWNLOAD):
            (slot / name).unlink(missing_ok=True)

    def commit(self, model_id: str, version: str, sha256: str) -> SlotInfo:
        """The verified partial becomes the inactive slot's model (still not current)."""
        name = self.other_name()
        slot = self.root / name
        with (slot / PARTIAL).open("rb") as f:
            os.fsync(f.fileno())
        os.replace(slot / PARTIAL, slot / MODEL)
        (slot / DOWNLOAD).unlink(missing_ok=True)
        _write_json(slot / META, {"model_id": model_id, "version": version, "sha256": sha256})
        return SlotInfo(name, model_id, version, sha256)

    def switch(self) -> SlotInfo | None:
        """Make the other slot current (the A/B switch, and the rollback); refuses an empty slot."""
        target = self.other_name()
        if self.info(target) is None:
            raise AgentError(f"slot {target} holds no verified model to switch to")
        self._point(target)
        return self.info(target)

    def _point(self, name: str) -> None:
        tmp = self.root / (POINTER + ".tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(name, tmp)
        os.replace(tmp, self.root / POINTER)
        _fsync_dir(self.root)
