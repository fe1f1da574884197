"""A bundle read as an upstream, and the shelf that lends it to the running mirror.

:class:`BundleSource` implements the mirror's :class:`~gateway.mirror.upstream.Upstream` protocol
over one bundle file, so an import runs the mirror's own path unchanged: the same conditional GET of
the key list and the index, the same resumable, verified transfer of each artifact. It serves only
the members ``bundle.json`` lists; a small file whose bytes are short or whose sha256 is not the
listed one is a :class:`TransportError` (a damaged copy, not a verdict on the data); an artifact
streams the bytes the file holds and then fails the same way, so the mirror keeps the partial
(never served) and resumes it from the next bundle. Before every read the file is checked against
the fingerprint taken when it was opened: a stick pulled or a file replaced mid-import fails the
read instead of splicing two files.

:class:`Shelf` wraps the configured upstream. While a bundle is mounted it *is* the upstream (names
it does not hold answer 404, so an unreachable network upstream cannot stop an import); otherwise
every call goes to the configured one.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from gateway.bundle.layout import Fingerprint, Layout, Member, open_regular
from gateway.core.errors import FormatError, NotModified, TransportError
from gateway.mirror.upstream import CHUNK_BYTES, Fetched, Stream, Upstream


def _open_checked(layout: Layout) -> IO[bytes]:
    """The bundle file, if it is still the one whose directory we read. Blocking."""
    try:
        f, st = open_regular(layout.path)  # never blocks, even if a FIFO took its place
    except (OSError, FormatError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not a regular file now"
        raise TransportError(f"{layout.path}: gone ({why or exc})", url=str(layout.path)) from exc
    if Fingerprint.of(st) != layout.fingerprint:
        f.close()
        raise TransportError(f"{layout.path}: changed since it was opened", url=str(layout.path))
    return f


def _missing(layout: Layout, m: Member) -> TransportError:
    """A member the file does not hold whole: what it holds instead, or how much of it."""
    if m.problem:
        return TransportError(f"{layout.path}: {m.name}: {m.problem}", url=m.name)
    if m.offset is None:
        return TransportError(f"{layout.path}: {m.name} is not in the file (truncated bundle)", url=m.name)
    return TransportError(
        f"{layout.path}: {m.name} is incomplete in the bundle ({m.present} of {m.size} bytes)", url=m.name
    )


def _read_member(layout: Layout, m: Member) -> bytes:
    if not m.complete or m.offset is None:
        raise _missing(layout, m)
    try:
        with _open_checked(layout) as f:
            f.seek(m.offset)
            data = f.read(m.size)
    except OSError as exc:
        raise TransportError(f"{layout.path}: read failed ({exc.strerror or exc})", url=m.name) from exc
    if len(data) != m.size:
        raise TransportError(f"{layout.path}: {m.name} cut short while reading", url=m.name)
    if hashlib.sha256(data).hexdigest() != m.sha256:
        raise TransportError(
            f"{layout.path}: {m.name} is damaged (not the sha256 bundle.json lists)", url=m.name
        )
    return data


class _MemberStream:
    def __init__(self, layout: Layout, m: Member, start: int) -> None:
        self.status = 206 if start else 200
        self.start = start
        self.total: int | None = m.size
        self.etag: str | None = m.etag
        self._layout = layout
        self._m = m

    async def chunks(self) -> AsyncIterator[bytes]:
        m, layout = self._m, self._layout
        if m.offset is None:
            raise _missing(layout, m)
        f = await asyncio.to_thread(_open_checked, layout)
        try:
            pos = self.start
            await asyncio.to_thread(f.seek, m.offset + pos)
            while pos < m.present:
                try:
                    chunk = await asyncio.to_thread(f.read, min(CHUNK_BYTES, m.present - pos))
                except OSError as exc:  # a pulled USB stick: EIO
                    raise TransportError(
                        f"{layout.path}: read failed ({exc.strerror or exc})", url=m.name
                    ) from exc
                if not chunk:
                    raise TransportError(
                        f"{layout.path}: {m.name} cut at byte {pos} while reading", url=m.name
                    )
                pos += len(chunk)
                yield chunk
            if pos < m.size:
                raise _missing(layout, m)
        finally:
            f.close()

    async def close(self) -> None:
        return None


class BundleSource:
    """One bundle file as an :class:`Upstream` (names are the registry paths it holds)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.description = f"bundle {layout.path}"

    @classmethod
    async def open(cls, path: Path) -> BundleSource:
        return cls(await asyncio.to_thread(Layout.from_file, path))

    def member(self, rel: str) -> Member:
        m = self.layout.members.get(rel)
        if m is None:
            raise TransportError(f"{rel}: not in {self.layout.path}", status=404, url=rel)
        return m

    async def get(
        self, rel: str, *, etag: str | None = None, last_modified: str | None = None, max_bytes: int
    ) -> Fetched:
        m = self.member(rel)
        if etag is not None and etag == m.etag and m.complete:
            raise NotModified("not modified", status=304, url=rel)
        if m.size > max_bytes:
            raise TransportError(f"{rel}: more than {max_bytes} bytes", url=rel)
        data = await asyncio.to_thread(_read_member, self.layout, m)
        return Fetched(data, m.etag, None)

    async def stream(self, rel: str, *, offset: int, if_range: str | None) -> Stream:
        m = self.member(rel)
        resume = 0 < offset <= m.present and (if_range is None or if_range == m.etag)
        return _MemberStream(self.layout, m, offset if resume else 0)

    async def close(self) -> None:
        return None


class Shelf:
    """The mirror's upstream: the mounted bundle while an import runs, else the configured one."""

    def __init__(self, inner: Upstream) -> None:
        self.inner = inner
        self.mounted: BundleSource | None = None
        self.description = inner.description

    def mount(self, source: BundleSource | None) -> None:
        """Lend the mirror this bundle (None: give it back its configured upstream)."""
        self.mounted = source
        self.description = source.description if source else self.inner.description

    def _now(self) -> Upstream:
        return self.mounted if self.mounted is not None else self.inner

    async def get(
        self, rel: str, *, etag: str | None = None, last_modified: str | None = None, max_bytes: int
    ) -> Fetched:
        return await self._now().get(rel, etag=etag, last_modified=last_modified, max_bytes=max_bytes)

    async def stream(self, rel: str, *, offset: int, if_range: str | None) -> Stream:
        return await self._now().stream(rel, offset=offset, if_range=if_range)

    async def close(self) -> None:
        await self.inner.close()


class Nowhere:
    """An upstream with nothing in it (an offline import: the bundle is the only source)."""

    description = "no upstream"

    async def get(
        self, rel: str, *, etag: str | None = None, last_modified: str | None = None, max_bytes: int
    ) -> Fetched:
        raise TransportError(f"{rel}: no upstream", status=404, url=rel)

    async def stream(self, rel: str, *, offset: int, if_range: str | None) -> Stream:
        raise TransportError(f"{rel}: no upstream", status=404, url=rel)

    async def close(self) -> None:
        return None
