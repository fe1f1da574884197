"""A TUF registry made by the real ``ota-gateway registry`` commands, a static file server over it,
and python-tuf's own ``ngclient.Updater`` as a device (the reference client, unmodified)."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tuf.ngclient import Updater

from gateway import cli, registry


def run(*argv: str) -> int:
    return cli.main(list(argv))


@dataclass
class TufRegistry:
    root: Path  # the registry folder
    keys: Path  # registry init's key folder (root-1..3, targets, snapshot, timestamp)
    models: Path  # one key folder per model key (a, b, ...)

    def key(self, name: str) -> Path:
        """A model key pair (made on first use): ``<models>/<name>/private.pem``."""
        if not (self.models / name / "private.pem").exists():
            registry.keygen(self.models / name)
        return self.models / name

    def delegate(self, model: str, *keys: str, threshold: int = 1) -> None:
        args = [f"--key={self.key(k) / 'public.pem'}" for k in keys]
        targets = f"--targets-key={self.keys / 'targets' / 'private.pem'}"
        assert (
            run(
                "registry",
                "delegate",
                str(self.root),
                model,
                *args,
                f"--threshold={threshold}",
                targets,
                f"--online-keys={self.keys}",
            )
            == 0
        )

    def publish(self, data: bytes, model: str, version: str, key: str, *extra: str) -> Path:
        f = self.models.parent / f"{model}-{version}.onnx"
        f.write_bytes(data)
        assert (
            run(
                "registry",
                "publish",
                str(self.root),
                str(f),
                f"--key={self.key(key) / 'private.pem'}",
                f"--model-id={model}",
                f"--version={version}",
                f"--online-keys={self.keys}",
                *extra,
            )
            == 0
        )
        return f

    @property
    def first_root(self) -> bytes:
        return (self.root / "metadata" / "1.root.json").read_bytes()


def make_tuf_registry(tmp: Path) -> TufRegistry:
    reg = TufRegistry(tmp / "registry", tmp / "tuf-keys", tmp / "model-keys")
    reg.root.mkdir()
    assert run("registry", "init", str(reg.root), f"--keys={reg.keys}") == 0
    return reg


@contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """A plain static file server (the cloud's S3 or nginx, in miniature) on an ephemeral port."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def updater(device_dir: Path, metadata_url: str, targets_url: str, bootstrap: bytes | None) -> Updater:
    """python-tuf's own client, as a device: its metadata cache and downloads under ``device_dir``."""
    (device_dir / "metadata").mkdir(parents=True, exist_ok=True)
    return Updater(
        str(device_dir / "metadata"),
        metadata_url,
        str(device_dir / "downloads"),
        targets_url,
        bootstrap=bootstrap,
    )
