"""Secrets out of everything the gateway shows: one function for the banner, logs, ``/status`` and the dashboard.

An installer writes credentials into URLs (``https://user:password@registry/...``,
``mqtt://user:pass@cloud``) and signed or keyed query strings into the ingest URL
(``...?key=...``, S3-style ``?X-Amz-Signature=...``). The gateway needs them to talk upstream; no
one reading a log, the banner, the dashboard or a status dump pasted into a ticket should get them.
:func:`redact` replaces the user-info of every URL in a text with ``***@`` and its query with
``?***``; :func:`redact_tree` does the same to every string in a JSON-like value;
:class:`RedactingFormatter` to every log line, tracebacks included.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_URL = re.compile(
    r"(?i)\b([a-z][a-z0-9+.\-]*://)"  # scheme
    r"([^\s/?#@\"'<>]*@)?"  # user:password@
    r"([^\s?#\"'<>]*)"  # host, port, path
    r"(\?[^\s#\"'<>]*)?"  # query
)


def _sub(m: re.Match[str]) -> str:
    return m[1] + ("***@" if m[2] else "") + m[3] + ("?***" if m[4] and len(m[4]) > 1 else (m[4] or ""))


def redact(text: str) -> str:
    """``text`` with every URL's ``user:password@`` and query string masked."""
    return _URL.sub(_sub, text) if "://" in text else text


def redact_tree(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings, numbers) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(v) for v in value]
    return value


class RedactingFormatter(logging.Formatter):
    """A log formatter whose output (message, arguments and traceback) never shows URL secrets."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
