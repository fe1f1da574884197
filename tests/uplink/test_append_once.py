"""``Outbox.append_once``: a record and its key in one commit, so a retry after a crash is no repeat."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.uplink.outbox import Outbox
from gateway.uplink.outbox_file import ONCE_KEEP_S


def test_a_key_appends_once_across_a_reopen_and_after_delivery(tmp_path: Path) -> None:
    now = time.time()
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20, max_age_s=3600, sinks=["http"])
    assert box.append_once("training_sample", {"sha256": "a"}, now, key="sample:a")
    assert not box.append_once("training_sample", {"sha256": "a"}, now, key="sample:a")
    box.ack("http", box.peek("http", 10)[0].seq)  # delivered and deleted: the key is still known
    assert box.depth().records == 0
    box.close()
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20, max_age_s=3600, sinks=["http"])
    try:
        assert not box.append_once("training_sample", {"sha256": "a"}, now + 60, key="sample:a")
        assert box.append_once("training_sample", {"sha256": "b"}, now + 60, key="sample:b")
        assert [r.body for r in box.peek("http", 10)] == [{"sha256": "b"}]
        # keys are forgotten after ONCE_KEEP_S
        assert box.append_once("training_sample", {"sha256": "a"}, now + ONCE_KEEP_S + 61, key="sample:a")
    finally:
        box.close()
