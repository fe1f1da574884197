"""The ``ota-gateway`` command line: one sub-command module per concern under ``gateway.commands``.

Each command module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a
callable taking the parsed arguments and returning an exit code. Errors of the gateway's own tree
end the program with one line on stderr and exit code 2 (configuration) or 1 (anything else).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from collections.abc import Sequence

from gateway import __version__
from gateway.core.errors import ConfigError, GatewayError
from gateway.core.repeats import RepeatLimit
from gateway.runtime.redact import RedactingFormatter, redact

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


class RepeatFilter(logging.Filter):
    """Warnings and errors that repeat (the same upstream failure on every retry) go out once per
    interval, with the count of those held back (:class:`gateway.core.repeats.RepeatLimit`)."""

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self.limit = RepeatLimit(interval_s)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        key = "|".join([record.name, str(record.msg), *(str(a) for a in args if not isinstance(a, float))])
        emit, held = self.limit.admit(key, time.monotonic())
        if emit and held:
            interval = int(self.limit.interval_s)
            record.msg = f"{record.getMessage()} (and {held} more like it in the last {interval} s)"
            record.args = None
        return emit


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RepeatFilter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    for chatty in ("amqtt", "transitions"):  # their INFO is per-connection noise on a busy site
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _run(args: argparse.Namespace) -> int:
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at interpreter exit
        return code
    except ConfigError as exc:
        print(f"ota-gateway: configuration error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"ota-gateway: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging()
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader went away (``ota-gateway status | head -1``): stop quietly. Python's docs on
        # SIGPIPE: point stdout at devnull so the flush at exit does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
