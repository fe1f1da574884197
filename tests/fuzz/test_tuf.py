"""Fuzz the TUF side and the signed statement where they meet untrusted bytes: a TUF set fed
mutated metadata (roots, timestamps, snapshots, roles) and a statement envelope of any shape let
only their documented errors escape (``RemoteDataError``; ``ValueError`` from the pure decoder;
``VerifyError`` at the device), and what they accept is what was signed."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from tuf.api.metadata import Metadata

from gateway import registry
from gateway.agent import statement as device_statement
from gateway.agent.errors import VerifyError
from gateway.agent.verify import load_public_key
from gateway.core import statement as core_statement
from gateway.core.errors import RemoteDataError
from gateway.trust.tuf import TufSet
from tests.fuzz.profile import FUZZ
from tests.fuzz.strategies import junk
from tests.registry.tufkit import make_tuf_registry


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A real TUF registry's metadata files, by name."""
    treg = make_tuf_registry(tmp_path_factory.mktemp("tuf"))
    treg.delegate("detector", "a")
    treg.publish(b"model" * 100, "detector", "1.0.0", "a")
    return {p.name: p.read_bytes() for p in (treg.root / "metadata").iterdir()}


def _mutate(doc: Any, path: list[Any], value: Any) -> Any:
    """``doc`` with the node at ``path`` (as far as it leads) replaced by ``value``."""
    if not path or not isinstance(doc, dict | list) or not doc:
        return value
    if isinstance(doc, dict):
        key = sorted(doc)[path[0] % len(doc)]
        return {**doc, key: _mutate(doc[key], path[1:], value)}
    i = path[0] % len(doc)
    return [*doc[:i], _mutate(doc[i], path[1:], value), *doc[i + 1 :]]


def _current(repo: dict[str, bytes]) -> dict[str, str]:
    """The file each stage reads: the next root (none held: a made-up one), the timestamp, and the
    snapshot and roles of the versions the chain names."""
    snap = json.loads(repo["timestamp.json"])["signed"]["meta"]["snapshot.json"]["version"]
    meta = json.loads(repo[f"{snap}.snapshot.json"])["signed"]["meta"]
    roles = {name[: -len(".json")]: f"{m['version']}.{name}" for name, m in meta.items()}
    return {
        "root": "2.root.json",
        "timestamp": "timestamp.json",
        "snapshot": f"{snap}.snapshot.json",
        **roles,
    }


mutations = st.tuples(
    st.lists(st.integers(0, 50), max_size=6), st.one_of(junk, st.integers(), st.text(max_size=20))
)


def _feed(repo: dict[str, bytes], stage: str, data: bytes) -> TufSet:
    s = TufSet(repo["1.root.json"], time.time(), "site-1")
    if stage == "root":
        s.root(data)
        return s
    s.timestamp(data if stage == "timestamp" else repo["timestamp.json"])
    name, _ = s.snapshot_name()
    s.snapshot(data if stage == "snapshot" else repo[name], held=False)
    for role, delegator in s.roles():
        s.targets(role, delegator, data if stage == role else repo[s.role_name(role)[0]], held=False)
    for role, delegator in s.roles():
        s.targets(role, delegator, data if stage == role else repo[s.role_name(role)[0]], held=False)
    return s


@example(stage="timestamp", m=([1, 39], None), raw=False)  # "spec_version": null, read as the default
@given(
    stage=st.sampled_from(["root", "timestamp", "snapshot", "targets", "detector"]),
    m=mutations,
    raw=st.booleans(),
)
@FUZZ
def test_tuf_set(cases: Counter[str], repo: dict[str, bytes], stage: str, m: Any, raw: bool) -> None:
    cases["trust.tuf"] += 1
    name = _current(repo)[stage]
    original = repo.get(name, repo["1.root.json"])
    data = (
        json.dumps(_mutate(json.loads(original), *m)).encode() if not raw else original[: len(original) // 2]
    )
    try:
        s = _feed(repo, stage, data)
    except RemoteDataError:
        return
    cases["trust.tuf -> accepted"] += 1
    # Only what was signed passes: the same signed content as python-tuf reads it (a timestamp,
    # which no hash pins, may be re-serialised, carry other signatures beside the threshold, or
    # spell a default as null: python-tuf reads "spec_version": null as its own version).
    assert stage != "root" and Metadata.from_bytes(data).signed == Metadata.from_bytes(original).signed
    s.index()


@given(
    envelope=st.one_of(
        junk,
        st.fixed_dictionaries(
            {
                "payloadType": st.one_of(st.just(core_statement.PAYLOAD_TYPE), junk),
                "payload": junk,
                "signatures": junk,
            }
        ),
    )
)
@FUZZ
def test_statement(cases: Counter[str], signer_key: Path, envelope: Any) -> None:
    cases["statement.decode"] += 1
    try:
        core_statement.decode(envelope)
    except ValueError:
        pass
    key = load_public_key((signer_key / "public.pem").read_bytes())
    manifest = {"model_id": "m", "version": "1", "sha256": "0" * 64, "length": 1, "statement": envelope}
    with pytest.raises(VerifyError):
        device_statement.check(manifest, key, None, None, required=True)


@pytest.fixture(scope="module")
def signer_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("key") / "k"
    registry.keygen(folder)
    return folder


@pytest.mark.parametrize("stage", ["timestamp", "snapshot", "targets", "detector"])
def test_the_genuine_bytes_pass_every_stage(repo: dict[str, bytes], stage: str) -> None:
    """The fuzz above only means something if the unmutated files are taken at every stage."""
    s = _feed(repo, stage, repo[_current(repo)[stage]])
    assert [d.key for d in s.index().deployments] == ["detector@1.0.0"]
