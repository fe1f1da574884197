"""The device side of the streaming tests: it re-hashes every chunk it receives against the signed
chunk list, and counts the bytes that are not part of a verified chunk."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.core.chunks import DIGEST_BYTES


@dataclass
class ChunkCheck:
    """The signed chunk list of one artifact (read from the registry), and what devices got."""

    digests: list[bytes]
    size: int  # chunk size
    length: int
    truth: bytes | None = None  # the artifact, to check the pieces of chunks a range cuts
    bad_bytes: int = 0
    checked_bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @classmethod
    def from_registry(cls, root: Path, manifest: dict[str, Any], truth: bytes | None = None) -> ChunkCheck:
        raw = (root / manifest["chunks"]["url"]).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == manifest["chunks"]["sha256"]
        digests = [raw[i : i + DIGEST_BYTES] for i in range(0, len(raw), DIGEST_BYTES)]
        return cls(digests, manifest["chunks"]["size"], manifest["length"], truth)

    def received(self, start: int, body: bytes, who: str = "device") -> int:
        """Check ``body``, the bytes from ``start`` a device received; returns the bad bytes in it.
        A whole chunk is re-hashed against the list; a piece of a chunk (a range's edge) is
        compared with the artifact itself."""
        bad = 0
        pos, end = start, start + len(body)
        if end > self.length:
            bad += end - self.length
            end = self.length
        while pos < end:
            i = pos // self.size
            c_start, c_end = i * self.size, min(self.length, (i + 1) * self.size)
            upto = min(end, c_end)
            piece = body[pos - start : upto - start]
            if pos == c_start and upto == c_end:
                ok = hashlib.sha256(piece).digest() == self.digests[i]
            else:
                ok = self.truth is not None and self.truth[pos:upto] == piece
            if not ok:
                bad += len(piece)
                self.problems.append(f"{who}: bytes {pos}-{upto - 1} (chunk {i}) are not the signed ones")
            pos = upto
        self.bad_bytes += bad
        self.checked_bytes += len(body)
        return bad
