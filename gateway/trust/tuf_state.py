"""The trust state of a site on TUF (``trust.format = "tuf"``): the metadata held, on disk and in
memory, and the same clock floors as the legacy index (:mod:`gateway.trust.state`).

``<data>/trust/tuf.json`` holds every metadata file of the last accepted set (the root chain,
timestamp, snapshot, targets and delegated roles), written in one atomic step, so a crash leaves
the old set or the new one, never a mix. At start it is re-verified from the configured root
(``trust.tuf_root``, never from the upstream); a set that no longer verifies as final (expired,
say) serves nothing, but its timestamp and snapshot still stand as the floor against rollback.
The same files are what devices and child gateways are served, unchanged (:meth:`metadata`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from gateway.core.errors import ConfigError, RemoteDataError
from gateway.core.settings import TrustSettings
from gateway.runtime import atomic
from gateway.trust.clock import check_issued
from gateway.trust.index import SiteIndex
from gateway.trust.keys import PublicKey
from gateway.trust.state import TrustState
from gateway.trust.tuf import TufSet, unpack

log = logging.getLogger(__name__)


class TufTrustState(TrustState):
    """A :class:`TrustState` whose index comes from TUF metadata. Blocking: use from a worker thread."""

    HELD = "tuf.json"

    def __init__(
        self, directory: Path, trusted_root: bytes, site: str, settings: TrustSettings, folder: str
    ) -> None:
        super().__init__(
            directory, {}, site, settings.min_valid_time, max_future_skew_s=settings.max_future_skew_s
        )
        self.trusted_root = trusted_root
        self.folder = folder  # where the metadata lives under the upstream ("metadata")
        self.held: dict[str, bytes] = {}
        self.last_set: TufSet | None = None  # the set verified from ``held`` (tuf_poll's ``previous``)
        self._pending: dict[int, TufSet] = {}  # verified, not yet accepted: by version

    def refresh_keys(self, *, at_start: bool = False) -> None:
        """The keys that sign targets come from the verified metadata, not from files."""

    def metadata(self, name: str) -> bytes | None:
        """A held metadata file by the name a TUF client asks for (``root.json``: the newest root)."""
        if name == "root.json":
            roots = [n for n in self.held if n.endswith(".root.json")]
            name = max(roots, key=lambda n: int(n.split(".")[0]), default=name)
        return self.held.get(name)

    def load(self, system_now: float) -> SiteIndex | None:
        path = self.dir / self.HELD
        if not path.exists():
            return None
        try:
            self.held = unpack(path.read_bytes())
        except (OSError, RemoteDataError) as exc:
            moved = atomic.move_aside(path)
            action = "starting from the trusted root (trust.tuf_root); the next refresh fetches the set again"
            self.recovered.append(atomic.recovered(path, str(exc), action, moved))
            return None
        now = self.clock(system_now).now
        index: SiteIndex | None = None
        try:
            s = self.replay(now)
            index = s.index()
            self.trusted.root_keys = s.signing_keys()
            self.trusted.accept(index)
            self.last_set = s
        except RemoteDataError as exc:  # kept all the same: its timestamp is the rollback floor
            log.warning("held TUF metadata no longer verifies, serving nothing until a refresh: %s", exc)
        if self._rebuild_floors:  # state.json was damaged: the floors from the set held
            self._rebuild_floors = False
            self._rebuild(index, system_now)
        return index

    def replay(self, now: float) -> TufSet:
        """The held set verified again, from the configured root, with nothing fetched."""
        s = TufSet(self.trusted_root, now, self.trusted.site)
        while s.next_root() in self.held:
            s.root(self.held[s.next_root()])
        if "timestamp.json" not in self.held:
            raise RemoteDataError("no timestamp held")
        s.timestamp(self.held["timestamp.json"])
        name, _ = s.snapshot_name()
        if name not in self.held:
            raise RemoteDataError(f"{name} not held")
        s.snapshot(self.held[name], held=True)
        while roles := s.roles():
            for role, delegator in roles:
                s.targets(role, delegator, self.held.get(s.role_name(role)[0], b""), held=True)
        return s

    def verify_set(self, s: TufSet, system_now: float) -> SiteIndex:
        """The index a refreshed set proves, with the clock rules of the legacy index."""
        reading = self.clock(system_now)
        index = s.index()
        check_issued(f"timestamp version {index.version}", index.issued, reading, self.max_future_skew_s)
        self._pending = {index.version: s}
        return index

    def accept(self, index: SiteIndex, system_now: float) -> None:
        super().accept(index, system_now)  # persists index.raw (every file of the set) to tuf.json
        self.held = unpack(index.raw)
        s = self._pending.pop(index.version, None)
        if s is not None:
            self.trusted.root_keys = s.signing_keys()
            self.last_set = s


def trusted_root(settings: TrustSettings, source: str = "configuration") -> bytes:
    """The root a TUF site starts from: ``trust.tuf_root``, a registry's ``metadata/1.root.json``."""
    if not settings.tuf_root:
        raise ConfigError(source, "trust.tuf_root", 'the trusted root.json file when trust.format = "tuf"')
    try:
        return Path(settings.tuf_root).read_bytes()
    except OSError as exc:
        raise ConfigError(source, "trust.tuf_root", f"a readable root.json at {settings.tuf_root}") from exc


def make_trust_state(
    settings: TrustSettings,
    directory: Path,
    keys: dict[str, PublicKey],
    site: str,
    key_dir: Path,
    tuf_root: bytes | None = None,
) -> TrustState:
    """The site's trust state for ``trust.format``: the legacy signed index, or TUF (its root read
    already, :class:`gateway.service.config_files.ConfigFiles`; read here only when not given)."""
    if settings.format == "tuf":
        root = tuf_root if tuf_root is not None else trusted_root(settings)
        try:
            TufSet(root, 0.0, site)
        except RemoteDataError as exc:
            raise ConfigError(
                "configuration", "trust.tuf_root", f"a TUF root.json signed by its own keys ({exc})"
            ) from exc
        return TufTrustState(directory, root, site, settings, settings.tuf_metadata)
    return TrustState(
        directory,
        keys,
        site,
        settings.min_valid_time,
        key_dir=key_dir,
        max_future_skew_s=settings.max_future_skew_s,
    )
