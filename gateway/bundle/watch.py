"""The watched folders: ``mirror.import_dir`` (a USB mount) and the import spool under the data folder.

A scan every ``mirror.import_scan_s`` lists the ``*.tar`` files of each folder (a folder that is not
there, a stick not mounted, is simply empty). A file on the stick is imported once it looks the same
on two scans running (size, mtime, inode: a copy still being written waits); a file in the spool is
renamed in whole by ``ota-gateway import`` and is taken at once, then deleted (it is a copy). Each
result is written to ``<data>/import/results/<name>.json`` and logged.

A file is imported again only when it changes or vanishes and comes back (a stick pulled and put
back in), so a bundle left in the slot is not read every scan; a re-import is harmless anyway. A
file that fails (not a bundle, a mis-shaped ``bundle.json``, or any error of the import itself)
is reported once, in the log and in its result file, and not tried again while it is unchanged.

Only regular files are taken: the scan looks with ``lstat`` (a FIFO, a device node, a symlink or a
folder named ``*.tar`` is skipped, said once in the log), and the import opens the file with
``O_NONBLOCK`` and checks its type again on the descriptor (:func:`~gateway.bundle.layout.open_regular`),
so nothing in the folder can block the watch, the imports after it, or the gateway's shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import Sequence
from pathlib import Path

from gateway.bundle.importer import Importer, ImportReport, IndexOutcome
from gateway.bundle.layout import Fingerprint
from gateway.runtime import atomic

log = logging.getLogger(__name__)

SPOOL = "import"
RESULTS = "results"


def spool_dir(data: Path) -> Path:
    return data / SPOOL


def result_path(data: Path, bundle: Path) -> Path:
    return spool_dir(data) / RESULTS / (bundle.stem + ".json")


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    return "folder" if stat.S_ISDIR(mode) else "special file"


def _scan(folders: Sequence[Path]) -> tuple[dict[Path, Fingerprint], dict[Path, str]]:
    """The regular ``*.tar`` files of ``folders`` and the other entries so named (path -> kind)."""
    found: dict[Path, Fingerprint] = {}
    others: dict[Path, str] = {}
    for folder in folders:
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue  # not mounted, not there yet
        for p in entries:
            if p.suffix != ".tar" or p.name.startswith("."):
                continue
            try:
                st = p.lstat()  # never follows a link, never opens: a FIFO cannot block here
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found[p] = Fingerprint.of(st)
            else:
                others[p] = _kind(st.st_mode)
    return found, others


class ImportWatch:
    def __init__(
        self,
        importer: Importer,
        data: Path,
        folders: Sequence[Path],
        *,
        scan_s: float,
        timeout_s: float,
    ) -> None:
        self.importer = importer
        self.data = data
        self.spool = spool_dir(data)
        self.folders = [self.spool, *folders]
        self.scan_s = scan_s
        self.timeout_s = timeout_s
        self._done: dict[Path, Fingerprint] = {}
        self._seen_once: dict[Path, Fingerprint] = {}
        self._skipped: set[Path] = set()  # not regular files, said once

    async def run(self) -> None:
        await asyncio.to_thread(self.spool.mkdir, parents=True, exist_ok=True)
        while True:
            try:
                await self.scan_once()
            except Exception:  # the watch outlives any one bad file or disk error
                log.exception("import scan failed")
            await asyncio.sleep(self.scan_s)

    async def scan_once(self) -> None:
        found, others = await asyncio.to_thread(_scan, self.folders)
        for path in sorted(others.keys() - self._skipped):
            log.warning("%s: not a regular file (a %s); skipped", path, others[path])
        self._skipped = set(others)
        for path in list(self._done):
            if found.get(path) != self._done[path]:
                del self._done[path]  # gone, or changed: the next time it is there, import it
        self._seen_once = {p: fp for p, fp in self._seen_once.items() if found.get(p) == fp}
        for path, fp in sorted(found.items()):
            if path in self._done:
                continue
            if path.parent != self.spool and self._seen_once.get(path) != fp:
                self._seen_once[path] = fp  # still being copied? take it when it looks the same again
                continue
            self._seen_once.pop(path, None)
            self._done[path] = fp  # once, whatever comes of it: an unchanged bad file is not retried
            await self._import(path)

    async def _import(self, path: Path) -> None:
        log.info("importing bundle %s", path)
        try:
            report = await self.importer.run(path, timeout_s=self.timeout_s)
        except Exception as exc:  # reported in its result, so `ota-gateway import` is answered
            log.exception("import of %s failed", path)
            report = ImportReport(str(path), IndexOutcome.UNREADABLE, why=f"the import failed: {exc!r}")
        for line in report.lines():
            (log.info if report.ok else log.warning)("%s", line)
        out = result_path(self.data, path)
        await asyncio.to_thread(out.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(atomic.write_json, out, report.to_json())
        if path.parent == self.spool:
            await asyncio.to_thread(path.unlink, missing_ok=True)
