"""The gateway checks a manifest's signed statement too (``gateway.trust.statement``): a deployment
whose statement is another version's, is signed by an untrusted key, or is not an envelope is dropped
with its reason, the rest of the index standing; a manifest without one passes (old registries)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from gateway import registry
from gateway.trust.index import TrustedIndex
from gateway.trust.keys import keyid, parse_public_key
from tests.conftest import Registry


def _other_statement(reg: Registry, old: dict[str, Any], new: dict[str, Any]) -> None:
    new["statement"] = old["statement"]


CASES: dict[str, tuple[Callable[[Registry, dict[str, Any], dict[str, Any]], None], str]] = {
    "another version's statement": (_other_statement, "statement signed for detector 1.0.0"),
    "not an envelope": (lambda reg, old, new: new.update(statement={"payload": 1}), "payloadType is not"),
    "an untrusted signer": (
        lambda reg, old, new: new.update(
            statement=registry.statement_envelope(
                registry.load_private_key(reg.key_dir.parent / "x" / "private.pem"), new
            )
        ),
        "signed by no trusted key",
    ),
    "no statement (an old registry)": (lambda reg, old, new: new.pop("statement"), ""),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_deployment_whose_statement_does_not_bind_it_is_dropped(reg: Registry, case: str) -> None:
    registry.keygen(reg.key_dir.parent / "x")
    old = reg.publish(os.urandom(500), version="1.0.0")
    new = reg.publish(os.urandom(700), version="2.0.0")
    change, why = CASES[case]
    new = dict(new)
    change(reg, old, new)
    key = registry.load_private_key(reg.private_key)

    def replace(signed: dict[str, Any]) -> None:
        signed["deployments"] = [d if d["version"] != "2.0.0" else new for d in signed["deployments"]]

    registry.write_index(reg.root, reg.site, key, replace)
    pub = parse_public_key(reg.public_key.read_bytes(), "key")
    index = TrustedIndex({keyid(pub): pub}, "test-site").verify_index(reg.index_bytes(), time.time())
    versions = [d.version for d in index.deployments]
    if why:
        assert versions == ["1.0.0"] and len(index.rejected) == 1 and why in index.rejected[0][1]
    else:
        assert versions == ["1.0.0", "2.0.0"] and index.rejected == ()
