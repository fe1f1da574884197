"""``ota-gateway device``: the reference device agent, for a device or a bench (see
:mod:`gateway.agent.cli`; also ``python -m gateway.agent``)."""

from __future__ import annotations

from typing import Any

from gateway.agent.cli import register_with


def register(sub: Any) -> None:
    register_with(sub)
