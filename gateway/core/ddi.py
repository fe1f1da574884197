"""hawkBit's Direct Device Integration (DDI) API as pure values: action ids, the documents a
controller reads, and the feedback and ``configData`` bodies it sends, parsed and bounded.

The documents follow the DDI API of the Eclipse hawkBit project (``/{tenant}/controller/v1/
{controllerId}``: the base poll, ``deploymentBase/{actionId}``, ``cancelAction/{actionId}``, their
``feedback``, ``configData``); where clients differ, SWUpdate's suricatta (``server_hawkbit.c``)
is the reference: it needs ``config.polling.sleep`` as ``HH:MM:SS``, reads ``id`` with
``json_object_get_int`` (a string of digits or a number), requires ``hashes.sha1``, ``size`` and a
``download``/``download-http`` link per artifact, and only installs artifacts named ``*.swu``.

An action is one deployment (or the rollback to one) offered to a device: its id is derived from
what it offers (model, version, digest, rollback or not), so it is the same for every device and
across restarts, and a different offer is a different action.

What a feedback means for the site (:func:`feedback_event`) is one table: ``proceeding`` (and
``scheduled``/``resumed``/``download``/``downloaded``) is ``downloaded``, ``closed`` with
``success`` is ``healthy``, ``closed`` with ``failure`` is ``failed``; ``canceled``/``rejected``
say nothing about the model. The HTTP shell (:mod:`gateway.http.ddi`) does the rest.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import FormatError
from gateway.core.manifest import valid_id

MAX_DETAILS = 64  # suricatta sends up to 48 log lines per feedback
MAX_DETAIL_CHARS = 4096
MAX_REASON_CHARS = 1024  # what a device event's reason may hold (gateway.core.events)
MAX_CONFIG_KEYS = 32
MAX_CONFIG_VALUE_CHARS = 128
ACTION_ID_MAX = (1 << 31) - 1  # suricatta keeps it in a C int
_ID_DIGITS = re.compile(r"^[0-9]{1,10}\Z")
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}\Z")
TENANT = re.compile(r"^[A-Za-z0-9_.\-]{1,64}\Z")


class Execution(enum.StrEnum):
    CLOSED = "closed"
    PROCEEDING = "proceeding"
    CANCELED = "canceled"
    SCHEDULED = "scheduled"
    REJECTED = "rejected"
    RESUMED = "resumed"
    DOWNLOAD = "download"
    DOWNLOADED = "downloaded"


class Finished(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    NONE = "none"


@dataclass(frozen=True)
class Feedback:
    action_id: int
    execution: Execution
    finished: Finished
    details: tuple[str, ...] = ()

    @property
    def closed(self) -> bool:
        """The device is done with the action (whatever the result): it is no longer in progress."""
        return self.execution in (Execution.CLOSED, Execution.CANCELED, Execution.REJECTED)

    def reason(self) -> str | None:
        """The details as one line (a device's text goes into the log: no line breaks or control
        characters), at most what a device event's reason may hold."""
        text = "; ".join(d for d in self.details if d.strip())[:MAX_REASON_CHARS]
        return "".join(c if c.isprintable() else " " for c in text) or None


def action_id(model_id: str, version: str, sha256: str, *, rollback: bool) -> int:
    """The action that offers this artifact (or the rollback to it): stable, 1 .. 2**31-1."""
    seed = f"{model_id}@{version}#{sha256}#{'rollback' if rollback else 'update'}".encode()
    return int.from_bytes(hashlib.sha256(seed).digest()[:4], "big") % ACTION_ID_MAX + 1


def parse_action_id(text: str) -> int:
    """A path's or a body's action id: digits, 1 .. 2**31-1."""
    if not _ID_DIGITS.match(text) or not 1 <= int(text) <= ACTION_ID_MAX:
        raise FormatError("action id: a whole number from 1 to 2147483647")
    return int(text)


def sleep_text(seconds: float) -> str:
    """``config.polling.sleep``: ``HH:MM:SS`` (suricatta parses it with ``strptime("%H:%M:%S")``,
    so hours stay below 24)."""
    s = min(max(round(seconds), 1), 23 * 3600 + 59 * 60 + 59)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def base_document(
    controller: str, sleep_s: float, *, deployment: int | None, cancel: int | None, config_data: bool
) -> dict[str, Any]:
    """The base poll's answer; ``controller`` is the URL of ``/{tenant}/controller/v1/{id}``.
    A cancellation goes first: a client acknowledges it before it is offered anything new."""
    links: dict[str, Any] = {}
    if cancel is not None:
        links["cancelAction"] = {"href": f"{controller}/cancelAction/{cancel}"}
    elif deployment is not None:
        links["deploymentBase"] = {"href": f"{controller}/deploymentBase/{deployment}"}
    if config_data:
        links["configData"] = {"href": f"{controller}/configData"}
    doc: dict[str, Any] = {"config": {"polling": {"sleep": sleep_text(sleep_s)}}}
    if links:
        doc["_links"] = links
    return doc


