"""The signed site index: what is accepted, and every way it is refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gateway import registry
from gateway.core.errors import ExpiredError, FormatError, RollbackError, UntrustedError
from gateway.trust.index import TrustedIndex
from gateway.trust.keys import load_trusted_keys
from gateway.trust.state import TrustState
from tests.conftest import Registry

NOW = time.time()


def trusted(reg: Registry, site: str = "test-site") -> TrustedIndex:
    return TrustedIndex(load_trusted_keys([reg.public_key], "test"), site)


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "ed25519"])
def test_published_index_verifies(make_registry, algorithm: str) -> None:
    reg = make_registry(algorithm=algorithm)
    m = reg.publish(b"model-bytes", health={"max_cpu_percent": 80})
    idx = trusted(reg).verify_index(reg.index_bytes(), NOW)
    assert idx.version == 1 and idx.site == "test-site"
    (d,) = idx.deployments
    assert (d.model_id, d.version, d.sha256, d.length) == ("detector", "1.0.0", m["sha256"], 11)
    assert d.health.max_cpu_percent == 80


def test_unsigned_and_unknown_key_and_tampered(make_registry) -> None:
    reg, other = make_registry(), make_registry("other")
    reg.publish(b"x")
    t = trusted(other)
    with pytest.raises(UntrustedError, match="no trusted key"):
        t.verify_index(reg.index_bytes(), NOW)
    doc = json.loads(reg.index_bytes())
    doc["signatures"] = []
    with pytest.raises(UntrustedError, match="unsigned"):
        trusted(reg).verify_index(json.dumps(doc).encode(), NOW)
    doc = json.loads(reg.index_bytes())
    doc["signed"]["deployments"][0]["rollout_percentage"] = 100.0 - 1
    with pytest.raises(UntrustedError, match="does not verify"):
        trusted(reg).verify_index(json.dumps(doc).encode(), NOW)


def test_rollback_and_same_version_other_content(reg: Registry) -> None:
    reg.publish(b"one", version="1.0.0")
    old = reg.index_bytes()
    reg.publish(b"two", version="2.0.0")
    t = trusted(reg)
    t.accept(t.verify_index(reg.index_bytes(), NOW))
    with pytest.raises(RollbackError, match="older"):
        t.verify_index(old, NOW)
    # Same version number, other content, validly signed: a rollback in disguise.
    doc = json.loads(reg.index_bytes())
    doc["signed"]["deployments"].pop()
    resigned = registry.envelope(doc["signed"], registry.load_private_key(reg.private_key))
    with pytest.raises(RollbackError, match="other content"):
        t.verify_index(resigned, NOW)


def test_expired_is_a_freeze(reg: Registry) -> None:
    reg.publish(b"x", expires_s=60, now=NOW - 120)
    with pytest.raises(ExpiredError):
        trusted(reg).verify_index(reg.index_bytes(), NOW)


def test_other_site_refused_fleet_accepted(make_registry) -> None:
    reg = make_registry(site="plant-1")
    reg.publish(b"x")
    with pytest.raises(UntrustedError, match="site 'plant-1'"):
        trusted(reg, site="plant-2").verify_index(reg.index_bytes(), NOW)
    fleet = make_registry("fleet", site=None)
    fleet.publish(b"x")
    assert trusted(fleet, site="anywhere").verify_index(fleet.index_bytes(), NOW).site == "*"


def test_bad_deployment_dropped_not_the_index(reg: Registry) -> None:
    reg.publish(b"good", version="1.0.0")
    key = registry.load_private_key(reg.private_key)

    def add_bad(signed: dict) -> None:
        signed["deployments"].append({"model_id": "x", "version": "../../etc"})

    registry.write_index(reg.root, reg.site, key, add_bad)
    idx = trusted(reg).verify_index(reg.index_bytes(), NOW)
    assert [d.version for d in idx.deployments] == ["1.0.0"]
    assert "version" in idx.rejected[0][1]


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b'{"signed": 1}', b"\xff\xfe"])
def test_garbage_is_format_error(reg: Registry, raw: bytes) -> None:
    with pytest.raises((FormatError, UntrustedError)):
        trusted(reg).verify_index(raw, NOW)


def test_key_rotation_through_signed_key_list(make_registry) -> None:
    root = make_registry("root")
    online = make_registry("online")
    online.publish(b"x")
    t = trusted(root)
    with pytest.raises(UntrustedError):
        t.verify_index(online.index_bytes(), NOW)
    path = registry.sign_key_list(online.root, root.private_key, [online.public_key], version=1)
    t.update_key_list(path.read_bytes(), NOW)
    assert t.verify_index(online.index_bytes(), NOW).version == 1
    # A key list signed by the online key itself is not a root's word.
    bogus = registry.sign_key_list(online.root, online.private_key, [online.public_key], version=2)
    with pytest.raises(UntrustedError):
        t.update_key_list(bogus.read_bytes(), NOW)


def test_state_persists_rollback_floor_and_clock_floor(reg: Registry, tmp_path: Path) -> None:
    keys = load_trusted_keys([reg.public_key], "test")
    reg.publish(b"a", version="1.0.0")
    v1 = reg.index_bytes()
    reg.publish(b"b", version="2.0.0", now=NOW)
    st = TrustState(tmp_path / "trust", keys, "test-site", "2026-01-01T00:00:00Z")
    st.accept(st.verify(reg.index_bytes(), NOW), NOW)
    again = TrustState(tmp_path / "trust", keys, "test-site", "2026-01-01T00:00:00Z")
    assert again.load(NOW) is not None and again.trusted.highest_version == 2
    with pytest.raises(RollbackError):
        again.verify(v1, NOW)
    # A box that boots in 1970 judges expiry at the newest signed time it has seen, not at 1970.
    reading = again.clock(0.0)
    assert not reading.trusted and reading.now >= NOW - 1


def test_publish_refuses_key_inside_registry(reg: Registry) -> None:
    inside = reg.root / "private.pem"
    inside.write_bytes(reg.private_key.read_bytes())
    model = reg.key_dir.parent / "m.bin"
    model.write_bytes(b"x")
    from gateway.core.errors import ConfigError

    with pytest.raises(ConfigError, match="outside the registry"):
        registry.publish(reg.root, model, inside, model_id="m", version="1")
