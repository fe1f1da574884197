"""A tiny synchronous client for the running gateway's operator API (used by CLI commands)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from gateway.core.errors import TransportError
from gateway.core.settings import Settings, parse_hostport


def call(
    settings: Settings, method: str, path: str, body: dict[str, Any] | None = None, timeout_s: float = 30
) -> Any:
    if not settings.operator.listen:
        raise TransportError("the operator API is off (operator.listen is empty)")
    host, port = parse_hostport(settings.operator.listen)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}{path}"
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if settings.operator.token:
        req.add_header("Authorization", f"Bearer {settings.operator.token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise TransportError(
            f"{method} {url}: HTTP {exc.code}: {detail}", status=exc.code, url=url, detail=detail
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise TransportError(f"cannot reach the gateway at {url}: {exc}", url=url) from exc
