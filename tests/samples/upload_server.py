"""The upload server of the samples' tests: nginx with ``dav_methods PUT`` (a real WebDAV peer),
storing each PUT under its folder, checking the site's Bearer token."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.peers import Nginx, nginx

TOKEN = "site-upload-token-0123456789"


def dav_server_block(root: Path, token: str = TOKEN, max_body: str = "16m") -> str:
    return f"""
        client_max_body_size {max_body};
        location /samples/ {{
            if ($http_authorization != "Bearer {token}") {{ return 401; }}
            alias {root}/;
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}"""


@contextmanager
def upload_server(root: Path, max_body: str = "16m") -> Iterator[Nginx]:
    root.mkdir(parents=True, exist_ok=True)
    with nginx(server=dav_server_block(root, max_body=max_body)) as server:
        yield server


def stored(root: Path) -> dict[str, bytes]:
    """The blobs on the server by name; each checked against its name (content-addressed)."""
    out = {}
    for p in sorted(root.iterdir()):
        data = p.read_bytes()
        assert hashlib.sha256(data).hexdigest() == p.name, f"{p.name} does not hold its own content"
        out[p.name] = data
    return out


def puts(server: Nginx) -> list[str]:
    """The PUT requests nginx logged (``PUT /samples/<sha> HTTP/1.1 "-" 201 0``)."""
    return [line for line in server.access_log() if line.startswith("PUT ")]
