"""A small hawkBit DDI client for the tests, speaking as suricatta does (same URLs, same bodies),
for stories with many devices where running one ``swupdate`` per device would be too heavy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp


def feedback_body(action: str, execution: str, finished: str, *details: str) -> dict[str, Any]:
    return {
        "id": int(action),
        "time": "20261206T000000",
        "status": {"result": {"progress": {"cnt": 0, "of": 1}, "finished": finished},
                   "execution": execution, "details": list(details)},
    }  # fmt: skip


@dataclass
class DdiDevice:
    http: aiohttp.ClientSession
    base: str  # the gateway's URL
    device_id: str
    token: str | None = None
    tenant: str = "DEFAULT"
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def controller(self) -> str:
        return f"{self.base}/{self.tenant}/controller/v1/{self.device_id}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"TargetToken {self.token}"} if self.token else {}

    async def get_json(self, url: str) -> tuple[int, Any]:
        async with self.http.get(url, headers=self.headers) as r:
            return r.status, (await r.json() if r.status == 200 else await r.text())

    async def poll(self) -> dict[str, Any]:
        """The base poll; sends configData when the gateway asks for it, as suricatta does."""
        status, doc = await self.get_json(self.controller)
        assert status == 200, doc
        if "configData" in doc.get("_links", {}):
            body = {"id": "", "time": "20261206T000000", "status": {"result": {"finished": "success"},
                    "execution": "closed", "details": []}, "data": self.attrs, "mode": "merge"}  # fmt: skip
            async with self.http.put(
                doc["_links"]["configData"]["href"], json=body, headers=self.headers
            ) as r:
                assert r.status == 200, await r.text()
        return dict(doc)

    async def feedback(self, url: str, action: str, execution: str, finished: str, *details: str) -> int:
        async with self.http.post(
            url, json=feedback_body(action, execution, finished, *details), headers=self.headers
        ) as r:
            return r.status

    async def download(self, deployment: dict[str, Any]) -> bytes:
        (chunk,) = deployment["deployment"]["chunks"]
        (art,) = chunk["artifacts"]
        async with self.http.get(art["_links"]["download-http"]["href"], headers=self.headers) as r:
            assert r.status == 200
            return await r.read()
