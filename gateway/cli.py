"""The ``ota-gateway`` command line: one sub-command module per concern under ``gateway.commands``.

Each command module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a
callable taking the parsed arguments and returning an exit code. Errors of the gateway's own tree
end the program with one line on stderr and exit code 2 (configuration) or 1 (anything else).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.core.errors import ConfigError, GatewayError
from gateway.redact import RedactingFormatter, redact

COMMAND_MODULES: tuple[str, ...] = (
    "gateway.commands.serve",
    "gateway.commands.status",
    "gateway.commands.registry",
    "gateway.commands.cache",
    "gateway.commands.devices",
    "gateway.commands.gate",
    "gateway.commands.discover",
    "gateway.commands.trust",
    "gateway.commands.bundle",
    "gateway.commands.uplink",
    "gateway.commands.device",
    "gateway.commands.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ota-gateway", description="Site OTA gateway for AI-model updates on a LAN."
    )
    parser.add_argument("--version", action="version", version=f"ota-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    for chatty in ("amqtt", "transitions"):  # their INFO is per-connection noise on a busy site
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"ota-gateway: configuration error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"ota-gateway: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
