"""Trusted key files as a new user meets them: a private key dropped into ``trusted-keys/`` is an
error naming the file (it was skipped quietly), and an index signed by a key nobody trusts is
refused naming the signer's key id (it said only "signed by no trusted key")."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.core.errors import UntrustedError
from gateway.trust.keys import load_trusted_keys
from gateway.trust.state import TrustState
from tests.conftest import Registry
from tests.gw import gateway_settings, running, until
from tests.peers import ROOT, free_port, gateway_process, stop

NOW = 1_790_000_000.0


def test_serve_refuses_to_start_with_a_private_key_in_trusted_keys(reg: Registry, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "trusted-keys").mkdir(parents=True)
    shutil.copy(reg.private_key, data / "trusted-keys" / "cloud.pem")  # the wrong one of the pair
    before = sorted(p.name for p in data.rglob("*"))
    args = ["--data", str(data), "--upstream", str(reg.root), "--http", f"127.0.0.1:{free_port()}",
            "--operator", f"127.0.0.1:{free_port()}", "--mqtt", f"127.0.0.1:{free_port()}"]  # fmt: skip
    proc = gateway_process(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode != 0, err
    text = err.decode()
    assert str(data / "trusted-keys" / "cloud.pem") in text and "PRIVATE key" in text, text
    assert "Traceback" not in text
    assert before  # (the folder was prepared)


async def test_a_private_key_dropped_in_while_running_is_logged_once_and_never_used(
    reg: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reg.publish(os.urandom(10_000), version="1.0.0")
    async with running(gateway_settings(reg, tmp_path / "data")) as gw:
        await until(lambda: gw.mirror.index is not None, what="the first index")
        shutil.copy(reg.private_key, tmp_path / "data" / "trusted-keys" / "oops.pem")
        with caplog.at_level(logging.ERROR, logger="gateway.trust.state"):
            reg.publish(os.urandom(10_000), version="2.0.0")
            await until(lambda: gw.mirror.index is not None and gw.mirror.index.version == 2, what="v2")
            for _ in range(3):
                await gw.mirror.poll_once()  # keys are refreshed on every poll
        lines = [r.getMessage() for r in caplog.records if "oops.pem" in r.getMessage()]
        assert len(lines) == 1 and "PRIVATE key" in lines[0], lines


def test_an_index_by_an_unknown_key_is_refused_naming_its_key_id(
    make_registry: Callable[..., Registry], tmp_path: Path
) -> None:
    ours, theirs = make_registry("ours"), make_registry("theirs")
    theirs.publish(b"model", version="1.0.0", now=NOW)
    state = TrustState(
        tmp_path / "trust", load_trusted_keys([ours.public_key], "test"), "test-site", "2026-01-01T00:00:00Z"
    )
    (their_kid,) = load_trusted_keys([theirs.public_key], "test")
    (our_kid,) = load_trusted_keys([ours.public_key], "test")
    with pytest.raises(UntrustedError) as caught:
        state.verify(theirs.index_bytes(), NOW)
    assert f"signed by key id {their_kid}" in str(caught.value)
    assert our_kid in str(caught.value) and "trusted-keys" in str(caught.value)
