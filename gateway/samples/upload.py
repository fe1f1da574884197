"""Blobs to the upload server: ``PUT <samples.upload_url>/<sha256>`` with the site's credential.

Content-addressed, so a PUT is idempotent: sent again after a crash or a lost answer it names and
writes the same bytes (any WebDAV-style server takes it: nginx with ``dav_methods PUT``, S3 behind
a presigning proxy). A 2xx means the blob is on the server. A network failure, a 5xx, or a 4xx that
means a wrong URL or token or "come back later" (the uplink's :data:`RETRY_4XX`) raises
:class:`TransportError`: the desk keeps the sample and tries again later. Any other 4xx (413 too
large, 400, 415, ...) refuses this blob for good: :class:`UploadRefused`, so one blob the server
will never take cannot block the samples behind it.
"""

from __future__ import annotations

import ssl

import aiohttp

from gateway.core.errors import TransportError
from gateway.uplink.sinks import RETRY_4XX


class UploadRefused(TransportError):
    """The upload server refused this blob for good (a 4xx that is not in RETRY_4XX)."""


class BlobUploader:
    def __init__(self, url: str, token: str, *, timeout_s: float, ca_bundle: str = "") -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.ca_bundle = ca_bundle  # read at the first upload: a constructor reads no file
        self._ssl: ssl.SSLContext | bool = True
        self._session: aiohttp.ClientSession | None = None

    def url_of(self, sha256: str) -> str:
        return f"{self.url}/{sha256}"

    async def put(self, sha256: str, data: bytes, content_type: str) -> None:
        if self._session is None:
            if self.ca_bundle:
                self._ssl = ssl.create_default_context(cafile=self.ca_bundle)
            self._session = aiohttp.ClientSession(timeout=self.timeout, trust_env=True)
        url = self.url_of(sha256)
        headers = {"Content-Type": content_type}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            async with self._session.put(url, data=data, headers=headers, ssl=self._ssl) as r:
                text = (await r.read())[:200].decode("utf-8", errors="replace")
                if 400 <= r.status < 500 and r.status not in RETRY_4XX:
                    raise UploadRefused(
                        f"sample upload {url}: HTTP {r.status} {text}", status=r.status, url=url
                    )
                if not 200 <= r.status < 300:
                    raise TransportError(
                        f"sample upload {url}: HTTP {r.status} {text}", status=r.status, url=url
                    )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(f"sample upload {url}: {type(exc).__name__}: {exc}", url=url) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
