"""``ota-gateway device``: the reference device agent, for a device or a bench (see
:mod:`gateway.device.cli`; also ``python -m gateway.device``)."""

from __future__ import annotations

from typing import Any

from gateway.device.cli import register_with


def register(sub: Any) -> None:
    register_with(sub)
