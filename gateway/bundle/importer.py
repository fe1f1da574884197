"""One import: mount the bundle as the mirror's upstream, run the mirror's own round, report.

Nothing here judges data. The key list and the index go through :meth:`Mirror.poll_once` (trust:
signatures, rollback, expiry, site, clock), the artifacts through the mirror's fetcher (length,
sha256, detached signature, atomic publish into the store). This module only mounts the bundle
(:class:`~gateway.bundle.source.Shelf`), asks the fetcher to try now, and watches what became of
each artifact the accepted index puts in effect, so the operator is told, per file, what happened.

Idempotent by construction: a second import of the same bundle finds the index "not modified" (or
the same version) and every artifact verified, changes nothing and says so. Resumable likewise: an
artifact cut short (a truncated bundle, a pulled stick) stays a partial, never served; the next
bundle that holds it resumes the transfer from there (the member's validator is its sha256, the
same in every bundle). Imports are one at a time.

A partial left by an earlier bundle is only a guess until the whole file verifies: when a transfer
that resumed one is refused (its sha256 or signature), the partial is gone and the transfer is
tried once more from byte 0 with this bundle's own bytes, so a damaged copy inserted first never
makes the genuine bundle fail. A member the tar holds with another size or as another type is
reported as such (:attr:`~gateway.bundle.layout.Member.problem`) without a transfer.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from gateway.bundle.layout import Member
from gateway.bundle.source import BundleSource, Shelf
from gateway.core.errors import RemoteDataError, StorageError, TransportError
from gateway.core.manifest import Deployment
from gateway.mirror.mirror import Mirror, by_sha, in_effect
from gateway.trust.index import MAX_INDEX_BYTES
from gateway.trust.tuf_state import TufTrustState

DEFAULT_TIMEOUT_S = 3600.0
TRANSPORT_RETRIES = 3  # a cut read of a member the bundle holds whole is tried again this often


class IndexOutcome(StrEnum):
    ACCEPTED = "accepted"
    HELD = "already held"
    REFUSED = "refused"
    INCOMPLETE = "incomplete"
    ABSENT = "not in the bundle"
    UNREADABLE = "unreadable bundle"


class ArtifactOutcome(StrEnum):
    VERIFIED = "verified"
    HELD = "already verified"
    REFUSED = "refused"
    INCOMPLETE = "incomplete in the bundle"
    DAMAGED = "damaged in the bundle"
    ABSENT = "not in the bundle"
    FAILED = "failed"
    UNFINISHED = "unfinished"


@dataclass
class ImportReport:
    bundle: str
    index: IndexOutcome
    index_version: int | None = None
    why: str = ""
    artifacts: dict[str, tuple[ArtifactOutcome, str]] = field(default_factory=dict)
    unused_members: int = 0

    @property
    def ok(self) -> bool:
        """The index the gateway holds now is the bundle's (or newer), with all its artifacts."""
        done = (ArtifactOutcome.VERIFIED, ArtifactOutcome.HELD)
        return self.index in (IndexOutcome.ACCEPTED, IndexOutcome.HELD) and all(
            o in done for o, _ in self.artifacts.values()
        )

    @property
    def changed(self) -> bool:
        return self.index is IndexOutcome.ACCEPTED or any(
            o is ArtifactOutcome.VERIFIED for o, _ in self.artifacts.values()
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "ok": self.ok,
            "changed": self.changed,
            "index": {"outcome": self.index.value, "version": self.index_version, "why": self.why},
            "artifacts": {k: {"outcome": o.value, "why": w} for k, (o, w) in sorted(self.artifacts.items())},
            "unused_members": self.unused_members,
        }

    def lines(self) -> list[str]:
        version = f" version {self.index_version}" if self.index_version is not None else ""
        head = f"index{version}: {self.index.value}" + (f" ({self.why})" if self.why else "")
        out = [f"{self.bundle}: {head}"]
        out += [
            f"  {k}: {o.value}" + (f" ({w})" if w else "") for k, (o, w) in sorted(self.artifacts.items())
        ]
        if self.ok and not self.changed:
            out.append("nothing new: this gateway already held everything in the bundle")
        elif not self.ok:
            out.append("not complete: what verified is kept; insert a whole, newer bundle to finish")
        return out


