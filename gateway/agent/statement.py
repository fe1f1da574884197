"""The signed statement a device checks before it installs: which model, which version, which
length and sha256 (DESIGN.md, trust model: a signature binds meaning, not only bytes).

The seed's contract (sha256 plus a detached signature over the file) says nothing of which model
or version a file is: a hostile gateway could offer the genuine, cloud-signed ``detector 1.0.0``
file as ``detector 2.0.0``. Beside that signature the registry puts a small DSSE envelope
(https://github.com/secure-systems-lab/dsse, the in-toto signing envelope) in every manifest, under
``statement``, signed with the same key as the file::

    {"payloadType": "application/vnd.ota-gateway.statement+json",
     "payload": base64({"_type": "ota-statement", "model_id", "version", "length", "sha256",
                        "rollback_target": false}),
     "signatures": [{"keyid": "<hex>", "sig": base64(sign(PAE(payloadType, payload)))}]}

:func:`check` refuses a manifest whose statement does not verify with the cloud's key, names
another model, version, length or sha256, or, when the agent requires statements, is missing;
and a version lower than the one running, unless the statement says it is a rollback target or
the device's other slot already holds exactly that file (it verified it before: the gateway's
own rollback). The format is :mod:`gateway.core.statement`, shared with the registry that signs
it and the gateway that checks it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from firmware_compat.version import try_version
from gateway.agent.errors import VerifyError
from gateway.agent.slots import SlotInfo
from gateway.agent.verify import PublicKey
from gateway.core.statement import decode, mismatch


def _verified(envelope: Any, key: PublicKey) -> dict[str, Any]:
    """The statement's fields, once a signature by ``key`` verifies over it."""
    try:
        signed, sigs, fields = decode(envelope)
    except ValueError as exc:
        raise VerifyError(f"statement: {exc}") from exc
    for _keyid, sig in sigs:
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(sig, signed, ec.ECDSA(hashes.SHA256()))
            else:
                key.verify(sig, signed)
        except InvalidSignature:
            continue
        return fields
    raise VerifyError("statement: not signed by the cloud's key")


def _order(version: str) -> Any:
    parsed = try_version(version)
    return parsed.sort_key() if parsed is not None else None


def check(
    manifest: Mapping[str, Any],
    key: PublicKey,
    current: SlotInfo | None,
    previous: SlotInfo | None,
    *,
    required: bool,
) -> None:
    """Raise :class:`VerifyError` with the reason unless the manifest may be installed."""
    envelope = manifest.get("statement")
    if envelope is None:
        if required:
            raise VerifyError("no signed statement in the manifest (this device requires one)")
        return
    fields = _verified(envelope, key)
    why = mismatch(fields, manifest)
    if why is not None:
        raise VerifyError(why)
    if current is None or current.model_id != fields["model_id"]:
        return
    new, running = _order(str(fields["version"])), _order(current.version)
    if new is None or running is None or new >= running:
        return
    if fields.get("rollback_target") or (previous is not None and previous.sha256 == fields["sha256"]):
        return
    raise VerifyError(
        f"{fields['version']} is lower than the running {current.version} and not a signed rollback target"
    )
