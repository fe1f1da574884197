"""``ota-gateway uplink export FILE``: pending uplink records into a file (see :mod:`gateway.uplink.export`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.commands.serve import add_common, load_settings
from gateway.uplink.export import export_records, open_outbox


def cmd_export(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    outbox = open_outbox(settings)
    try:
        done = export_records(outbox, Path(args.file), site=settings.site)
    finally:
        outbox.close()
    if done.records:
        print(f"wrote {done.records} records (seq {done.after_seq + 1}..{done.last_seq}) to {done.path}")
    else:
        print(f"nothing pending since seq {done.after_seq}; wrote an empty export to {done.path}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("uplink", help="the uplink's records, for sites without one (sneakernet)")
    us = p.add_subparsers(dest="uplink_command", required=True, metavar="ACTION")
    e = us.add_parser("export", help="write pending records to FILE; the cursor moves once it is whole")
    e.add_argument("file", metavar="FILE")
    add_common(e)
    e.set_defaults(func=cmd_export)
