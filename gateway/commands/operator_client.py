"""A tiny synchronous client for the running gateway's operator API (used by CLI commands).

Which gateway: the one named by ``--operator HOST:PORT``; otherwise the one that owns the data
folder (``--data``, or the config file's ``data_dir``), found by the record it keeps there
(:mod:`gateway.runtime.instance`). Before its first request the client asks the gateway who it is
(``GET /status``) and refuses to go on, in one line, when the answer is not the gateway of that
folder (another data id, another site): it never silently shows or changes another gateway.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.core.errors import ConfigError, GatewayError, TransportError
from gateway.core.human import ago, when
from gateway.core.setting_rules import parse_hostport
from gateway.core.settings import Settings
from gateway.runtime import instance
from gateway.service.settings import ENV_PREFIX
from gateway.store.lock import data_dir_in_use


class WrongGatewayError(GatewayError):
    """The gateway that answered is not the one the command was meant for."""


def add_client_args(p: argparse.ArgumentParser) -> None:
    """``--config``, ``--data``, ``--site`` and ``--operator``, as every client command takes them."""
    p.add_argument("--config", help="TOML config file (default: none, or $OTA_GATEWAY_CONFIG)")
    p.add_argument("--data", help="data folder (data_dir) of the gateway to talk to")
    p.add_argument("--site", help="site name (checked against the gateway's)")
    p.add_argument(
        "--operator",
        dest="operator_target",
        metavar="HOST:PORT",
        help="the gateway's operator API (default: found in the data folder)",
    )


@dataclass(frozen=True)
class Target:
    """Where to send requests, and who must answer there."""

    address: str  # HOST:PORT
    token: str
    how: str  # how it was found, for the messages
    data: Path
    data_id: str | None  # the data folder's id the gateway must report (None: not checked)
    site: str | None  # the site it must report (None: not checked)

    @property
    def url(self) -> str:
        return f"http://{self.address}"


def _named_data(args: argparse.Namespace) -> bool:
    """Whether the user named a data folder (not just the default ``data`` of the current folder)."""
    return bool(
        getattr(args, "data", None)
        or getattr(args, "config", None)
        or os.environ.get(ENV_PREFIX + "CONFIG")
        or os.environ.get(ENV_PREFIX + "DATA_DIR")
    )


def _address(value: str, key: str) -> str:
    try:
        host, port = parse_hostport(value)
    except ValueError as exc:
        raise ConfigError("command line", key, "HOST:PORT") from exc
    return instance.connect_address(host, port)


def find(args: argparse.Namespace, settings: Settings) -> Target:
    """The gateway this command talks to (see the module docstring); one-line errors otherwise."""
    data = settings.data_path
    site = getattr(args, "site", None)
    token = settings.operator.token
    given = getattr(args, "operator_target", None)
    if given:
        expect = instance.read_data_id(data) if _named_data(args) else None
        return Target(_address(given, "--operator"), token, "--operator", data, expect, site)
    record = instance.read_record(data)
    running = data_dir_in_use(data)
    if record is not None and not running:
        raise GatewayError(
            f"no gateway runs on {data.resolve()}: the one that recorded itself there (pid {record.pid}, "
            f"started {ago(record.started, time.time())}) is gone; start it, or pass --operator HOST:PORT"
        )
    if record is not None:
        if not record.operator:
            raise GatewayError(
                f"the gateway on {data.resolve()} (pid {record.pid}) has its operator API off (operator.listen)"
            )
        return Target(record.operator, token, f"{data / instance.RECORD_NAME}", data, record.data_id, site)
    if not running:
        raise GatewayError(
            f"no gateway runs on {data.resolve()} (give --data FOLDER of a running gateway, "
            "or --operator HOST:PORT)"
        )
    # A running gateway that wrote no record (one from before records): its configured address,
    # checked against the folder's id all the same.
    if not settings.operator.listen:
        raise GatewayError("the operator API is off (operator.listen is empty)")
    address = _address(settings.operator.listen, "operator.listen")
    return Target(address, token, "operator.listen", data, instance.read_data_id(data), site)


def check(target: Target, status: dict[str, Any]) -> None:
    """Refuse, in one line, a gateway that is not the one ``target`` means."""
    gw = status.get("gateway") or {}
    theirs_id, theirs_site = gw.get("data_id"), gw.get("site")
    wrong = []
    if target.data_id is not None and theirs_id != target.data_id:
        wrong.append(f"data id {theirs_id or 'none'}, not {target.data_id} of {target.data.resolve()}")
    if target.site is not None and theirs_site != target.site:
        wrong.append(f"site {theirs_site!r}, not {target.site!r}")
    if wrong:
        where = gw.get("data_dir") or "another data folder"
        raise WrongGatewayError(
            f"the gateway at {target.address} (found by {target.how}) is another one: {'; '.join(wrong)} "
            f"(it runs on {where}); nothing was done"
        )


def _http(target: Target, method: str, path: str, body: dict[str, Any] | None, timeout_s: float) -> Any:
    url = target.url + path
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if target.token:
        req.add_header("Authorization", f"Bearer {target.token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise TransportError(
            f"{method} {url}: HTTP {exc.code}: {detail}", status=exc.code, url=url, detail=detail
        ) from exc
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or exc.reason
        raise TransportError(
            f"cannot reach the gateway at {target.url} ({target.how}): {reason}", url=url
        ) from exc
    except OSError as exc:
        raise TransportError(
            f"cannot reach the gateway at {target.url} ({target.how}): {exc}", url=url
        ) from exc


class Client:
    """Requests to one gateway, the first of them preceded by the check of who it is."""

    def __init__(self, target: Target, timeout_s: float = 30) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._status: dict[str, Any] | None = None

    def status(self) -> dict[str, Any]:
        """``GET /status``, checked (see :func:`check`)."""
        if self._status is None:
            doc = _http(self.target, "GET", "/status", None, self.timeout_s)
            check(self.target, doc)
            self._status = doc
        return self._status

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        self.status()
        return _http(self.target, method, path, body, self.timeout_s)


def connect(args: argparse.Namespace, settings: Settings) -> Client:
    return Client(find(args, settings))


def stale_note(settings: Settings, read: Path, now: float) -> str | None:
    """When no gateway runs on the data folder, one line that says the files read are what it left
    (as of when ``read`` was last written), and may be stale; None while a gateway runs on it."""
    data = settings.data_path
    if data_dir_in_use(data):
        return None
    try:
        written = f"written {when(read.stat().st_mtime, now)}"
    except OSError:
        written = "never written"
    return (
        f"note: no gateway runs on {data.resolve()}: this is what it left on disk ({read.name} {written}); "
        "it may be stale"
    )


def gateway_runs(args: argparse.Namespace, settings: Settings) -> bool:
    """Whether to go through a gateway (named by ``--operator``, or running on the folder)."""
    return bool(getattr(args, "operator_target", None)) or data_dir_in_use(settings.data_path)
