"""``ota-gateway gate status | hold | release | abort | approve``: the site's canary gates, through the
running gateway's operator API. Every control is logged with who and why, and goes to the audit log;
one that would do nothing (a release after an abort) is refused with its reason and exit code 1."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from gateway.commands import gate_replay, gate_trace, operator_client
from gateway.commands.serve import load_settings
from gateway.core.errors import TransportError
from gateway.core.gates import Action, Verdict
from gateway.core.gates.words import say
from gateway.core.human import wave


def cmd_status(args: argparse.Namespace) -> int:
    doc = operator_client.connect(args, load_settings(args)).call("GET", "/gates")
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    if not doc["gates"]:
        print(
            "no canary gates: no deployment in the signed index has been judged yet"
            if doc.get("index_version") is None
            else f"no canary gates: none of the deployments in index version {doc['index_version']} "
            + ("needs one (gates.enabled is off)" if not doc.get("enabled", True) else "needs one")
        )
        return 0
    print(
        f"{'DEPLOYMENT':28} {'BASELINE':10} {'STAGE':9} {'WAVE':>4} {'ADMITTED':>8} {'RAN':>5} {'ROLLBACK':>8}  LAST DECISION"
    )
    for g in doc["gates"]:
        last = g["last_decision"] or {}
        held = f" (held by {g['held_by']})" if g["held_by"] else ""
        held += " (waiting for approval)" if g.get("awaiting_approval") else ""
        print(
            f"{g['deployment']:28} {g['baseline'] or '-':10} {g['stage']:9} {wave(g['wave'])[5:]:>4} {g['admitted']:>8} "
            f"{g['ran']:>5} {g.get('rollback_left', g['rollback']):>8}  {last.get('action', '-')}: {last.get('reason', '')}{held}"
        )
        for line in _evidence(last):
            print(f"    {line}")
    return 0


def _evidence(decision: dict[str, Any]) -> list[str]:
    """The last decision's criteria in words, worse first, then undecided (what holds the wave)."""
    order = {"worse": 0, "undecided": 1}
    verdicts = []
    for v in decision.get("verdicts", []):
        try:
            verdicts.append(Verdict(**v))
        except (TypeError, ValueError):
            continue
    shown = sorted((v for v in verdicts if str(v.result) in order), key=lambda v: order[str(v.result)])
    return [("dry run: " if v.dry_run else "") + say(v) for v in shown]


def cmd_control(args: argparse.Namespace) -> int:
    body = {"who": args.who or getpass.getuser(), "why": args.why}
    try:
        client = operator_client.connect(args, load_settings(args))
        doc = client.call("POST", f"/gates/{args.deployment}/{args.action}", body)
    except TransportError as exc:
        if exc.status in (404, 409):
            print(f"ota-gateway: {args.action} {args.deployment} refused: {exc.detail}", file=sys.stderr)
            return 1
        raise
    g = doc["gate"]
    held = f", held by {g['held_by']}" if g["held_by"] else ""
    print(f"{args.action}: {g['deployment']} is now {g['stage']} at {wave(g['wave'])}{held}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("gate", help="see and control the site's canary gates")
    gs = p.add_subparsers(dest="gate_command", required=True, metavar="ACTION")
    st = gs.add_parser("status", help="every gate: stage, wave, devices, last decision")
    operator_client.add_client_args(st)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    gate_replay.register(gs)
    gate_trace.register(gs)
    for action, text in (
        (Action.HOLD, "stop a rollout where it is (admitted devices keep the candidate)"),
        (Action.RELEASE, "resume a held rollout, or a halted one from its current wave"),
        (Action.ABORT, "stop for good and roll back every device that ran it"),
        (Action.APPROVE, "let a wave that passed advance (gates.approve_each_wave)"),
    ):
        c = gs.add_parser(action, help=text)
        operator_client.add_client_args(c)
        c.add_argument("deployment", metavar="MODEL@VERSION")
        c.add_argument("--why", required=True, help="goes in the audit log")
        c.add_argument("--who", help="default: your user name")
        c.set_defaults(func=cmd_control, action=action)
