"""What each sink has of the outbox: its cursor, the records it has not acknowledged, and deleting
what every sink has.

Each sink in use (and ``ota-gateway uplink export``'s, :data:`EXPORT_SINK`, whichever sinks run)
keeps its own cursor, the highest sequence number it acknowledged, in the file's ``cursors`` table,
so a cloud broker that is down does not hold back the HTTP ingest, and the reverse. A record is
deleted once every sink in use has it. Sending is the forwarder's (:mod:`gateway.uplink.forwarder`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from gateway.uplink.outbox_file import OutboxFile, Record, register_sinks, seam

EXPORT_SINK = "export"  # ``ota-gateway uplink export``'s cursor: kept whichever sinks run
_ACKED = "SELECT COALESCE((SELECT acked FROM cursors WHERE sink = ?), 0)"


class Delivery:
    def __init__(self, file: OutboxFile, sinks: Sequence[str]) -> None:
        self.file = file
        self.path = file.path
        self.sinks = tuple(sinks)

    @seam
    def register(self) -> None:
        """Give each sink in use a cursor, and drop those of sinks no longer in use (at open)."""
        with self.file.lock:
            register_sinks(self.file.db, self.sinks, EXPORT_SINK)

    @seam
    def acked(self, sink: str) -> int:
        return self.file.scalar(_ACKED, (sink,))

    @seam
    def peek(
        self, sink: str, max_records: int = 500, max_bytes: int = 1 << 20, *, after: int | None = None
    ) -> list[Record]:
        """The oldest records this sink has not acknowledged (at least one, even if large); with
        ``after``, those past that sequence number instead (a reader paging ahead of its cursor)."""
        with self.file.lock:
            rows = self.file.db.execute(
                "SELECT seq, kind, at, body, size FROM records WHERE seq > "
                "COALESCE(?, (SELECT acked FROM cursors WHERE sink = ?), 0) ORDER BY seq LIMIT ?",
                (after, sink, max_records),
            ).fetchall()
        out: list[Record] = []
        total = 0
        for seq, kind, at, body, size in rows:
            if out and total + size > max_bytes:
                break
            out.append(Record(seq, kind, at, json.loads(body)))
            total += size
        return out

    @seam
    def ack(self, sink: str, up_to_seq: int) -> None:
        """``sink`` has every record up to ``up_to_seq``; records every sink has are deleted."""
        with self.file.lock:
            cur = self.file.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            cur.execute(
                "INSERT INTO cursors(sink, acked) VALUES (?, ?) "
                "ON CONFLICT(sink) DO UPDATE SET acked = MAX(acked, excluded.acked)",
                (sink, up_to_seq),
            )
            floor = min((cur.execute(_ACKED, (s,)).fetchone()[0] for s in self.sinks), default=up_to_seq)
            freed = cur.execute(
                "SELECT kind, COUNT(*), SUM(size) FROM records WHERE seq <= ? GROUP BY kind", (floor,)
            ).fetchall()
            cur.execute("DELETE FROM records WHERE seq <= ?", (floor,))
            cur.execute("COMMIT")
            for kind, n, size in freed:
                self.file.count(kind, -n, -size)

    def cursors(self) -> dict[str, int]:
        """Each sink in use's cursor (for the status page)."""
        return {s: self.file.scalar(_ACKED, (s,)) for s in self.sinks}
