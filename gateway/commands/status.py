"""``ota-gateway status``: the running gateway's state, from its operator API."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.commands import operator_client
from gateway.commands.serve import add_common, load_settings


def cmd_status(args: argparse.Namespace) -> int:
    print(json.dumps(operator_client.call(load_settings(args), "GET", "/status"), indent=2))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="show the running gateway's state")
    add_common(p)
    p.set_defaults(func=cmd_status)
