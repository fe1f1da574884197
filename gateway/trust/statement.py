"""The gateway's own check of a manifest's signed statement (:mod:`gateway.core.statement`): made
by a key it trusts, and binding the manifest's model, version, length and sha256. A deployment
whose statement does not is dropped with the reason (the rest of the index stands), so a stolen
index key cannot dress an old genuine file as a new version at this site either. A manifest
without a statement passes: registries before statements wrote none. (On a TUF site the target's
threshold-signed ``custom.manifest`` already binds all of this, so only the index checks it.)"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from gateway.core.errors import FormatError, UntrustedError
from gateway.core.statement import decode, mismatch
from gateway.trust.keys import PublicKey, verify_bytes

MAX_REMEMBERED = 20_000


class StatementCheck:
    """Checks statements, remembering the ones already verified: an index that changes one
    deployment of a thousand costs one signature check, not a thousand."""

    def __init__(self) -> None:
        self._verified: set[bytes] = set()

    def check(self, manifest: Mapping[str, Any], keys: Mapping[str, PublicKey], what: str) -> None:
        envelope = manifest.get("statement")
        if envelope is None:
            return
        try:
            signed, sigs, fields = decode(envelope)
        except ValueError as exc:
            raise FormatError(f"{what}.statement: {exc}") from exc
        if not any(self._verify(keys.get(kid), kid, sig, signed) for kid, sig in sigs):
            raise UntrustedError(f"{what}.statement: signed by no trusted key")
        why = mismatch(fields, manifest)
        if why is not None:
            raise UntrustedError(f"{what}: {why}")

    def _verify(self, key: PublicKey | None, kid: str, sig: bytes, signed: bytes) -> bool:
        if key is None:
            return False
        memo = hashlib.sha256(kid.encode() + b"\0" + sig + b"\0" + signed).digest()
        if memo in self._verified:
            return True
        if not verify_bytes(key, sig, signed):
            return False
        if len(self._verified) >= MAX_REMEMBERED:
            self._verified.clear()
        self._verified.add(memo)
        return True
