"""The agent's errors: one branch of the gateway's tree, so the CLI reports them in one line."""

from __future__ import annotations

from gateway.core.errors import GatewayError


class AgentError(GatewayError):
    """An update could not be carried out: a download, a verification or a slot switch failed."""


class VerifyError(AgentError):
    """The artifact's bytes are not what the cloud signed (sha256 or signature): never installed."""


def problem(exc: BaseException) -> str:
    """One line for a person: an OS error by its words and file, anything else by its message."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__
