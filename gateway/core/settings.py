"""The settings tree: one frozen dataclass per section, each field with its default and, in
``metadata``, what a valid value looks like. Pure values: :mod:`gateway.service.settings` loads them
from the TOML file, the environment and the command line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from gateway.core.drift_settings import DriftSettings
from gateway.core.manifest import valid_id
from gateway.core.samples.settings import SamplesSettings
from gateway.core.schedule import Schedule
from gateway.core.setting_rules import (
    FAULT_PLAN,
    FRACTION,
    HOSTPORT,
    MQTT_URL_OR_EMPTY,
    NON_NEGATIVE,
    POSITIVE,
    SHARE_NAME,
    TRUST_FORMAT,
    URL_OR_EMPTY,
    check,
    choice,
)


@dataclass(frozen=True)
class HttpSettings:
    """The device-facing HTTP(S) server."""

    listen: str = field(default="0.0.0.0:8080", metadata=HOSTPORT)
    tls_cert: str = ""  # PEM certificate chain; with tls_key, serves HTTPS
    tls_key: str = ""
    client_ca: str = ""  # PEM CA that signs device certificates (mTLS)
    public_url: str = field(default="", metadata=URL_OR_EMPTY)  # how devices reach us
    max_body_bytes: int = field(default=1 << 20, metadata=POSITIVE)
    # open connections per listener (device API; the operator API gets at most 1024 of them);
    # past it a new connection is closed at once with a 503
    max_connections: int = field(default=10_000, metadata=POSITIVE)
    header_timeout_s: float = field(default=10.0, metadata=POSITIVE)  # to finish a request head
    idle_timeout_s: float = field(default=75.0, metadata=POSITIVE)  # idle keep-alive connection


def _child_token_ok(entry: str) -> bool:
    site, sep, secret = entry.partition("=")
    return bool(sep) and valid_id(site) and len(secret) >= 16


@dataclass(frozen=True)
class TrustSettings:
    """Which cloud keys we believe, and how far we trust our own clock."""

    trusted_keys: tuple[str, ...] = ()  # PEM public key files
    # A time the gateway knows has passed (it was built after it): a clock reading earlier than
    # this is plainly wrong. The persisted high-water mark of signed index times raises it further.
    min_valid_time: str = "2026-01-01T00:00:00Z"
    # How far a signed index's ``issued`` may lie ahead of a trusted local clock: further is refused
    # (a cloud with a wrong clock), and the clock floor never rises past local time plus this.
    max_future_skew_s: float = field(default=86400.0, metadata=POSITIVE)
    # What the upstream publishes and the site verifies: "index" (the signed site index and key
    # list) or "tuf" (a TUF repository, verified with python-tuf: thresholds, delegations, rotation).
    format: str = field(default="index", metadata=TRUST_FORMAT)
    tuf_root: str = ""  # "tuf": the trusted root.json the chain starts from (the registry's 1.root.json)
    tuf_metadata: str = (
        "metadata"  # "tuf": the metadata folder under mirror.upstream ("tuf/metadata" on a parent gateway)
    )


@dataclass(frozen=True)
class MirrorSettings:
    """Where the cloud registry is and how politely we fetch from it."""

    upstream: str = "registry"  # URL (http/https/file) or a folder path
    poll_interval_s: float = field(default=60.0, metadata=POSITIVE)
    poll_jitter: float = field(default=0.2, metadata=FRACTION)
    bandwidth_bytes_per_s: int = field(default=0, metadata=NON_NEGATIVE)  # 0: no cap
    ca_bundle: str = ""  # PEM bundle; default: the system CA store
    # Credentials for an upstream that is a parent gateway (tiers): its device token, sent as
    # ``Authorization: Bearer``, and/or a TLS client certificate its http.client_ca signed.
    token: str = ""
    client_cert: str = ""  # PEM certificate (chain); with client_key
    client_key: str = ""
    # Tiers, on a parent: the child sites whose signed indexes this gateway also mirrors, holds and
    # serves (``/sites/<site>/index.json``) with their artifacts, to its child gateways.
    child_sites: tuple[str, ...] = field(
        default=(),
        metadata=check("site names (letters, digits, '.', '_', '-')", lambda v: all(valid_id(x) for x in v)),
    )
    # Each child gateway's own credential, bound to its site: "<child site>=<secret>" (a secret of
    # at least 16 characters, one per child). Only it may relay that site's uplink records or
    # announce that site as a child gateway; it also reads what a device token may read.
    child_tokens: tuple[str, ...] = field(
        default=(),
        metadata=check(
            '"<child site>=<secret of at least 16 characters>" entries',
            lambda v: all(_child_token_ok(x) for x in v),
        ),
    )
    connect_timeout_s: float = field(default=10.0, metadata=POSITIVE)
    read_timeout_s: float = field(default=30.0, metadata=POSITIVE)
    retry_initial_s: float = field(default=1.0, metadata=POSITIVE)
    retry_max_s: float = field(default=300.0, metadata=POSITIVE)
    progress_log_interval_s: float = field(default=10.0, metadata=POSITIVE)  # a long transfer's log line
    # air-gapped sites: a folder (a USB mount) watched for bundles; empty: only <data>/import/
    import_dir: str = ""
    import_scan_s: float = field(default=2.0, metadata=POSITIVE)
    # time-of-day windows with their own rate (gateway.core.schedule); outside them the cap above
    schedule: Schedule = field(default_factory=Schedule)
    schedule_timezone: str = "local"  # the zone of the windows' times: "local", "UTC" or an IANA name


@dataclass(frozen=True)
class StoreSettings:
    """The verified blob store."""

    quota_bytes: int = field(default=0, metadata=NON_NEGATIVE)  # 0: only the disk limits us
    min_free_bytes: int = field(default=256 << 20, metadata=NON_NEGATIVE)
    scrub_bytes_per_s: int = field(default=1 << 20, metadata=NON_NEGATIVE)  # re-hash pace; 0: off
    scrub_interval_s: float = field(default=86400.0, metadata=POSITIVE)  # between pass starts


@dataclass(frozen=True)
class DeviceSettings:
    """The device API: polls, access control, inventory."""

    poll_interval_s: float = field(default=300.0, metadata=POSITIVE)
    poll_jitter: float = field(default=0.25, metadata=FRACTION)
    max_wait_s: float = field(default=300.0, metadata=POSITIVE)
    access: str = field(default="open", metadata=choice("open", "token", "mtls"))
    site_token: str = ""
    tokens_file: str = ""  # JSON {device_id: token}
    allow_unknown: bool = True
    # open access: a device id is held to the address it first used until silent this long
    open_binding_ttl_s: float = field(default=900.0, metadata=POSITIVE)
    inventory_file: str = ""  # site inventory (JSON), see config/inventory.example.json
    compat_matrix: str = ""  # firmware/model matrix (JSON), see config/compat_matrix.example.json
    max_devices: int = field(default=100_000, metadata=POSITIVE)


@dataclass(frozen=True)
class MqttSettings:
    """The MQTT side: the embedded broker, or the site's own broker as a client (``mode``)."""

    # "embedded": our broker on listen/tls_listen; "external": we are a client of the site's broker
    mode: str = field(default="embedded", metadata=choice("embedded", "external"))
    listen: str = field(default="0.0.0.0:1883", metadata=HOSTPORT)
    tls_listen: str = field(default="", metadata=HOSTPORT)
    lab_mode: bool = False  # allow anonymous clients; never on a production site
    max_packet_bytes: int = field(default=64 << 10, metadata=POSITIVE)
    max_connections: int = field(default=10_000, metadata=POSITIVE)  # authenticated clients
    # sockets that have not authenticated yet (no CONNECT, or TLS handshake); past it the oldest
    # of them is dropped, so silent sockets cannot lock devices out
    max_pending_connections: int = field(default=256, metadata=POSITIVE)
    max_sessions_per_device: int = field(default=4, metadata=POSITIVE)  # persistent sessions
    max_queued_messages: int = field(default=100, metadata=POSITIVE)
    tls_cert: str = ""  # PEM chain for tls_listen; empty: http.tls_cert
    tls_key: str = ""  # empty: http.tls_key
    client_ca: str = ""  # PEM CA of device certificates (mTLS, user = CN); empty: http.client_ca
    connect_timeout_s: float = field(default=10.0, metadata=POSITIVE)
    session_expiry_s: float = field(default=7 * 86400.0, metadata=POSITIVE)
    # mode = "external": the site broker, its TLS CA and our client certificate, our client id
    # (empty: ota-gateway-<site>), a shared-subscription group (empty: a plain subscription), and
    # how many unacknowledged QoS 1 messages it may have in flight to us (MQTT 5 Receive Maximum)
    external_url: str = field(default="", metadata=MQTT_URL_OR_EMPTY)
    external_ca: str = ""
    external_cert: str = ""
    external_key: str = ""
    external_client_id: str = ""
    external_shared_group: str = field(default="", metadata=SHARE_NAME)
    external_receive_max: int = field(
        default=1000, metadata=check("a number from 1 to 65535", lambda v: 1 <= v <= 65535)
    )


