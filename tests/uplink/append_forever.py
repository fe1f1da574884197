"""Helper process for the kill -9 test: appends records and prints each seq once it is durable."""

import asyncio
import sys
from pathlib import Path

from gateway.uplink.outbox import Outbox


async def main() -> None:
    box = Outbox(Path(sys.argv[1]), max_bytes=1 << 30, max_age_s=1e9, sinks=["http"])
    i = 0
    while True:
        seqs = await asyncio.gather(*(box.append("sample", {"i": i + k}, 0.0) for k in range(20)))
        i += 20
        print(" ".join(map(str, seqs)), flush=True)


asyncio.run(main())
