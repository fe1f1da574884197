"""Settings loading: defaults < TOML file < ``OTA_GATEWAY_*`` env < command line, into the frozen
tree of :mod:`gateway.core.settings`.

:func:`load` walks the TOML document against that tree, so a typo in a key or a wrong type stops
start-up with one line naming the file, the key and the expectation (``ConfigError``), and nothing
downstream ever sees a half-valid value. Environment overrides use
``OTA_GATEWAY_<SECTION>__<KEY>`` (double underscore between section and key, e.g.
``OTA_GATEWAY_MIRROR__UPSTREAM``); top-level keys are ``OTA_GATEWAY_<KEY>`` (``OTA_GATEWAY_SITE``).
Values are parsed as TOML values when they parse, as strings otherwise. The files a setting names
and the gateway reads at start-up (the compatibility matrix) are read here too.

What it leaves to others: what the settings mean (each component reads its own section).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from firmware_compat.matrix import CompatMatrix, MatrixError, parse_matrix
from gateway.core.errors import ConfigError
from gateway.core.gates.table import BY_NAME as GATE_CRITERIA
from gateway.core.schedule import Schedule, ScheduleSpecError, parse_schedule
from gateway.core.setting_rules import parse_hostport
from gateway.core.settings import Settings

ENV_PREFIX = "OTA_GATEWAY_"
# keys an older config file may still carry, and what took their place
RETIRED = {
    "gates.soak_s": "gates.soak_min_s (renamed: a wave advances once its criteria say 'no worse')",
    "gates.min_devices": "nothing: the gates' decisions now state their error rate (gates.false_halt_rate); remove it",
    "gates.min_inferences": "nothing: the gates judge counts as counts (gates.false_halt_rate); remove it",
    "gates.min_expected_class_count": "nothing: a class's evidence is judged as counts; remove it",
}


def load_matrix(path: Path) -> CompatMatrix:
    """Read a compatibility matrix file; :class:`MatrixError` names the file and the entry."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MatrixError(f"{path}: cannot read ({exc.strerror})") from exc
    return parse_matrix(data, str(path))


def _type_name(tp: Any) -> str:
    if tp is bool:
        return "true or false"
    if tp is int:
        return "a whole number"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if typing.get_origin(tp) is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    return str(tp)


def _coerce(source: str, key: str, tp: Any, value: Any) -> Any:
    """Check ``value`` against the annotated type ``tp``; TOML already gives us typed values."""
    bad = ConfigError(source, key, _type_name(tp))
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, list | tuple):
            raise bad
        inner = typing.get_args(tp)[0]
        return tuple(_coerce(source, f"{key}[{i}]", inner, v) for i, v in enumerate(value))
    raise TypeError(f"unsupported setting type {tp!r}")  # a programming error, not a config one


