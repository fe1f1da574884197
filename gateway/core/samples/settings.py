"""The ``[samples]`` section: samples for retraining, kept at the site and sent under a daily budget."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.core.setting_rules import FRACTION, NON_NEGATIVE, POSITIVE, URL_OR_EMPTY, check


@dataclass(frozen=True)
class SamplesSettings:
    """What devices may offer (``POST /devices/{id}/samples``, MQTT ``devices/{id}/samples``), how
    much of it the site keeps, and how many bytes a day go up to ``upload_url``."""

    enabled: bool = False  # off: the endpoint answers 404 and the MQTT topic is ignored
    raw: bool = False  # accept raw inputs (an image, a window of audio); off: embeddings only
    max_bytes: int = field(default=256 << 10, metadata=POSITIVE)  # one sample's content, at most
    max_embedding_dims: int = field(
        default=4096, metadata=check("a number from 1 to 65536", lambda v: 1 <= v <= 65536)
    )
    # the content bytes sent up to upload_url per UTC day, paced over the day (0: none sent)
    budget_bytes_per_day: int = field(default=64 << 20, metadata=NON_NEGATIVE)
    # a device past this share of the day's budget waits until every other device was served
    device_share_max: float = field(default=0.05, metadata=FRACTION)
    store_max_bytes: int = field(default=512 << 20, metadata=POSITIVE)  # samples kept, waiting
    upload_url: str = field(default="", metadata=URL_OR_EMPTY)  # blobs PUT to <upload_url>/<sha256>
    upload_token: str = ""  # sent as Bearer; empty: uplink.ingest_token (the site's credential)
    choose_interval_s: float = field(default=60.0, metadata=POSITIVE)  # how often the budget chooses
    upload_timeout_s: float = field(default=30.0, metadata=POSITIVE)
