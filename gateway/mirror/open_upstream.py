"""Which upstream the configuration names: HTTP(S), a folder, or none; a typo stops start-up."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from gateway.core.errors import ConfigError
from gateway.core.settings import MirrorSettings
from gateway.mirror.upstream import NoUpstream, Upstream
from gateway.mirror.upstream_dir import DirUpstream
from gateway.mirror.upstream_http import Credentials, HttpUpstream

SCHEMES = ("http", "https", "file")


def make_upstream(
    spec: str,
    *,
    ca_bundle: str = "",
    connect_timeout_s: float = 10,
    read_timeout_s: float = 30,
    credentials: Credentials | None = None,
) -> Upstream:
    """The upstream ``spec`` names; a typo stops start-up (:class:`ConfigError` on ``mirror.upstream``):
    an unknown scheme (``htps://``), an http(s) URL without a host, a folder that does not exist."""
    if not spec:
        return NoUpstream()
    parsed = urlparse(spec)
    if parsed.scheme in ("http", "https"):
        if not parsed.hostname:
            raise ConfigError(
                "configuration", "mirror.upstream", f"a URL with a host name ({spec!r} has none)"
            )
        return HttpUpstream(
            spec,
            ca_bundle=ca_bundle,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            credentials=credentials,
        )
    if parsed.scheme == "file":
        root = Path(unquote(parsed.path))
    elif parsed.scheme or "://" in spec:
        raise ConfigError(
            "configuration",
            "mirror.upstream",
            f"an http://, https:// or file:// URL or a folder path (not the scheme {parsed.scheme or spec!r})",
        )
    else:
        root = Path(spec)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise ConfigError("configuration", "mirror.upstream", f"an existing registry folder ({root} {what})")
    return DirUpstream(root)


def upstream_from(settings: MirrorSettings, *, site: str = "") -> Upstream:
    return make_upstream(
        settings.upstream,
        ca_bundle=settings.ca_bundle,
        connect_timeout_s=settings.connect_timeout_s,
        read_timeout_s=settings.read_timeout_s,
        credentials=Credentials.of(settings, site),
    )