@dataclass(frozen=True)
class TelemetrySettings:
    """Metrics aggregation."""

    window_s: float = field(default=60.0, metadata=POSITIVE)
    cohort_attribute: str = "hw"
    # closed windows kept per model version for the dashboard's charts (in memory; 240 one-minute
    # windows are the last four hours)
    history_windows: int = field(default=240, metadata=POSITIVE)


@dataclass(frozen=True)
class UplinkSettings:
    """Reports to the cloud."""

    ingest_url: str = field(default="", metadata=URL_OR_EMPTY)
    ingest_token: str = ""
    mqtt_url: str = field(default="", metadata=MQTT_URL_OR_EMPTY)  # mqtt://user:pass@host:port or mqtts://...
    # records published to mqtt_url before their PUBACKs are in (1: one at a time)
    mqtt_window: int = field(
        default=100, metadata=check("a number from 1 to 65535", lambda v: 1 <= v <= 65535)
    )
    report_interval_s: float = field(default=60.0, metadata=POSITIVE)
    outbox_max_bytes: int = field(default=256 << 20, metadata=POSITIVE)
    # On a parent (tiers): what the records relayed for one child site may hold of the outbox at
    # most; past it (or when the outbox is full) the child is answered 503 with Retry-After, and
    # no local record is ever shed for a relayed one.
    relay_quota_bytes: int = field(default=32 << 20, metadata=POSITIVE)
    outbox_max_age_s: float = field(default=7 * 86400.0, metadata=POSITIVE)
    forward_samples: bool = True  # journal every metrics message durably (before its PUBACK) and send it up


