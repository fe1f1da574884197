"""The samples kept at the site, on disk (``<data>/samples/``, a ``diskcache.Cache``).

Each sample is two entries (all in the cache's SQLite file, none in side files), ``"meta:<sha256>"`` (device, reason, class, confidence, model, size,
when offered, its state: ``kept`` or ``chosen``) and ``"blob:<sha256>"`` (its content bytes),
plus, once it is on the upload server, ``"sent:<sha256>"`` for :data:`SENT_KEEP_S` so the same
content offered again is a duplicate. The budget's ledger and the counts by reason live beside
them, as JSON text (never pickle). Every change is one diskcache transaction (SQLite, ``synchronous=FULL``): a ``kill -9`` or a
power cut leaves a sample kept, chosen or sent, never half of one.

Bounded by ``samples.store_max_bytes`` of content: past it the kept (not chosen) sample of the
lowest priority, oldest first, makes room; a new sample that would itself be that one is not kept
("dropped: store full"). Chosen samples are never dropped: they are the day's budget, spent.
Not thread-safe by itself: :mod:`.desk` calls it from one worker thread at a time (its lock).
A full disk raises :class:`StorageError`; the store's entries stay as they were.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache

from gateway.core.errors import StorageError
from gateway.core.samples.budget import Candidate, Ledger, choose
from gateway.core.samples.offer import PRIORITY, Offer, Reason
from gateway.core.samples.settings import SamplesSettings
from gateway.runtime import atomic

SENT_KEEP_S = 8 * 86_400.0  # a sent sample's hash is remembered this long (duplicates)
COUNTS = ("kept", "duplicate", "chosen", "sent", "dropped_budget", "dropped_full", "refused")


_META = {"device": str, "reason": str, "class": str, "model_id": str, "model_version": str,
         "content_type": str, "size": int, "offered_at": float, "state": str}  # fmt: skip


def _checked(meta: Any) -> dict[str, Any]:
    """A sample's metadata as read back; ValueError when it is not what this module writes."""
    if not isinstance(meta, dict):
        raise ValueError("a sample's metadata is not a JSON object")
    for key, tp in _META.items():
        value = meta.get(key)
        if not isinstance(value, tp) and not (tp is float and isinstance(value, int)):
            raise ValueError(f"a sample's metadata has no valid {key!r}")
    Reason(meta["reason"])  # ValueError for an unknown one
    if meta["state"] not in ("kept", "chosen"):
        raise ValueError(f"a sample's state is {meta['state']!r}")
    return meta


@dataclass(frozen=True)
class Kept:
    """The answer to an offer: ``new``, ``duplicate`` or ``dropped_full``, and the content hash."""

    outcome: str
    sha256: str


