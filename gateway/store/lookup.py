"""What the artifact handler asks the store: is this URL a verified file, arriving in verified
chunks, pending, or nothing?"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.store.fill import Fill


@dataclass(frozen=True)
class Entry:
    """What a URL name (model, version, file) stands for: a blob by its sha256, of this length."""

    model_id: str
    version: str
    filename: str
    sha256: str
    length: int


@dataclass(frozen=True)
class Verified:
    """A verified file ready to serve. ``sha256`` is of exactly these bytes (strong ETag)."""

    path: Path
    size: int
    sha256: str
    mtime: float
    content_type: str = "application/octet-stream"
    ctime_ns: int = 0  # the file's ctime when it was verified (0: not checked)


@dataclass(frozen=True)
class Pending:
    """Named by a deployment in effect but not yet mirrored and verified."""

    retry_after_s: int


@dataclass(frozen=True)
class Streaming:
    """Still arriving, with a signed chunk list: the bytes below ``fill.verified`` may be served
    from the partial file, the rest as the mirror verifies it. No whole-file validator yet."""

    fill: Fill
    retry_after_s: int  # for what cannot be streamed (several ranges at once)
    content_type: str = "application/octet-stream"


class ArtifactLookup(Protocol):
    def lookup(self, model_id: str, version: str, filename: str) -> Verified | Streaming | Pending | None:
        """``filename`` may end in ``.sig`` (the detached signature). Never does blocking I/O."""

    def broken(self, model_id: str, version: str, filename: str) -> int:
        """The verified file could not be served as verified (gone, short, not a regular file, or
        written since): stop serving it and get it back. Returns a ``Retry-After`` in seconds."""
