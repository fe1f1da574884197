"""The gateway's error tree, split by whose fault it is.

    GatewayError
    ├── ConfigError              a setting is wrong; start-up stops with one line
    ├── RemoteDataError          the upstream (or a device) sent something we refuse
    │   ├── UntrustedError       signature missing, unknown key, bad signature
    │   ├── RollbackError        an index older than the one we hold
    │   ├── ExpiredError         an index past its `expires` (freeze attack)
    │   ├── LengthMismatchError  an artifact longer or shorter than its manifest says
    │   ├── DigestMismatchError  an artifact whose sha256 is not the manifest's
    │   └── FormatError          a document that does not parse as its schema
    ├── TransportError           the uplink failed: connection, timeout, HTTP status
    │   └── NotModified          (not a failure) a conditional request found nothing new
    └── StorageError             the local disk failed us: full, read-only, corrupt
        └── DamagedStateError    a state file we wrote reads back truncated, garbage or mis-shaped

Library exceptions are translated at the seam with ``raise ... from exc`` so callers only ever
catch these. Each carries the facts (path, key, status) a log line or an operator needs.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """A configuration value is wrong: names the file, the key and what was expected."""

    def __init__(self, source: str, key: str, expected: str) -> None:
        self.source = source
        self.key = key
        self.expected = expected
        super().__init__(f"{source}: {key}: expected {expected}")


class RemoteDataError(GatewayError):
    """Data from outside (the registry, a device) is malformed or untrusted."""


class UntrustedError(RemoteDataError):
    """A signature is missing, made by a key we do not trust, or does not verify."""


class RollbackError(RemoteDataError):
    """An index whose version is lower than the highest we have accepted."""


class ExpiredError(RemoteDataError):
    """An index whose `expires` lies in the past: serving it would freeze the site."""


class LengthMismatchError(RemoteDataError):
    """An artifact's byte count differs from the manifest's `length`."""


class DigestMismatchError(RemoteDataError):
    """An artifact's sha256 differs from the manifest's."""


class FormatError(RemoteDataError):
    """A document does not follow its schema; the message says which field and why."""


class TransportError(GatewayError):
    """The network let us down: refused, reset, timed out, or an unexpected HTTP status."""

    def __init__(
        self, message: str, *, status: int | None = None, url: str | None = None, detail: str = ""
    ) -> None:
        self.status = status
        self.url = url
        self.detail = detail  # the peer's own one-line reason, where it gave one
        super().__init__(message)


class NotModified(TransportError):
    """A conditional request found the resource unchanged (HTTP 304): nothing to do."""


class StorageError(GatewayError):
    """The local disk failed: out of space, read-only, or a blob that no longer verifies."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class OutboxFullError(StorageError):
    """A bounded journal refuses more for now (its size, or one sender's quota): retry later.
    Nothing already in it was dropped to make room."""


class DamagedStateError(StorageError):
    """A state file the gateway wrote cannot be read back: truncated, garbage, or the wrong shape.

    Never fatal at start-up: the file is moved aside and the gateway starts in its safest mode."""

    def __init__(self, path: str, problem: str) -> None:
        self.problem = problem
        super().__init__(f"{path}: {problem}", path=path)