class SampleStore:
    def __init__(self, path: Path, settings: SamplesSettings) -> None:
        self.path = path
        self.settings = settings
        self.meta: dict[str, dict[str, Any]] = {}  # the metadata of every kept or chosen sample
        self.counts: Counter[str] = Counter()  # "<what>:<reason>" since the store began
        self.ledger = Ledger()
        self.recovered: list[dict[str, Any]] = []  # a damaged store found at open (for /status)
        self.kept_bytes = 0  # content bytes of every kept or chosen sample (kept up to date)
        self.chosen_count = 0
        self._cache: diskcache.Cache | None = None

    @property
    def cache(self) -> diskcache.Cache:
        if self._cache is None:
            raise RuntimeError("the sample store is not open")
        return self._cache

    def open(self) -> None:
        """Open (or create) the folder and read the metadata back into memory. A damaged store (not
        SQLite, a malformed page, JSON of the wrong shape) is moved aside and a fresh one opened."""
        try:
            self._load()
        except (sqlite3.OperationalError, OSError) as exc:  # the disk, not the store's content
            self.close()
            raise StorageError(f"sample store {self.path}: {exc}") from exc
        except (sqlite3.DatabaseError, ValueError, KeyError, TypeError) as exc:
            self.close()
            moved = atomic.move_aside(self.path)
            action = "moved aside and a fresh sample store opened; the samples waiting in it are not sent"
            self.recovered.append(atomic.recovered(self.path, f"unreadable ({exc})", action, moved))
            self._load()

    def _load(self) -> None:
        self.meta, self.counts, self.ledger = {}, Counter(), Ledger()
        # Every value in SQLite itself (no side files, which diskcache writes without fsync), with
        # synchronous=FULL: a committed sample survives a power cut, not only a kill -9.
        self._cache = diskcache.Cache(
            str(self.path),
            eviction_policy="none",
            size_limit=1 << 62,
            sqlite_synchronous=2,
            disk_min_file_size=1 << 40,
        )
        for key in self.cache.iterkeys():
            if isinstance(key, str) and key.startswith("meta:"):
                self.meta[key[5:]] = _checked(json.loads(self.cache[key]))
        self.counts = Counter({str(k): int(v) for k, v in json.loads(self.cache.get("counts", "{}")).items()})
        ledger = self.cache.get("ledger")
        self.ledger = Ledger.from_json(json.loads(ledger)) if ledger else Ledger()
        self._totals()

    def _totals(self) -> None:
        self.kept_bytes = sum(m["size"] for m in self.meta.values())
        self.chosen_count = sum(1 for m in self.meta.values() if m["state"] == "chosen")

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def _count(self, what: str, reason: str, n: int = 1) -> None:
        self.counts[f"{what}:{reason}"] += n
        self.cache["counts"] = json.dumps(dict(self.counts))

    def put(self, device: str, offer: Offer, now: float) -> Kept:
        """Keep ``offer`` from ``device`` unless its content is already kept or was sent."""
        sha = offer.sha256
        try:
            with self.cache.transact():
                if sha in self.meta or f"sent:{sha}" in self.cache:
                    self._count("duplicate", offer.reason)
                    return Kept("duplicate", sha)
                meta = {
                    "device": device,
                    "reason": offer.reason.value,
                    "class": offer.label,
                    "confidence": offer.confidence,
                    "model_id": offer.model_id,
                    "model_version": offer.model_version,
                    "content_type": offer.content_type,
                    "size": len(offer.content),
                    "offered_at": now,
                    "state": "kept",
                }
                victims = self._make_room(sha, meta)
                if victims is None:
                    self._count("dropped_full", offer.reason)
                    return Kept("dropped_full", sha)
                for victim in victims:
                    self._forget(victim)
                    gone = self.meta.pop(victim)
                    self.kept_bytes -= gone["size"]
                    self._count("dropped_full", gone["reason"])
                self.cache[f"blob:{sha}"] = offer.content
                self.cache[f"meta:{sha}"] = json.dumps(meta)
                self._count("kept", offer.reason)
        except (OSError, sqlite3.Error) as exc:
            self._reload()  # what the failed transaction left in memory is not what is on disk
            raise StorageError(f"sample store {self.path}: {exc}") from exc
        self.meta[sha] = meta
        self.kept_bytes += len(offer.content)
        return Kept("new", sha)

    def _make_room(self, sha: str, meta: dict[str, Any]) -> list[str] | None:
        """The kept samples to drop so ``meta`` fits, or None when it should not be kept itself.
        It frees a tenth of the bound more than needed, so a full store sorts once per tenth of
        its turnover, not on every offer."""
        bound = self.settings.store_max_bytes
        excess = self.kept_bytes + meta["size"] - bound
        if excess <= 0:
            return []
        order = sorted(
            [(h, m) for h, m in self.meta.items() if m["state"] == "kept"] + [(sha, meta)],
            key=lambda hm: (-PRIORITY[Reason(hm[1]["reason"])], hm[1]["offered_at"]),
        )
        victims: list[str] = []
        freed = 0
        for h, m in order:
            if h == sha or freed >= excess + bound // 10:
                break  # nothing that ranks above the new sample goes
            victims.append(h)
            freed += m["size"]
        return victims if freed >= excess else None

    def _forget(self, sha: str) -> None:
        self.cache.delete(f"blob:{sha}")
        self.cache.delete(f"meta:{sha}")

    def _reload(self) -> None:
        self.meta = {}
        for key in self.cache.iterkeys():
            if isinstance(key, str) and key.startswith("meta:"):
                self.meta[key[5:]] = json.loads(self.cache[key])
        self.counts = Counter(json.loads(self.cache.get("counts", "{}")))
        self._totals()

    def candidates(self) -> Iterator[Candidate]:
        for sha, m in self.meta.items():
            if m["state"] == "kept":
                yield Candidate(sha, m["device"], Reason(m["reason"]), m["class"], m["size"], m["offered_at"])

    def choose(self, now: float, interval_s: float | None = None) -> int:
        """Run the budget (:func:`gateway.core.samples.budget.choose`); how many were chosen.
        ``interval_s``: how long until the next choice (default ``samples.choose_interval_s``)."""
        s = self.settings
        choice = choose(
            list(self.candidates()),
            self.ledger,
            now,
            budget=s.budget_bytes_per_day,
            interval_s=s.choose_interval_s if interval_s is None else interval_s,
            device_share_max=s.device_share_max,
        )
        updated: dict[str, dict[str, Any]] = {}
        try:
            with self.cache.transact():
                for c in choice.expired:
                    self._forget(c.sha256)
                    self._count("dropped_budget", c.reason)
                for order, c in enumerate(choice.chosen):
                    meta = dict(self.meta[c.sha256], state="chosen", chosen_at=now, order=order)
                    self.cache[f"meta:{c.sha256}"] = json.dumps(meta)
                    updated[c.sha256] = meta
                    self._count("chosen", c.reason)
                self.cache["ledger"] = json.dumps(choice.ledger.to_json())
        except (OSError, sqlite3.Error) as exc:
            self._reload()
            raise StorageError(f"sample store {self.path}: {exc}") from exc
        for c in choice.expired:
            self.kept_bytes -= self.meta.pop(c.sha256)["size"]
        self.meta.update(updated)
        self.chosen_count += len(updated)
        self.ledger = choice.ledger
        return len(choice.chosen)

    def chosen(self) -> list[tuple[str, dict[str, Any]]]:
        """The chosen samples not yet sent, in the order they were chosen."""
        out = [(h, m) for h, m in self.meta.items() if m["state"] == "chosen"]
        return sorted(out, key=lambda hm: (hm[1]["chosen_at"], hm[1]["order"]))

    def blob(self, sha: str) -> bytes:
        data = self.cache.get(f"blob:{sha}")
        if not isinstance(data, bytes):
            raise StorageError(f"sample store {self.path}: the content of {sha} is missing")
        return data

    def refused(self, sha: str) -> None:
        """The upload server refused the blob for good: forget it (counted ``refused``)."""
        with self.cache.transact():
            self._forget(sha)
            self._count("refused", self.meta[sha]["reason"])
        gone = self.meta.pop(sha)
        self.kept_bytes -= gone["size"]
        self.chosen_count -= 1

    def sent(self, sha: str) -> None:
        """The blob is on the upload server and its index record in the outbox: forget the content."""
        with self.cache.transact():
            self._forget(sha)
            self.cache.set(f"sent:{sha}", 1, expire=SENT_KEEP_S)
            meta = self.meta[sha]
            self._count("sent", meta["reason"])
            self._count("sent_bytes", meta["reason"], meta["size"])
        gone = self.meta.pop(sha)
        self.kept_bytes -= gone["size"]
        self.chosen_count -= 1
