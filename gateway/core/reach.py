"""Which of the site's devices a deployment may reach, as pure logic: the eligible set a gate opens
its waves from (computed only when a step needs it), and who already runs a version."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from firmware_compat.matrix import CompatMatrix
from gateway.core.device import DeviceRecord
from gateway.core.eligibility_memo import EligibilityMemo
from gateway.core.manifest import Deployment

MEMO = EligibilityMemo()
"""One for the process: what it gives is what :func:`~gateway.core.eligibility.decide` would (see
:mod:`gateway.core.eligibility_memo`), so sites, replays and tests in one process may share it."""


class Lazy(Mapping[str, Mapping[str, str]]):
    """The eligible set, computed only if a step needs it (to open a wave or to finish): a tick
    that only gathers evidence costs no eligibility pass over the whole site."""

    def __init__(self, compute: Callable[[], dict[str, Mapping[str, str]]]) -> None:
        self._compute = compute
        self._value: dict[str, Mapping[str, str]] | None = None

    def _get(self) -> dict[str, Mapping[str, str]]:
        if self._value is None:
            self._value = self._compute()
        return self._value

    def __getitem__(self, key: str) -> Mapping[str, str]:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def eligible_for(
    d: Deployment,
    deployments: Sequence[Deployment],
    devices: Iterable[DeviceRecord],
    now: float,
    matrix: CompatMatrix | None,
) -> dict[str, Mapping[str, str]]:
    """The site's devices the cloud's rules give ``d`` (or that already run its version). Each
    device's decision comes from :data:`MEMO` while nothing it was read from has changed."""
    out: dict[str, Mapping[str, str]] = {}
    key = MEMO.pass_key(deployments, now)
    chosen = MEMO.chosen
    for rec in devices:
        if rec.model_version == d.version:
            out[rec.device_id] = rec.attrs
            continue
        got = chosen(key, rec, now, matrix)
        if got is d or (got is not None and got == d):
            out[rec.device_id] = rec.attrs
    return out


def running(version: str, model_id: str, devices: Iterable[DeviceRecord]) -> frozenset[str]:
    return frozenset(
        r.device_id for r in devices if r.model_version == version and r.model_id in (None, model_id)
    )
