"""The signed statement's format (issue 25; :mod:`gateway.agent.statement` has the device's rules):
a DSSE envelope (https://github.com/secure-systems-lab/dsse) binding a model id, version, length
and sha256, which the registry signs into every manifest under ``statement``. Pure values: the
registry signs :func:`pae` of :func:`payload`; the gateway and the device verify a signature over
the same bytes with their own crypto, then compare :func:`mismatch`."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

PAYLOAD_TYPE = "application/vnd.ota-gateway.statement+json"
FIELDS = ("model_id", "version", "length", "sha256")


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the signature covers."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def payload(model_id: str, version: str, length: int, sha256: str, *, rollback_target: bool = False) -> bytes:
    doc = {"_type": "ota-statement", "model_id": model_id, "version": version, "length": length,
           "sha256": sha256, "rollback_target": rollback_target}  # fmt: skip
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode(envelope: Any) -> tuple[bytes, list[tuple[str, bytes]], dict[str, Any]]:
    """(the bytes signatures cover, the (keyid, signature) pairs, the statement's fields);
    ValueError naming what is wrong when it is not a statement envelope."""
    try:
        if envelope.get("payloadType") != PAYLOAD_TYPE:
            raise ValueError(f"payloadType is not {PAYLOAD_TYPE}")
        body = base64.b64decode(envelope["payload"], validate=True)
        sigs = [
            (str(s.get("keyid", "")), base64.b64decode(s["sig"], validate=True))
            for s in envelope["signatures"]
        ]
        fields = json.loads(body)
    except (AttributeError, KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f"not a DSSE envelope ({exc})") from exc
    if not isinstance(fields, dict) or fields.get("_type") != "ota-statement":
        raise ValueError("not an ota-statement")
    return pae(PAYLOAD_TYPE, body), sigs, fields


def mismatch(fields: Mapping[str, Any], manifest: Mapping[str, Any]) -> str | None:
    """Why the manifest is not what the statement binds, or None when it is."""
    for name in FIELDS:
        claimed = manifest.get(name)
        if claimed is None and name == "length":
            continue
        if fields.get(name) != claimed:
            return (
                f"statement signed for {fields.get('model_id')} {fields.get('version')} "
                f"({name} {fields.get(name)!r}), the manifest claims {claimed!r}: refused (disguised file)"
            )
    return None
