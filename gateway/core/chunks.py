"""The arithmetic of a signed chunk list: which fixed-size chunks cover a byte range, and the list.

An artifact of ``length`` bytes is cut into chunks of ``size`` bytes (the last one shorter, or as
long). The registry writes the SHA-256 digest of every chunk, in order, as raw 32-byte digests one
after the other (no header, no separators: ``count * 32`` bytes), in a file beside the artifact;
the manifest inside the signed index names that file's own SHA-256, so the list is as trusted as
the index. A zero-length artifact has zero chunks and an empty list.

Pure: byte offsets in, chunk numbers and bounds out. What to fetch, verify and serve is decided by
the mirror and the download handler around these answers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.core.errors import FormatError

DIGEST_BYTES = 32
MIN_CHUNK_BYTES = 4096
MAX_CHUNK_BYTES = 64 << 20  # a chunk is held in memory while it is verified
DEFAULT_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Chunking:
    """An artifact of ``length`` bytes cut into chunks of ``size`` bytes."""

    length: int
    size: int

    def __post_init__(self) -> None:
        if self.length < 0 or self.size <= 0:
            raise ValueError(f"bad chunking: length {self.length}, size {self.size}")

    @property
    def count(self) -> int:
        return -(-self.length // self.size)

    def bounds(self, i: int) -> tuple[int, int]:
        """Chunk ``i`` as ``(start, end)``, end exclusive."""
        if not 0 <= i < self.count:
            raise IndexError(f"chunk {i} of {self.count}")
        start = i * self.size
        return start, min(self.length, start + self.size)

    def chunk_length(self, i: int) -> int:
        start, end = self.bounds(i)
        return end - start

    @property
    def last_length(self) -> int:
        """The last chunk's length (0 when there is no chunk)."""
        return self.chunk_length(self.count - 1) if self.count else 0

    def covering(self, first: int, last: int) -> range:
        """The chunks holding bytes ``first..last`` (inclusive, clamped to the artifact)."""
        last = min(last, self.length - 1)
        if first > last or first < 0:
            return range(0)
        return range(first // self.size, last // self.size + 1)

    def verified_bytes(self, chunks: int) -> int:
        """How many bytes from 0 the first ``chunks`` chunks hold."""
        return min(self.length, max(0, chunks) * self.size)

    def chunks_within(self, nbytes: int) -> int:
        """How many whole chunks lie in the first ``nbytes`` bytes (the last one counts when it
        ends at ``length``)."""
        if nbytes >= self.length:
            return self.count
        return max(0, nbytes) // self.size


def digests(data: bytes, size: int) -> bytes:
    """The chunk list of ``data``: each chunk's SHA-256, raw, concatenated (what the registry writes)."""
    return b"".join(hashlib.sha256(data[i : i + size]).digest() for i in range(0, len(data), size))


def parse_list(raw: bytes, chunking: Chunking, signed_sha256: str) -> tuple[bytes, ...]:
    """The chunk digests of a list file, after checking it is the one the index signed and that it
    has one digest per chunk. FormatError says which check failed."""
    got = hashlib.sha256(raw).hexdigest()
    if got != signed_sha256:
        raise FormatError(f"chunk list sha256 {got} is not the signed {signed_sha256}")
    if len(raw) != chunking.count * DIGEST_BYTES:
        raise FormatError(
            f"chunk list has {len(raw)} bytes, expected {chunking.count * DIGEST_BYTES} "
            f"({chunking.count} chunks of {chunking.size} bytes)"
        )
    return tuple(raw[i : i + DIGEST_BYTES] for i in range(0, len(raw), DIGEST_BYTES))
