"""A folder upstream (a path or ``file://``): air-gapped sites and USB bundles. It never reads
outside its folder; its validators are made from the file's size and time."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from gateway.core.errors import NotModified, TransportError
from gateway.mirror.upstream import CHUNK_BYTES, Fetched, Stream
from gateway.runtime.tasks import in_thread


def _open_binary(path: Path) -> BinaryIO:
    return path.open("rb")


class _FileStream:
    def __init__(self, path: Path, start: int, total: int, etag: str) -> None:
        self.status = 206 if start else 200
        self.start = start
        self.total: int | None = total
        self.etag: str | None = etag
        self._path = path

    async def chunks(self) -> AsyncIterator[bytes]:
        # Each step finishes in its thread even when the reader is cancelled (``in_thread``): the
        # file is closed after its last read, and a file opened for a cancelled reader is closed.
        f = await in_thread(_open_binary, self._path, discard=lambda f: f.close())
        try:
            await in_thread(f.seek, self.start)
            while chunk := await in_thread(f.read, CHUNK_BYTES):
                yield chunk
        finally:
            f.close()

    async def close(self) -> None:
        return None


class DirUpstream:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = str(root)

    def _path(self, rel: str) -> Path:
        if urlparse(rel).scheme:
            raise TransportError(f"{rel}: a folder upstream serves relative paths only", url=rel)
        path = (self.root / unquote(rel)).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise TransportError(f"{rel}: outside the registry folder", status=404, url=rel)
        return path

    @staticmethod
    def _validators(st: os.stat_result) -> tuple[str, str]:
        tag = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}".encode()).hexdigest()[:32]
        return f'"{tag}"', formatdate(st.st_mtime, usegmt=True)

    async def get(
        self, rel: str, *, etag: str | None = None, last_modified: str | None = None, max_bytes: int
    ) -> Fetched:
        path = self._path(rel)

        def read() -> Fetched:
            try:
                st = path.stat()
            except FileNotFoundError as exc:
                raise TransportError(f"{path}: not found", status=404, url=str(path)) from exc
            tag, modified = self._validators(st)
            if etag == tag:
                raise NotModified("not modified", status=304, url=str(path))
            if st.st_size > max_bytes:
                raise TransportError(f"{path}: more than {max_bytes} bytes", url=str(path))
            return Fetched(path.read_bytes()[: max_bytes + 1], tag, modified)

        try:
            return await asyncio.to_thread(read)
        except OSError as exc:
            raise TransportError(f"{path}: {exc.strerror}", url=str(path)) from exc

    async def stream(self, rel: str, *, offset: int, if_range: str | None) -> Stream:
        path = self._path(rel)
        try:
            st = await asyncio.to_thread(path.stat)
        except FileNotFoundError as exc:
            raise TransportError(f"{path}: not found", status=404, url=str(path)) from exc
        except OSError as exc:
            raise TransportError(f"{path}: {exc.strerror}", url=str(path)) from exc
        tag, _ = self._validators(st)
        start = offset if (offset and (if_range is None or if_range == tag) and offset <= st.st_size) else 0
        return _FileStream(path, start, st.st_size, tag)

    async def close(self) -> None:
        return None
