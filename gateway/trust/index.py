"""Verification of the signed site index and the signed key list: a pure object fed bytes and ``now``.

The envelope (DESIGN.md, trust model)::

    {"signed": {...}, "signatures": [{"keyid": "<hex>", "sig": "<base64>"}]}

``signed`` is covered by its canonical JSON. For a site index it holds ``_type: "site-index"``,
``site`` (a site name, or ``"*"`` for a fleet index), ``version`` (only grows), ``issued`` and
``expires`` (RFC 3339), ``deployments`` (reference manifests) and ``commands`` (``{"<model>@<ver>":
"paused" | "aborted"}``, the coordinator's signed hold/abort).

Keys: the *root* keys come from the site's configuration and never from the upstream. A signed key
list (``_type: "key-list"``, signed by a root key, ``version`` only grows, ``expires``) names the
online keys that may sign indexes; that is how the cloud rotates its signing keys without touching
a thousand sites. An index is accepted when any root or listed key signed it.

Refused, with the reason: no or bad signatures, unknown keys, an index older than the newest one
accepted (rollback), or of the same version with other content, an expired one (freeze), one
issued further ahead of a trusted clock than the allowed skew (a cloud with a wrong clock, see
:mod:`gateway.trust.clock`), one for another site, or one that does not parse. A deployment that does not parse is dropped with its
reason; the rest of the index stands. Nothing here does I/O; :mod:`gateway.trust.state` persists.
(The shape follows python-tuf's ``TrustedMetadataSet``.)
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.errors import ExpiredError, FormatError, RemoteDataError, RollbackError, UntrustedError
from gateway.core.manifest import Command, Deployment, parse_deployment, parse_time
from gateway.trust.canonical import canonical_json
from gateway.trust.clock import ClockReading, check_issued
from gateway.trust.keys import PublicKey, keyid, parse_public_key, verify_bytes
from gateway.trust.statement import StatementCheck

MAX_INDEX_BYTES = 8 << 20
COMMANDS = tuple(Command)


@dataclass(frozen=True)
class SiteIndex:
    version: int
    issued: float | None
    expires: float
    site: str
    deployments: tuple[Deployment, ...]
    rejected: tuple[tuple[str, str], ...]  # (what, why) for deployments dropped
    commands: Mapping[str, str] = field(default_factory=dict)
    signed_by: str = ""
    raw: bytes = field(default=b"", repr=False, compare=False)


@dataclass(frozen=True)
class KeyList:
    version: int
    expires: float
    keys: Mapping[str, PublicKey]
    raw: bytes = field(default=b"", repr=False, compare=False)


def _load_envelope(raw: bytes, what: str) -> tuple[dict[str, Any], list[Any]]:
    if len(raw) > MAX_INDEX_BYTES:
        raise FormatError(f"{what}: {len(raw)} bytes is over the {MAX_INDEX_BYTES} byte bound")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{what}: not JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("signed"), dict):
        raise FormatError(f'{what}: expected an envelope {{"signed": {{...}}, "signatures": [...]}}')
    sigs = doc.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        raise UntrustedError(f"{what}: unsigned")
    return doc["signed"], sigs


def _check_signatures(
    signed: Mapping[str, Any], sigs: list[Any], keys: Mapping[str, PublicKey], what: str
) -> str:
    """Return the keyid of a trusted key whose signature verifies; UntrustedError otherwise."""
    try:
        payload = canonical_json(signed)
    except ValueError as exc:  # NaN or a lone surrogate: nothing anyone could have signed
        raise FormatError(f"{what}: signed part has no canonical JSON form ({exc})") from exc
    known = False
    strangers: list[str] = []  # key ids of signatures by keys we do not trust, for the message
    for entry in sigs:
        if not isinstance(entry, dict):
            continue
        kid, sig_b64 = entry.get("keyid"), entry.get("sig")
        if isinstance(kid, str) and kid not in keys and len(strangers) < 3:
            strangers.append(_shown_keyid(kid))
        if not isinstance(kid, str) or not isinstance(sig_b64, str) or kid not in keys:
            continue
        known = True
        try:
            sig = base64.b64decode(sig_b64, validate=True)
        except (binascii.Error, ValueError):
            continue
        if verify_bytes(keys[kid], sig, payload):
            return kid
    if not known:
        by = f"key id {', '.join(strangers)}" if strangers else "no key id"
        raise UntrustedError(
            f"{what}: signed by {by}: no trusted key (trusted: {', '.join(sorted(keys)) or 'none'}; "
            "add the signer's public key to trust.trusted_keys or the data folder's trusted-keys/)"
        )
    raise UntrustedError(f"{what}: signature does not verify")


def _shown_keyid(kid: str) -> str:
    """A key id from remote data as it may appear in a log line: hex, at most 64 characters."""
    return kid if re.fullmatch(r"[0-9a-f]{1,64}", kid) else f"{kid[:64]!r} (not a key id)"


def _version(signed: Mapping[str, Any], what: str) -> int:
    v = signed.get("version")
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise FormatError(f"{what}: version: expected a whole number of at least 1")
    return v


class TrustedIndex:
    """The index and key list we currently believe, and the rules for replacing them."""

    def __init__(self, root_keys: Mapping[str, PublicKey], site: str, *, highest_version: int = 0) -> None:
        self.root_keys = dict(root_keys)
        self.site = site
        self.highest_version = highest_version
        self.key_list: KeyList | None = None
        self.index: SiteIndex | None = None
        self.statements = StatementCheck()

    def signing_keys(self) -> dict[str, PublicKey]:
        keys = dict(self.root_keys)
        if self.key_list is not None:
            keys.update(self.key_list.keys)
        return keys

    def update_key_list(self, raw: bytes, now: float) -> KeyList:
        what = "key list"
        signed, sigs = _load_envelope(raw, what)
        if signed.get("_type") != "key-list":
            raise FormatError(f"{what}: _type: expected 'key-list'")
        _check_signatures(signed, sigs, self.root_keys, what)
        version = _version(signed, what)
        if self.key_list is not None and version < self.key_list.version:
            raise RollbackError(f"{what}: version {version} is older than {self.key_list.version}")
        expires = parse_time(signed.get("expires"), f"{what}.expires")
        if expires <= now:
            raise ExpiredError(f"{what}: expired at {signed.get('expires')}")
        entries = signed.get("keys")
        if not isinstance(entries, list):
            raise FormatError(f"{what}: keys: expected a list")
        keys: dict[str, PublicKey] = {}
        for i, entry in enumerate(entries):
            pem = entry.get("public_key_pem") if isinstance(entry, dict) else None
            if not isinstance(pem, str):
                raise FormatError(f"{what}: keys[{i}]: expected public_key_pem")
            key = parse_public_key(pem.encode(), f"{what}: keys[{i}]")
            keys[keyid(key)] = key
        self.key_list = KeyList(version=version, expires=expires, keys=keys, raw=raw)
        return self.key_list

    def verify_index(
        self,
        raw: bytes,
        now: float,
        *,
        clock: ClockReading | None = None,
        max_future_skew_s: float | None = None,
    ) -> SiteIndex:
        """Check ``raw`` against everything we trust; does not change state (see :meth:`accept`).

        With ``clock`` and ``max_future_skew_s``, an index issued too far ahead of a trusted clock
        is refused too (:class:`gateway.trust.clock.FutureIssuedError`).
        """
        what = "site index"
        signed, sigs = _load_envelope(raw, what)
        if signed.get("_type", "site-index") != "site-index":
            raise FormatError(f"{what}: _type: expected 'site-index'")
        kid = _check_signatures(signed, sigs, self.signing_keys(), what)
        version = _version(signed, what)
        if version < self.highest_version:
            raise RollbackError(f"{what}: version {version} is older than {self.highest_version} (rollback)")
        if (
            self.index is not None
            and version == self.index.version
            and canonical_json(signed) != canonical_json(json.loads(self.index.raw)["signed"])
        ):
            raise RollbackError(f"{what}: version {version} again, with other content")
        expires = parse_time(signed.get("expires"), f"{what}.expires")
        if expires <= now:
            raise ExpiredError(f"{what}: version {version} expired at {signed.get('expires')}")
        issued = parse_time(signed["issued"], f"{what}.issued") if signed.get("issued") else None
        if clock is not None and max_future_skew_s is not None:
            check_issued(f"{what} version {version}", issued, clock, max_future_skew_s)
        site = signed.get("site", "*")
        if site not in ("*", self.site):
            raise UntrustedError(f"{what}: made for site {site!r}, this is {self.site!r}")
        items = signed.get("deployments", [])
        if not isinstance(items, list):
            raise FormatError(f"{what}: deployments: expected a list")
        deployments: list[Deployment] = []
        rejected: list[tuple[str, str]] = []
        keys = self.signing_keys()
        for i, item in enumerate(items):
            try:
                dep = parse_deployment(item, f"deployments[{i}]")
                self.statements.check(item, keys, dep.key)
                deployments.append(dep)
            except RemoteDataError as exc:
                rejected.append((f"deployments[{i}]", str(exc)))
        commands = signed.get("commands") or {}
        if not isinstance(commands, dict) or any(v not in COMMANDS for v in commands.values()):
            raise FormatError(f"{what}: commands: expected {{'model@version': 'paused' | 'aborted'}}")
        return SiteIndex(
            version=version,
            issued=issued,
            expires=expires,
            site=site,
            deployments=tuple(deployments),
            rejected=tuple(rejected),
            commands=dict(commands),
            signed_by=kid,
            raw=raw,
        )

    def accept(self, index: SiteIndex) -> None:
        self.index = index
        self.highest_version = max(self.highest_version, index.version)
