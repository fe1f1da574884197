"""Settings: defaults, file < env < command line, and one clear line for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from gateway.service import settings as S


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gateway.toml"
    p.write_text(text)
    return p


def test_defaults_need_no_file() -> None:
    s = S.load(None, environ={})
    assert s.site == "default"
    assert s.http.listen == "0.0.0.0:8080"
    assert s.gates.waves[-1] == 100


def test_precedence_file_env_cli(tmp_path: Path) -> None:
    f = write(tmp_path, 'site = "file"\n[mirror]\npoll_interval_s = 5\nupstream = "http://a/"\n')
    s = S.load(f, environ={"OTA_GATEWAY_SITE": "env", "OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "7"})
    assert (s.site, s.mirror.poll_interval_s, s.mirror.upstream) == ("env", 7.0, "http://a/")
    s = S.load(f, environ={"OTA_GATEWAY_SITE": "env"}, overrides={"site": "cli"})
    assert s.site == "cli"


@pytest.mark.parametrize(
    ("text", "key", "expect"),
    [
        ("[mirror]\npoll_interval_s = -1\n", "mirror.poll_interval_s", "greater than 0"),
        ('[mirror]\npoll_interval_s = "x"\n', "mirror.poll_interval_s", "a number"),
        ("[mirorr]\n", "mirorr", "a known key"),
        ('[http]\nlisten = "nope"\n', "http.listen", "HOST:PORT"),
        ('[devices]\naccess = "maybe"\n', "devices.access", "one of"),
        ("[trust]\ntrusted_keys = [1]\n", "trust.trusted_keys[0]", "a string"),
        ("site = \n", "(syntax)", "valid TOML"),
        ('[operator]\nlisten = "0.0.0.0:8081"\n', "operator.token", "loopback"),
        ("[gates]\nwaves = [5, 1, 100]\n", "gates.waves", "increasing"),
        ('[devices]\naccess = "token"\n', "devices.access", "site_token"),
        ("mirror = 3\n", "mirror", "table"),
        ('[mirror]\nchild_tokens = ["line-1"]\n', "mirror.child_tokens", "<child site>=<secret"),
        ('[mirror]\nchild_tokens = ["line-1=short"]\n', "mirror.child_tokens", "at least 16"),
        (
            '[mirror]\nchild_tokens = ["line-1=0123456789abcdef"]\n',
            "mirror.child_tokens",
            "mirror.child_sites",
        ),
        (
            '[mirror]\nchild_sites = ["a", "b"]\nchild_tokens = ["a=0123456789abcdef", "b=0123456789abcdef"]\n',
            "mirror.child_tokens",
            "its own secret",
        ),
        ("[uplink]\nrelay_quota_bytes = 0\n", "uplink.relay_quota_bytes", "greater than 0"),
        ("[drift]\nalert_at = -1\n", "drift.alert_at", "greater than 0"),
        ("[drift]\nalert_windows = 0\n", "drift.alert_windows", "whole number of at least 1"),
        ("[drift]\npast_days = 30\n", "drift.past_days", "from 1 to 14"),
        ("[drift]\nslot_s = 7000.0\n", "drift.slot_s", "dividing drift.day_s evenly"),
        ("[drift]\nwindow_s = 7200.0\n", "drift.slot_s", "from drift.window_s"),
        ('[drift]\nenabled = "yes"\n', "drift.enabled", "true or false"),
    ],
)
def test_bad_file_names_file_key_and_expectation(tmp_path: Path, text: str, key: str, expect: str) -> None:
    f = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        S.load(f, environ={})
    line = str(err.value)
    assert "\n" not in line
    assert str(f) in line or "configuration" in line
    assert key in line and expect in line


def test_bad_env_names_the_environment(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"environment.*mirror.poll_interval_s"):
        S.load(None, environ={"OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0"})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="existing, readable TOML file"):
        S.load(tmp_path / "nope.toml", environ={})


def test_reference_config_shows_every_default() -> None:
    """Its header says every key is shown with its default: a site that copies it gets the defaults
    (the gates' min_devices_per_wave and soak_min_s once kept the values of before they changed)."""
    ref = Path(__file__).parents[2] / "config" / "gateway.toml"
    shown, default = S.as_dict(S.load(ref, environ={})), S.as_dict(Settings())
    for section, values in shown.items():
        if isinstance(values, dict):
            for key, value in values.items():
                assert value == default[section][key], f"{section}.{key}"
        else:
            assert values == default[section], section


def test_reference_config_is_valid_and_complete() -> None:
    """config/gateway.toml documents every key, and loads as-is."""
    ref = Path(__file__).parents[2] / "config" / "gateway.toml"
    s = S.load(ref, environ={})
    text = ref.read_text()
    for section, values in S.as_dict(s).items():
        if isinstance(values, dict):
            assert f"[{section}]" in text, section
            for key in values:
                assert f"{key} =" in text or f"# {key} =" in text, f"{section}.{key}"
        else:
            assert f"{section} =" in text, section
