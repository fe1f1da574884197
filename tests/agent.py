"""A device agent written to the reference article's flow, knowing nothing of the gateway.

It is configured only by ``OTA_SERVICE_URL`` (here: ``service_url``), its id, its attributes and
the cloud's public key: poll, download with Range resume, check sha256, verify the detached
signature with the cloud key, switch A/B slots, report events. Tests point it at the gateway.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519


class AgentError(Exception):
    pass


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


@dataclass
class DeviceAgent:
    service_url: str
    device_id: str
    public_key_pem: bytes
    workdir: Path
    attrs: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    model_id: str | None = None
    version: str | None = None
    events: list[str] = field(default_factory=list)
    etag: str | None = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def poll(
        self, s: aiohttp.ClientSession, wait_s: float = 0
    ) -> tuple[int, dict[str, Any] | None, aiohttp.typedefs.CIMultiDictProxy[str]]:
        params = dict(self.attrs)
        if self.model_id:
            params["model_id"] = self.model_id
        if self.version:
            params["model_version"] = self.version
        if wait_s:
            params["wait"] = str(wait_s)
        headers = self._headers()
        if self.etag:
            headers["If-None-Match"] = self.etag
        async with s.get(
            f"{self.service_url}/devices/{self.device_id}/updates", params=params, headers=headers
        ) as r:
            body = await r.json() if r.status == 200 else None
            if r.status == 200:
                self.etag = r.headers.get("ETag")
            return r.status, body, r.headers

    async def download(
        self, s: aiohttp.ClientSession, url: str, dest: Path, stop_after: int | None = None
    ) -> None:
        """Download to ``dest``, resuming from what is there (Range + If-Range on the ETag)."""
        have = _size(dest)
        headers = self._headers()
        etag_file = dest.with_suffix(dest.suffix + ".etag")
        if have and etag_file.exists():
            headers["Range"] = f"bytes={have}-"
            headers["If-Range"] = etag_file.read_text()
        async with s.get(url, headers=headers) as r:
            if r.status == 200:
                have = 0
            elif r.status != 206:
                raise AgentError(f"download {url}: HTTP {r.status}")
            if etag := r.headers.get("ETag"):
                etag_file.write_text(etag)
            with dest.open("r+b" if have else "wb") as f:
                f.seek(have)
                got = 0
                async for chunk in r.content.iter_chunked(64 << 10):
                    f.write(chunk)
                    got += len(chunk)
                    if stop_after is not None and got >= stop_after:
                        return  # the link dropped: the partial stays for the next try

    def verify(self, data_path: Path, sig: bytes, sha256: str) -> None:
        h = hashlib.sha256()
        with data_path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != sha256:
            raise AgentError("sha256 mismatch")
        key = serialization.load_pem_public_key(self.public_key_pem)
        data = data_path.read_bytes()
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
            elif isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(sig, data)
            else:
                raise AgentError("unsupported key")
        except InvalidSignature as exc:
            raise AgentError("bad signature") from exc

    async def event(
        self, s: aiohttp.ClientSession, name: str, manifest: dict[str, Any], reason: str | None = None
    ) -> int:
        body = {"event": name, "model_id": manifest["model_id"], "version": manifest["version"]}
        if reason:
            body["reason"] = reason
        async with s.post(
            f"{self.service_url}/devices/{self.device_id}/events", json=body, headers=self._headers()
        ) as r:
            self.events.append(name)
            return r.status

    async def update_once(self, s: aiohttp.ClientSession, interrupt_after: int | None = None) -> bool:
        """One full cycle; True when a new model was activated."""
        status, manifest, _ = await self.poll(s)
        if status != 200 or manifest is None:
            return False
        slot = self.workdir / f"{self.device_id}-slot-b.part"
        if interrupt_after is not None:
            await self.download(s, manifest["artifact_url"], slot, stop_after=interrupt_after)
        await self.download(s, manifest["artifact_url"], slot)
        await self.event(s, "downloaded", manifest)
        async with s.get(manifest["signature_url"], headers=self._headers()) as r:
            sig = await r.read()
        try:
            self.verify(slot, sig, manifest["sha256"])
        except AgentError as exc:
            await self.event(s, "failed", manifest, str(exc))
            slot.unlink()
            raise
        await self.event(s, "verified", manifest)
        slot.replace(self.workdir / f"{self.device_id}-active.bin")  # the A/B switch
        self.model_id, self.version = manifest["model_id"], manifest["version"]
        await self.event(s, "activated", manifest)
        await self.event(s, "healthy", manifest)
        return True