def report_from_json(doc: dict[str, Any]) -> ImportReport:
    """The report a running gateway wrote (the ``import`` command reads it back)."""
    idx = doc.get("index", {})
    arts = {
        k: (ArtifactOutcome(v["outcome"]), str(v.get("why", ""))) for k, v in doc.get("artifacts", {}).items()
    }
    return ImportReport(
        str(doc.get("bundle", "")),
        IndexOutcome(idx.get("outcome", IndexOutcome.UNREADABLE.value)),
        idx.get("version"),
        str(idx.get("why", "")),
        arts,
        int(doc.get("unused_members", 0)),
    )


@dataclass
class _Watch:
    dep: Deployment
    member: Member
    seen: int  # failed attempts when we started watching
    resumed: bool  # a partial from before this bundle was there: a refusal is retried from byte 0
    retries: int = 0


class Importer:
    def __init__(self, mirror: Mirror, shelf: Shelf, *, poll_s: float = 0.05) -> None:
        self.mirror = mirror
        self.shelf = shelf
        self.poll_s = poll_s
        self._one = asyncio.Lock()

    async def run(self, path: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> ImportReport:
        try:
            source = await BundleSource.open(path)
        except (RemoteDataError, TransportError) as exc:
            return ImportReport(str(path), IndexOutcome.UNREADABLE, why=str(exc))
        async with self._one:
            self.shelf.mount(source)
            try:
                report = await self._index(source)
                if report.index is not IndexOutcome.UNREADABLE:
                    await self._artifacts(source, report, time.monotonic() + timeout_s)
            finally:
                self.shelf.mount(None)
        return report

    def _index_rel(self, source: BundleSource) -> str | None:
        members = source.layout.members
        if isinstance(self.mirror.trust, TufTrustState):  # a TUF site reads the bundle's metadata/
            rel = f"{self.mirror.trust.folder.strip('/')}/timestamp.json"
            return rel if rel in members else None
        for rel in (f"sites/{self.mirror.settings.site}/index.json", "index.json"):
            if rel in members:
                return rel
        return None

    async def _index(self, source: BundleSource) -> ImportReport:
        name = str(source.layout.path)
        rel = self._index_rel(source)
        if rel is None:
            holds = source.layout.index or "no index"
            return ImportReport(
                name, IndexOutcome.ABSENT, why=f"no index for site {self.mirror.settings.site} ({holds})"
            )
        before = self.mirror.index.version if self.mirror.index else None
        try:
            accepted = await self.mirror.poll_once()
        except TransportError as exc:
            return ImportReport(name, IndexOutcome.INCOMPLETE, why=str(exc))
        except StorageError as exc:
            return ImportReport(name, IndexOutcome.UNREADABLE, why=f"cannot store it: {exc}")
        held = self.mirror.index
        if accepted and held is not None:
            return ImportReport(name, IndexOutcome.ACCEPTED, held.version)
        if isinstance(self.mirror.trust, TufTrustState):
            return await self._tuf_outcome(source, rel, before)
        # Not taken in: ask the same verifier again, for the operator's report only.
        try:
            raw = (await source.get(rel, max_bytes=MAX_INDEX_BYTES)).body
            index = await asyncio.to_thread(self.mirror.trust.verify, raw, self.mirror.clock())
        except TransportError as exc:
            return ImportReport(name, IndexOutcome.INCOMPLETE, why=str(exc))
        except RemoteDataError as exc:
            return ImportReport(name, IndexOutcome.REFUSED, why=str(exc))
        if held is not None and index.version == held.version:
            # The mirror's own loop may have polled the mounted bundle first: taken in all the same.
            taken = IndexOutcome.HELD if before == held.version else IndexOutcome.ACCEPTED
            return ImportReport(name, taken, held.version)
        return ImportReport(name, IndexOutcome.REFUSED, index.version, "not accepted (see the log)")

    async def _tuf_outcome(self, source: BundleSource, rel: str, before: int | None) -> ImportReport:
        """A TUF set not taken in: the one held already (same timestamp version), or refused with
        the reason the mirror logged."""
        name, held = str(source.layout.path), self.mirror.index
        try:
            raw = (await source.get(rel, max_bytes=MAX_INDEX_BYTES)).body
            version = json.loads(raw)["signed"]["version"]
        except TransportError as exc:
            return ImportReport(name, IndexOutcome.INCOMPLETE, why=str(exc))
        except (ValueError, KeyError, TypeError) as exc:
            return ImportReport(name, IndexOutcome.REFUSED, why=f"{rel}: not TUF metadata ({exc})")
        if held is not None and held.version == version:
            taken = IndexOutcome.HELD if before == held.version else IndexOutcome.ACCEPTED
            return ImportReport(name, taken, held.version)
        why = self.mirror.stats.last_error.get("mirror.rejected_indexes", "not accepted (see the log)")
        return ImportReport(name, IndexOutcome.REFUSED, version, why)

    async def _artifacts(self, source: BundleSource, report: ImportReport, deadline: float) -> None:
        mirror, members = self.mirror, source.layout.members
        fetcher = mirror.fetcher
        wanted = by_sha(in_effect(mirror.index, mirror.trust.clock(mirror.clock()).now))
        used = {u for d in wanted.values() for u in (d.artifact_url, d.signature_url)}
        report.unused_members = sum(1 for n in members if n not in used and not n.endswith("index.json"))
        watching: dict[str, _Watch] = {}
        for sha, d in wanted.items():
            member = members.get(d.artifact_url)
            if mirror.store.is_verified(sha):
                report.artifacts[d.key] = (ArtifactOutcome.HELD, "")
            elif member is None:
                report.artifacts[d.key] = (ArtifactOutcome.ABSENT, d.artifact_url)
            elif member.problem:
                report.artifacts[d.key] = (ArtifactOutcome.DAMAGED, member.problem)
            else:
                failure = fetcher.failures.get(sha)
                have, _ = await asyncio.to_thread(mirror.store.blobs.partial_state, sha)
                watching[sha] = _Watch(d, member, failure.attempts if failure else 0, resumed=have > 0)
                fetcher.ensure(d)
                fetcher.retry_now(sha)
        while watching and time.monotonic() < deadline:
            for sha, w in list(watching.items()):
                outcome = self._judge(sha, w)
                if outcome is not None:
                    report.artifacts[w.dep.key] = outcome
                    del watching[sha]
            if watching:
                await asyncio.sleep(self.poll_s)  # polling the fetcher's outcome with a deadline
        for w in watching.values():
            report.artifacts[w.dep.key] = (ArtifactOutcome.UNFINISHED, "the import timed out")

    def _judge(self, sha: str, w: _Watch) -> tuple[ArtifactOutcome, str] | None:
        """What became of one artifact's transfer from the bundle; None: not settled yet."""
        fetcher = self.mirror.fetcher
        if self.mirror.store.is_verified(sha):
            return ArtifactOutcome.VERIFIED, ""
        failure = fetcher.failures.get(sha)
        if failure is None or failure.attempts <= w.seen:
            return None
        if failure.bad_data and w.resumed:  # refused over a partial another bundle left: again, whole
            w.resumed = False
            self._again(sha, w, failure.attempts)
            return None
        if failure.bad_data:
            return ArtifactOutcome.REFUSED, failure.why
        if not w.member.complete:
            m = w.member
            return ArtifactOutcome.INCOMPLETE, f"{m.present} of {m.size} bytes; the next bundle resumes it"
        if w.retries < TRANSPORT_RETRIES:
            w.retries += 1
            self._again(sha, w, failure.attempts)
            return None
        return ArtifactOutcome.FAILED, failure.why

    def _again(self, sha: str, w: _Watch, attempts: int) -> None:
        """Ask the fetcher for one more attempt now; its outcome is judged like the first."""
        w.seen = attempts
        self.mirror.fetcher.ensure(w.dep)
        self.mirror.fetcher.retry_now(sha)