# Every criterion a gate judges (``class:<name>`` and ``expected_class:<name>`` per class); named by
# gates.dry_run and in every decision record.
@dataclass(frozen=True)
class GateSettings:
    """Site canary gates: site overrides that may only tighten the cloud's limits."""

    enabled: bool = True  # off: the cloud's rules alone decide (cohort, percentage, window)
    # a model's first version at this site: "waves" (judged by the criteria that need no baseline)
    # or "open" (the cloud's rules alone)
    first_version: str = field(default="waves", metadata=choice("waves", "open"))
    approve_each_wave: bool = False  # a wave that passed waits for `ota-gateway gate approve`
    # criteria evaluated and recorded, never halting; input_drift by default: the drift watch's alert
    # is not a test at a stated rate, so it halts only where the installer takes it out of this list
    dry_run: tuple[str, ...] = ("input_drift",)
    waves: tuple[float, ...] = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0)
    min_devices_per_wave: int = field(default=2, metadata=POSITIVE)
    # the first wave grows (in rank order, to at most twice its count) until its devices' pooled
    # error rate on the baseline is at least this many times error_rate_rise_max: a wave of quiet
    # cameras cannot show their errors rising past the margin (0: the count alone)
    first_wave_error_level: float = field(default=1.0, metadata=NON_NEGATIVE)
    # a wave advances when every criterion says "no worse" and soak_min_s has passed; still
    # undecided at soak_max_s, it waits for a person (`ota-gateway gate approve`)
    soak_min_s: float = field(default=300.0, metadata=NON_NEGATIVE)
    soak_max_s: float = field(default=14_400.0, metadata=POSITIVE)
    # the chance that a candidate no worse than its margins is halted, over its whole rollout
    # (every criterion, wave and look): the tests' stated rate
    false_halt_rate: float = field(default=0.05, metadata=FRACTION)
    # the evidence a criterion needs to say "no worse than its margin" (a risk, per criterion)
    no_worse_risk: float = field(default=0.2, metadata=FRACTION)
    # how far back a device's own level on the baseline looks (a half-life of its windows)
    reference_half_life_s: float = field(default=21_600.0, metadata=POSITIVE)
    # a new gate waits at most this for its devices' levels on the baseline (a fresh gateway)
    reference_wait_s: float = field(default=900.0, metadata=NON_NEGATIVE)
    wave_order: str = ""  # attribute to order waves by, e.g. "hw" or "line"
    shadow: bool = False  # run every candidate in shadow on the first wave's devices first
    warmup_share: float = field(default=0.8, metadata=FRACTION)  # of a wave's devices past warm-up
    # absolute limits: the site may only tighten the manifest's health_checks (0: the manifest's)
    max_cpu_percent: float = field(default=0.0, metadata=NON_NEGATIVE)
    max_ram_percent: float = field(default=0.0, metadata=NON_NEGATIVE)
    max_latency_ms: float = field(default=0.0, metadata=NON_NEGATIVE)
    max_error_rate: float = field(default=0.0, metadata=FRACTION)
    max_temperature_c: float = field(default=85.0, metadata=POSITIVE)
    # relative to the baseline (same cohort, previous stable version, same windows)
    latency_ratio_max: float = field(default=2.0, metadata=POSITIVE)
    error_rate_rise_max: float = field(default=0.01, metadata=FRACTION)
    cpu_rise_max_percent: float = field(default=20.0, metadata=POSITIVE)
    temperature_rise_max_c: float = field(default=10.0, metadata=POSITIVE)
    # behaviour
    class_floor: float = field(default=0.005, metadata=FRACTION)
    class_collapse_ratio: float = field(default=0.2, metadata=FRACTION)
    unknown_rate_max: float = field(default=0.10, metadata=FRACTION)
    confidence_drop_max: float = field(default=0.10, metadata=FRACTION)
    # installation: failed or rolled back (after download) per admitted device of a wave
    install_failure_max: float = field(default=0.2, metadata=FRACTION)
    # silence: a device that ran the candidate and has not been heard for silence_after_s (no
    # metrics, no event) is silent; more than silent_max of the wave's runners silent halts
    silence_after_s: float = field(default=300.0, metadata=POSITIVE)
    silent_max: float = field(default=0.3, metadata=FRACTION)
    # invalid metrics from devices on the candidate: share above the baseline's
    invalid_rise_max: float = field(default=0.05, metadata=FRACTION)
    # shadow stage: the candidate's top-1 agreement with the active model on the same frames, at
    # least this overall and on each class that matters (gates.class_floor of the baseline's
    # detections); judged with the other criteria's statistics, only in the shadow stage
    shadow_agreement_min: float = field(default=0.97, metadata=FRACTION)
    shadow_agreement_class_min: float = field(default=0.90, metadata=FRACTION)
    # no criterion answers on fewer windows of evidence than this
    min_samples: int = field(default=10, metadata=POSITIVE)
    # the site's own metrics kept as a replay trace (``<data>/traces/``, ``ota-gateway gate trace``):
    # at most this many bytes (0: none kept) and this long, the oldest hour dropped first
    trace_max_bytes: int = field(default=256 << 20, metadata=NON_NEGATIVE)
    trace_keep_s: float = field(default=8 * 86400.0, metadata=POSITIVE)


