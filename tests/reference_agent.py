"""The test suite's reference device agent: the supported one in :mod:`gateway.agent`, in the
layout the older tests read (state in ``<workdir>/<id>-state``, the active model also reachable as
``<workdir>/<id>-active.bin``).

Run as a script it is the agent's command line (``python tests/reference_agent.py --help``); with no
arguments it prints that help.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: this folder is first on sys.path, the repo is not
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from gateway.agent.agent import DeviceAgent as _Agent
from gateway.agent.cli import main
from gateway.agent.errors import AgentError

__all__ = ["AgentError", "DeviceAgent", "main"]


class DeviceAgent(_Agent):
    def __init__(
        self,
        service_url: str,
        device_id: str,
        public_key_pem: bytes,
        workdir: Path,
        attrs: dict[str, str] | None = None,
        token: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(
            service_url,
            device_id,
            public_key_pem,
            Path(workdir) / f"{device_id}-state",
            attrs=dict(attrs or {}),
            token=token,
            **kw,
        )
        self.workdir = Path(workdir)

    async def update_once(
        self, s: aiohttp.ClientSession, interrupt_after: int | None = None, wait_s: float = 0
    ) -> bool:
        changed = await super().update_once(s, interrupt_after, wait_s)
        if changed:
            slots = await self.slots()
            link = self.workdir / f"{self.device_id}-active.bin"
            link.unlink(missing_ok=True)
            link.symlink_to(slots.model_path(slots.current_name()).resolve())
        return changed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] if len(sys.argv) > 1 else ["--help"]))
