"""``deploy/site-config.sh`` (run by install.sh): a new site's config has token access and a fresh
site token; an existing config is never touched."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gateway.service import settings as S
from tests.peers import ROOT


def site_config(dest: Path) -> subprocess.CompletedProcess[str]:
    script, template = ROOT / "deploy" / "site-config.sh", ROOT / "config" / "gateway.toml"
    return subprocess.run(
        ["sh", str(script), str(template), str(dest)], capture_output=True, text=True, check=True
    )


def test_a_new_config_gets_token_access_and_its_own_token(tmp_path: Path) -> None:
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    out = site_config(first).stdout
    site_config(second)
    a, b = S.load(first, environ={}), S.load(second, environ={})
    assert a.devices.access == "token" and len(a.devices.site_token) == 48
    assert a.devices.site_token != b.devices.site_token
    assert first.stat().st_mode & 0o777 == 0o640
    assert "Authorization: Bearer" in out and "password" in out and a.devices.site_token not in out
    # Everything else is the reference config, untouched.
    ref = (ROOT / "config" / "gateway.toml").read_text().splitlines()
    mine = first.read_text().splitlines()
    assert [x for x in zip(ref, mine, strict=True) if x[0] != x[1]] == [
        ('access = "open"', 'access = "token"'),
        ('site_token = ""', f'site_token = "{a.devices.site_token}"'),
    ]


def test_an_existing_config_is_never_overwritten(tmp_path: Path) -> None:
    dest = tmp_path / "gateway.toml"
    dest.write_text('site = "mine"\n')
    assert "keeping" in site_config(dest).stdout
    assert dest.read_text() == 'site = "mine"\n'
    assert list(tmp_path.iterdir()) == [dest]
