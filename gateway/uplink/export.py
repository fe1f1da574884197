"""``ota-gateway uplink export FILE``: the outbox's pending records, on a stick, back to the cloud.

The export is a sink like the others, named ``export``, with its own cursor in the outbox. It reads
the records past that cursor (up to the newest at the start), writes them to ``FILE`` beside its
final name, fsyncs, renames it into place and fsyncs the folder, and only then moves the cursor.
A ``kill -9`` or a power cut at any instant leaves the cursor where it was: the next export carries
the same records again (the cloud keeps one per ``seq``; records are idempotent by it).

It works beside a running gateway: SQLite's own locking serialises the two processes' writes, the
gateway counts its outbox's size again before it sheds anything, and this process never sets a
damaged outbox aside under a running gateway (it refuses instead). Records are deleted once every
sink the gateway registered (see :func:`gateway.uplink.outbox_file.register_sinks`) and the export
have them; on an air-gapped site the export is the only sink.

The file, UTF-8 JSON Lines::

    {"format": "ota-gateway-uplink/1", "site": ..., "sink": "export", "after_seq": A,
     "created": "<RFC 3339>", "drops_unreported": {...}}
    {"seq": ..., "kind": ..., "at": <unix time>, "body": {...}}       one line per record, by seq
    {"end": true, "records": N, "last_seq": B, "sha256": "<hex of the record lines' bytes>"}

A file without its ``end`` line, or whose record lines do not hash to it, is cut short: the cloud
refuses it (its records come again with the next export).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.core.errors import StorageError
from gateway.core.manifest import format_time
from gateway.core.settings import Settings
from gateway.runtime import atomic
from gateway.uplink.outbox import EXPORT_SINK, Outbox
from gateway.uplink.outbox_file import connect_checked, cursor_sinks

FORMAT = "ota-gateway-uplink/1"
PAGE_RECORDS = 1000


class _Attached(Outbox):
    """The outbox file opened beside a (possibly) running gateway: a damaged file is refused,
    never set aside (the gateway does that at its next start)."""

    def _set_aside(self, problem: str) -> None:
        raise StorageError(
            f"the outbox {self.path} is damaged ({problem}); the gateway sets it aside at its next start"
        )


def configured_sinks(settings: Settings) -> list[str]:
    up = settings.uplink
    return [name for name, url in (("http", up.ingest_url), ("mqtt", up.mqtt_url)) if url]


def open_outbox(settings: Settings) -> Outbox:
    """The outbox, with every sink whose records must stay: the configured ones, those a gateway
    registered, and the export. Blocking."""
    path = settings.data_path / "outbox.sqlite"
    if not path.exists():
        raise StorageError(f"no outbox at {path}: nothing was ever recorded here", path=str(path))
    db = connect_checked(path)
    try:
        registered = cursor_sinks(db)
    finally:
        db.close()
    sinks = sorted({*configured_sinks(settings), *registered, EXPORT_SINK})
    return _Attached(
        path,
        max_bytes=settings.uplink.outbox_max_bytes,
        max_age_s=settings.uplink.outbox_max_age_s,
        sinks=sinks,
    )


@dataclass(frozen=True)
class Exported:
    path: Path
    records: int
    after_seq: int
    last_seq: int


def _newest(outbox: Outbox) -> int:
    return int(outbox.db.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0])


def export_records(outbox: Outbox, dest: Path, *, site: str, now: float | None = None) -> Exported:
    """Write the records past the export's cursor to ``dest``, then move the cursor. Blocking."""
    now = time.time() if now is None else now
    after = outbox.acked(EXPORT_SINK)
    newest = _newest(outbox)
    header = {
        "format": FORMAT,
        "site": site,
        "sink": EXPORT_SINK,
        "after_seq": after,
        "created": format_time(now),
        "drops_unreported": outbox.stats().get("drops_unreported", {}),
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    h, n, last = hashlib.sha256(), 0, after
    try:
        with tmp.open("wb") as f:
            f.write(json.dumps(header, sort_keys=True).encode() + b"\n")
            while last < newest:
                page = [
                    r for r in outbox.peek(EXPORT_SINK, PAGE_RECORDS, 8 << 20, after=last) if r.seq <= newest
                ]
                if not page:
                    break
                for r in page:
                    line = json.dumps(r.to_json(), sort_keys=True, separators=(",", ":")).encode() + b"\n"
                    h.update(line)
                    f.write(line)
                n, last = n + len(page), page[-1].seq
            trailer = {"end": True, "records": n, "last_seq": last, "sha256": h.hexdigest()}
            f.write(json.dumps(trailer, sort_keys=True).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        atomic.fsync_dir(dest.parent)
    except OSError as exc:
        raise StorageError(f"cannot write {dest}: {exc.strerror or exc}", path=str(dest)) from exc
    finally:
        tmp.unlink(missing_ok=True)
    if last > after:
        outbox.ack(EXPORT_SINK, last)  # only now: the file is whole and on disk
    return Exported(dest, n, after, last)
