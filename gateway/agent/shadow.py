"""What a device reports each metrics interval: its active model's figures, and in the gateway's
shadow stage the candidate's figures on the same frames with their agreement.

In the shadow stage (a poll answer with ``"shadow": true``) the candidate sits verified in the
inactive slot and never becomes current (:meth:`gateway.agent.agent.DeviceAgent.shadow`); the
inference app runs both models on each frame and a :data:`ShadowSource` returns both sets of
figures, the candidate's with ``agreement`` (:mod:`gateway.core.agreement`): frames compared, top-1
agreements, per active class, the confusion pairs and the mean confidence difference. The candidate's
message is sent with ``shadow: true`` under its own version, beside the active model's. Each is a
:class:`gateway.core.metrics.MetricsMessage` in the one wire form the gateway's trace uses too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from gateway.agent.slots import SlotInfo
from gateway.core.metrics import MetricsMessage, encode

# the inference app's figures for the model it runs now (None: nothing to report this time)
MetricsSource = Callable[[SlotInfo], Mapping[str, Any] | None]
# both models on the same frames: (the active model's figures, the candidate's with "agreement")
ShadowSource = Callable[[SlotInfo, SlotInfo], tuple[Mapping[str, Any], Mapping[str, Any]] | None]


def _doc(device_id: str, slot: SlotInfo, figures: Mapping[str, Any], shadow: bool) -> dict[str, Any]:
    """The app's figures as one reference message of this device and slot, in its wire form."""
    about = {"device_id": device_id, "timestamp": time.time(), "model_id": slot.model_id}
    if shadow:
        about["shadow"] = True
    return encode(MetricsMessage.of(figures, **about, model_version=slot.version))


def reports(
    device_id: str,
    current: SlotInfo | None,
    shadowing: SlotInfo | None,
    metrics: MetricsSource | None,
    shadow: ShadowSource | None,
) -> list[dict[str, Any]]:
    """The messages of one interval: none without a model or figures; two in the shadow stage."""
    if current is None:
        return []
    if shadowing is not None and shadow is not None:
        both = shadow(current, shadowing)
        if both is not None:
            return [_doc(device_id, current, both[0], False), _doc(device_id, shadowing, both[1], True)]
    figures = metrics(current) if metrics is not None else None
    return [] if figures is None else [_doc(device_id, current, figures, False)]
