"""amqtt plugins that put the gateway's device rules into the broker.

amqtt's stock plugins do not fit: ``AnonymousAuthPlugin`` lets anyone in as soon as it is loaded
(its ``allow-anonymous: false`` only demands *a* user name, any user name), and the ACL plugin has
no per-client substitution, so "a device may only use ``devices/{its id}/``" cannot be written in
it. These two replace them; the broker loads *only* these (see ``server.amqtt_config``), so no
anonymous plugin is ever in the chain.

- ``DeviceAuthPlugin``: works out which device the peer claims to be (``rules.claimed_identity``)
  and asks the gateway's credential check (the same one the HTTP API uses) whether it may connect.
  It leaves the outcome on the session (``session.attributes``) for the topic plugin and the log.
- ``DeviceTopicPlugin``: publish, subscribe and receive only inside the device's own subtree.

Both are configured through amqtt 0.12's ``plugins`` mapping, whose values are hydrated into each
plugin's ``Config`` dataclass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from gateway.broker import rules

log = logging.getLogger(__name__)

DEVICE_ID = "gateway.device_id"  # session.attributes key: the authenticated device id
REFUSAL = "gateway.refusal"  # session.attributes key: rules.Identity of a refused client

AuthCheck = Callable[[str, str | None, str | None], bool]


def cert_common_name(session: Session) -> str | None:
    """CN of the client certificate the TLS layer verified, or None (no TLS, no certificate)."""
    ssl_object = getattr(session, "ssl_object", None)
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def credentials(session: Session) -> rules.PeerCredentials:
    return rules.PeerCredentials(
        client_id=session.client_id or "",
        username=session.username,
        password=session.password,
        cert_cn=cert_common_name(session),
    )


class DeviceAuthPlugin(BaseAuthPlugin):
    """Per-device credentials: user = device id, password = device token, or the certificate CN."""

    @dataclass
    class Config:
        check: Any = None  # AuthCheck: (device id, password, cert CN) -> allowed (anonymous: None, None)
        lab_mode: bool = False  # anonymous clients in without asking the check

    async def authenticate(self, *, session: Session) -> bool:
        config = self.context.config
        check: AuthCheck | None = config.check
        creds = credentials(session)
        # An anonymous client is named by its client id; whether anonymous clients may connect at
        # all is the credential check's call (lab mode, or devices.access = "open").
        identity = rules.claimed_identity(creds, lab_mode=True)
        anonymous = creds.username is None and creds.password is None and creds.cert_cn is None
        if anonymous and identity.device_id is None:
            identity = rules.Identity(
                None, f"anonymous, and the client id is not a device id: {identity.reason}"
            )
        if identity.device_id is not None:
            if anonymous and config.lab_mode:
                allowed = True
            else:
                try:
                    allowed = bool(
                        check is not None and check(identity.device_id, creds.password, creds.cert_cn)
                    )
                except Exception:  # the credential store failing must refuse, never crash the broker
                    log.exception("credential check failed for %r", identity.device_id)
                    allowed = False
            if allowed:
                session.attributes[DEVICE_ID] = identity.device_id
                return True
            identity = (
                rules.Identity(
                    None, "no credentials (anonymous clients only with open access or in lab mode)"
                )
                if anonymous
                else rules.Identity(
                    None, f"wrong credentials for {identity.device_id!r}", bad_credentials=True
                )
            )
        session.attributes[REFUSAL] = identity
        return False


class DeviceTopicPlugin(BaseTopicPlugin):
    """A device may publish, subscribe and receive only under ``devices/{its id}/``."""

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        device_id = session.attributes.get(DEVICE_ID) if session is not None else None
        if device_id is None or topic is None:
            return False
        if action == Action.PUBLISH:
            return rules.may_publish(device_id, topic)
        if action == Action.SUBSCRIBE:
            return rules.may_subscribe(device_id, topic)
        if action == Action.RECEIVE:
            return rules.may_publish(device_id, topic)  # a topic name it could have published to
        return False
