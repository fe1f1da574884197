"""The upstream registry behind one narrow interface: HTTP(S) or a local folder.

Two calls are all the mirror needs: a small conditional GET (index, key list, signature) and a
ranged stream of an artifact. Library exceptions become :class:`TransportError` here, at the seam
(the httpx pattern); whether the bytes are *good* is not this module's business
(:mod:`gateway.trust`).

The two kinds: :mod:`gateway.mirror.upstream_http` and :mod:`gateway.mirror.upstream_dir` (a folder
or ``file://``: air-gapped sites and USB bundles); :mod:`gateway.mirror.open_upstream` picks the one
the configuration names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from gateway.core.errors import TransportError

CHUNK_BYTES = 256 << 10


@dataclass(frozen=True)
class Fetched:
    body: bytes
    etag: str | None = None
    last_modified: str | None = None


class Stream(Protocol):
    status: int  # 200 (whole body from byte 0) or 206 (from the asked offset)
    start: int
    total: int | None  # full resource length when the upstream says it
    etag: str | None

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class Upstream(Protocol):
    description: str

    async def get(
        self, rel: str, *, etag: str | None = None, last_modified: str | None = None, max_bytes: int
    ) -> Fetched:
        """Fetch a small file; NotModified when the validators match; TransportError otherwise."""

    async def stream(self, rel: str, *, offset: int, if_range: str | None) -> Stream:
        """Open the resource from ``offset`` (Range + If-Range when offset > 0)."""

    async def close(self) -> None: ...


class NoUpstream:
    """``mirror.upstream = ""``: an air-gapped site, where only bundles bring indexes and artifacts."""

    description = "none (mirror.upstream is empty: bundles only)"

    async def get(
        self, rel: str, *, etag: str | None = None, last_modified: str | None = None, max_bytes: int
    ) -> Fetched:
        raise TransportError(f"{rel}: no upstream", status=404, url=None)

    async def stream(self, rel: str, *, offset: int, if_range: str | None) -> Stream:
        raise TransportError(f"{rel}: no upstream", status=404, url=None)

    async def close(self) -> None:
        return None
