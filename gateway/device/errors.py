"""The agent's errors: one branch of the gateway's tree, so the CLI reports them in one line."""

from __future__ import annotations

from gateway.core.errors import GatewayError


class AgentError(GatewayError):
    """An update could not be carried out: a download, a verification or a slot switch failed."""


class VerifyError(AgentError):
    """The artifact's bytes are not what the cloud signed (sha256 or signature): never installed."""