@dataclass(frozen=True)
class OperatorSettings:
    """The operator API and dashboard."""

    listen: str = field(default="127.0.0.1:8081", metadata=HOSTPORT)
    token: str = ""  # required when listen is not loopback
    # Host names (besides IP addresses, localhost and this machine's name) a browser may use to
    # reach the operator API, e.g. a reverse proxy's name; any other Host is refused (DNS rebinding).
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class DiscoverySettings:
    """mDNS advertise and browse."""

    enabled: bool = True
    interfaces: tuple[str, ...] = ()  # addresses or interface names; empty: all non-loopback
    max_devices: int = field(default=10_000, metadata=POSITIVE)


@dataclass(frozen=True)
class DdiSettings:
    """hawkBit DDI on the device port (``/{tenant}/controller/v1/{controllerId}``), for stock
    SWUpdate (suricatta), RAUC (rauc-hawkbit-updater) and Zephyr devices."""

    enabled: bool = False
    tenant: str = field(
        default="DEFAULT",
        metadata=check(
            "a tenant name of letters, digits, '-', '_' or '.'",
            lambda v: re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", v) is not None,
        ),
    )


@dataclass(frozen=True)
class SupervisionSettings:
    """How the long-lived tasks are restarted, and when one that keeps failing makes the gateway
    not ready (``/readyz`` 503, no more systemd watchdog pings: systemd restarts the process)."""

    restart_initial_s: float = field(default=1.0, metadata=POSITIVE)
    restart_max_s: float = field(default=60.0, metadata=POSITIVE)
    failing_after: int = field(default=5, metadata=POSITIVE)  # failures within failing_window_s
    failing_window_s: float = field(default=600.0, metadata=POSITIVE)
    # Tests only: make tasks raise (gateway.core.supervision.FaultPlan), e.g. "seed=7;after=0.2-1.5".
    inject_faults: str = field(default="", metadata=FAULT_PLAN)