@dataclass(frozen=True)
class Artifact:
    filename: str
    size: int
    sha256: str
    sha1: str
    md5: str
    url: str  # the gateway's own verified, resumable artifact URL
    md5sum_url: str


def deployment_document(action: int, name: str, version: str, artifact: Artifact) -> dict[str, Any]:
    """``deploymentBase/{actionId}``: one chunk holding the cloud's artifact as it is (never
    re-packed); its link named for the URL's scheme (hawkBit: ``download`` is HTTPS)."""
    https = artifact.url.startswith("https:")
    links = {
        "download" if https else "download-http": {"href": artifact.url},
        "md5sum" if https else "md5sum-http": {"href": artifact.md5sum_url},
    }
    chunk = {
        "part": "os",
        "name": name,
        "version": version,
        "artifacts": [
            {
                "filename": artifact.filename,
                "hashes": {"sha1": artifact.sha1, "md5": artifact.md5, "sha256": artifact.sha256},
                "size": artifact.size,
                "_links": links,
            }
        ],
    }
    return {
        "id": str(action),
        "deployment": {"download": "forced", "update": "forced", "chunks": [chunk]},
    }


def cancel_document(action: int) -> dict[str, Any]:
    return {"id": str(action), "cancelAction": {"stopId": str(action)}}


def _id_of(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise FormatError("id: the action id, a number or a string of digits")
    return parse_action_id(str(value))


def parse_feedback(doc: Any, path_action: int) -> Feedback:
    """A feedback body (``deploymentBase``'s or ``cancelAction``'s). Its ``id``, when given, must
    be the path's action (suricatta's cancel feedback carries the stopId, the same here)."""
    if not isinstance(doc, Mapping):
        raise FormatError("body: expected a JSON object")
    if "id" in doc and _id_of(doc["id"]) != path_action:
        raise FormatError(f"id: {doc['id']!r} is not the action of this URL ({path_action})")
    status = doc.get("status")
    if not isinstance(status, Mapping):
        raise FormatError("status: expected an object with execution and result")
    try:
        execution = Execution(str(status.get("execution")))
    except ValueError:
        raise FormatError("status.execution: one of " + ", ".join(Execution)) from None
    result = status.get("result", {})
    if not isinstance(result, Mapping):
        raise FormatError("status.result: expected an object")
    try:
        finished = Finished(result.get("finished", "none"))
    except ValueError:
        raise FormatError("status.result.finished: one of " + ", ".join(Finished)) from None
    if execution == Execution.CLOSED and finished == Finished.NONE:
        raise FormatError("status: a closed action finished with success or failure")
    details = status.get("details", [])
    if (
        not isinstance(details, list)
        or len(details) > MAX_DETAILS
        or not all(isinstance(d, str) and len(d) <= MAX_DETAIL_CHARS for d in details)
    ):
        raise FormatError(f"status.details: at most {MAX_DETAILS} strings of {MAX_DETAIL_CHARS} characters")
    return Feedback(path_action, execution, finished, tuple(details))


def feedback_event(feedback: Feedback) -> str | None:
    """The device event a feedback is, for the inventory and the gates (same names as
    ``POST /devices/{id}/events``); None: it says nothing about the model."""
    if feedback.execution == Execution.CLOSED:
        return "healthy" if feedback.finished == Finished.SUCCESS else "failed"
    if feedback.finished == Finished.FAILURE:
        return "failed"
    if feedback.execution in (Execution.CANCELED, Execution.REJECTED):
        return None
    return "downloaded"


def parse_config_data(doc: Any) -> dict[str, str]:
    """``configData``'s ``data``: the device's attributes (cohort keys, ``fw``, ``hw``, ...),
    bounded as a poll's query attributes are. ``mode`` ``merge`` (the default), ``replace`` or
    ``remove`` are all taken as a merge: the inventory keeps what other sources said."""
    if not isinstance(doc, Mapping):
        raise FormatError("body: expected a JSON object")
    data = doc.get("data")
    if not isinstance(data, Mapping):
        raise FormatError("data: expected an object of attribute names to strings")
    if len(data) > MAX_CONFIG_KEYS:
        raise FormatError(f"data: at most {MAX_CONFIG_KEYS} attributes")
    mode = doc.get("mode", "merge")
    if mode not in ("merge", "replace", "remove"):
        raise FormatError("mode: one of merge, replace, remove")
    attrs: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise FormatError(f"data: attribute {str(key)[:40]!r}: a name of letters, digits, '_', '.', '-'")
        if not isinstance(value, str) or len(value) > MAX_CONFIG_VALUE_CHARS or not value.isprintable():
            raise FormatError(
                f"data.{key}: a printable string of at most {MAX_CONFIG_VALUE_CHARS} characters"
            )
        if key in ("model_id", "model_version") and not valid_id(value):
            raise FormatError(f"data.{key}: letters, digits, '.', '_' or '-'")
        attrs[key] = value
    return attrs