def _build(cls: type[Any], data: Mapping[str, Any], source: str, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if prefix + key in RETIRED:
            raise ConfigError(source, prefix + key, RETIRED[prefix + key])
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(source, prefix + key, f"a known key (one of: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            continue
        tp = hints[name]
        value = data[name]
        if tp is Schedule:  # a list of tables with keys of its own (``from`` is no Python name)
            try:
                kwargs[name] = parse_schedule(value)
            except ScheduleSpecError as exc:
                raise ConfigError(source, prefix + name + exc.where, exc.expect) from exc
            continue
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(source, prefix + name, f"a [{prefix + name}] table")
            kwargs[name] = _build(tp, value, source, f"{prefix}{name}.")
            continue
        value = _coerce(source, prefix + name, tp, value)
        ok = f.metadata.get("ok")
        if ok is not None and not ok(value):
            raise ConfigError(source, prefix + name, f.metadata["expect"])
        kwargs[name] = value
    return cls(**kwargs)


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``OTA_GATEWAY_*`` variables as a nested dict shaped like the TOML file."""
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _env_value(raw)
    return out


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` into a copy of ``base``."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML config file; a syntax error is a ConfigError naming file and line."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(str(path), "(file)", "an existing, readable TOML file") from exc
    except OSError as exc:
        raise ConfigError(str(path), "(file)", f"a readable file ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "(syntax)", f"valid TOML ({exc})") from exc


def load(
    config_file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings tree; raises ConfigError with the source that holds the bad value.

    ``overrides`` are the command line's values, shaped like the TOML file.
    """
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(environ[ENV_PREFIX + "CONFIG"])
    settings = Settings()
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if config_file is not None:
        layers.append((str(config_file), read_toml(config_file)))
    env = env_overrides(environ)
    if env:
        layers.append(("environment (OTA_GATEWAY_*)", env))
    if overrides:
        layers.append(("command line", overrides))
    # Validate each layer on its own so the error names the source that holds the bad value,
    # then merge them in order of precedence.
    merged: dict[str, Any] = {}
    for source, layer in layers:
        _build(Settings, layer, source, "")
        merged = merge(merged, layer)
    if merged:
        settings = _build(Settings, merged, "configuration", "")
    _cross_check(settings, str(config_file) if config_file else "configuration")
    return settings


def _cross_check(s: Settings, source: str) -> None:
    """Rules that span keys."""
    if bool(s.http.tls_cert) != bool(s.http.tls_key):
        raise ConfigError(source, "http.tls_cert/http.tls_key", "both set (HTTPS) or both empty")
    if s.devices.access == "mtls" and not (s.http.tls_cert and s.http.client_ca):
        raise ConfigError(source, "devices.access", "'mtls' only with http.tls_cert and http.client_ca")
    if s.devices.access == "token" and not (s.devices.site_token or s.devices.tokens_file):
        raise ConfigError(
            source, "devices.access", "'token' only with devices.site_token or devices.tokens_file"
        )
    if s.mqtt.mode == "external" and not s.mqtt.external_url:
        raise ConfigError(
            source, "mqtt.external_url", "the site broker's mqtt:// or mqtts:// URL with mode 'external'"
        )
    if s.operator.listen:
        host, _ = parse_hostport(s.operator.listen)
        if host not in ("127.0.0.1", "::1", "localhost") and not s.operator.token:
            raise ConfigError(source, "operator.token", "a token when operator.listen is not loopback")
    children = [entry.partition("=") for entry in s.mirror.child_tokens]
    if any(site not in s.mirror.child_sites for site, _, _ in children):
        raise ConfigError(source, "mirror.child_tokens", "entries for sites listed in mirror.child_sites")
    if len({site for site, _, _ in children}) != len(children) or len({t for _, _, t in children}) != len(
        children
    ):
        raise ConfigError(source, "mirror.child_tokens", "one entry per child site, each with its own secret")
    if s.mirror.client_key and not s.mirror.client_cert:
        raise ConfigError(source, "mirror.client_key", "set only with mirror.client_cert")
    if s.mirror.schedule_timezone not in ("local", "UTC"):
        try:
            zoneinfo.ZoneInfo(s.mirror.schedule_timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ConfigError(
                source, "mirror.schedule_timezone", "'local', 'UTC' or an IANA zone such as 'Europe/Berlin'"
            ) from exc
    sm = s.samples  # a raw sample travels as base64 in a JSON body, which http.max_body_bytes bounds
    if sm.enabled and sm.raw and (sm.max_bytes + 2) // 3 * 4 + 4096 > s.http.max_body_bytes:
        most = (s.http.max_body_bytes - 4096) // 4 * 3
        raise ConfigError(
            source, "samples.max_bytes", f"at most {most} with http.max_body_bytes = {s.http.max_body_bytes}"
        )
    waves = s.gates.waves
    if (
        not waves
        or any(not 0 < w <= 100 for w in waves)
        or list(waves) != sorted(set(waves))
        or waves[-1] != 100
    ):
        raise ConfigError(source, "gates.waves", "increasing percentages in (0, 100] ending at 100")
    for name in s.gates.dry_run:
        if name.split(":", 1)[0] not in GATE_CRITERIA:
            raise ConfigError(source, "gates.dry_run", "criterion names: " + ", ".join(GATE_CRITERIA))
    d = s.drift
    slots = d.day_s / d.slot_s
    if not d.window_s <= d.slot_s <= d.day_s or abs(slots - round(slots)) > 1e-9:
        raise ConfigError(
            source, "drift.slot_s", "from drift.window_s to drift.day_s, and dividing drift.day_s evenly"
        )


def as_dict(settings: Any) -> Any:
    """The settings tree as plain values (for ``ota-gateway status`` and the dashboard)."""
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        return {f.name: as_dict(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
    if isinstance(settings, tuple):
        return [as_dict(v) for v in settings]
    return settings