@dataclass(frozen=True)
class Settings:
    """The whole configuration tree."""

    site: str = field(
        default="default",
        metadata=check(
            "a site name of letters, digits, '-', '_' or '.'",
            lambda v: re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", v) is not None,
        ),
    )
    data_dir: str = "data"
    log_level: str = field(default="info", metadata=choice("debug", "info", "warning", "error"))
    http: HttpSettings = HttpSettings()
    trust: TrustSettings = TrustSettings()
    mirror: MirrorSettings = MirrorSettings()
    store: StoreSettings = StoreSettings()
    devices: DeviceSettings = DeviceSettings()
    mqtt: MqttSettings = MqttSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    uplink: UplinkSettings = UplinkSettings()
    gates: GateSettings = GateSettings()
    operator: OperatorSettings = OperatorSettings()
    discovery: DiscoverySettings = DiscoverySettings()
    ddi: DdiSettings = DdiSettings()
    supervision: SupervisionSettings = SupervisionSettings()
    drift: DriftSettings = field(default_factory=DriftSettings)
    samples: SamplesSettings = field(default_factory=SamplesSettings)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def gate_step_s(self) -> float:
        """How often the site loop closes metric windows and steps the gates (``gate replay`` steps
        a recorded site at the same pace, so it decides on the same batches of windows)."""
        return min(self.uplink.report_interval_s, self.telemetry.window_s, 5.0)
