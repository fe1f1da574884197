"""The TUF refresh over a real folder upstream: a poll with nothing new verifies only the root
probe and the timestamp (the held roles' expiry still judged), and held roles that expired under
an unchanged timestamp are refused as a freeze."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.core.errors import ExpiredError
from gateway.mirror.open_upstream import make_upstream
from gateway.mirror.tuf_poll import refresh
from gateway.registry import tuf_life
from gateway.registry.tuf_repo import Repo
from tests.registry.tufkit import make_tuf_registry

DAY = 86400.0


async def test_an_idle_poll_rechecks_expiry_but_not_every_role(tmp_path: Path) -> None:
    treg = make_tuf_registry(tmp_path)
    treg.delegate("detector", "a")
    treg.publish(b"m" * 3000, "detector", "1.0.0", "a")
    # A timestamp that outlives the snapshot (30 days): only the roles' own expiry can stop it.
    Repo(treg.root).refresh_timestamp(
        tuf_life.signer(treg.keys / "timestamp" / "private.pem"), expires_s=60 * DAY
    )
    up = make_upstream(str(treg.root))
    root, now = treg.first_root, time.time()
    first = await refresh(up, "metadata", root, {}, now, "site-1")
    assert first.changed and [d.key for d in first.index().deployments] == ["detector@1.0.0"]
    idle = await refresh(up, "metadata", root, first.files, now + DAY, "site-1", first)
    assert not idle.changed and "targets" not in idle.tms  # the held roles were not replayed
    with pytest.raises(ExpiredError, match=r"snapshot: the held version \d+ expired \(freeze\)"):
        await refresh(up, "metadata", root, first.files, now + 31 * DAY, "site-1", first)
    with pytest.raises(ExpiredError, match=r"snapshot\.json is expired"):  # the same, replayed in full
        await refresh(up, "metadata", root, first.files, now + 31 * DAY, "site-1")
    await up.close()
