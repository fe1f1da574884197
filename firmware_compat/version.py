"""Version parsing and ordering for firmware and model versions.

Accepted forms: semantic versions (``1.8.0``, ``1.8``, ``2.0.0-rc.1``, ``1.0.0+build.5``) and the same
with a prefix of letters ending in ``_``, ``-`` or ``v`` (``fw_1.8.0``, ``v2.1``, ``model-3.0.0``).
Missing minor/patch numbers are zero (``1.8`` == ``1.8.0``). Order follows SemVer 2.0.0 section 11:
numeric parts compare as numbers; a pre-release sorts before its release; pre-release identifiers
compare numerically when both are numeric, numeric before alphanumeric, otherwise by ASCII; build
metadata and the prefix are ignored for order (``fw_1.8.0`` == ``1.8.0``). It is a total order.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

_VERSION = re.compile(
    r"^(?P<prefix>[A-Za-z][A-Za-z0-9]*[_\-]|v)?"
    r"(?P<nums>[0-9]{1,9}(?:\.[0-9]{1,9}){0,3})"
    r"(?:-(?P<pre>[0-9A-Za-z\-]+(?:\.[0-9A-Za-z\-]+)*))?"
    r"(?:\+(?P<build>[0-9A-Za-z\-]+(?:\.[0-9A-Za-z\-]+)*))?$"
)
MAX_CHARS = 128


class VersionError(ValueError):
    pass


@functools.lru_cache(maxsize=1024)
def _pre_key(pre: tuple[str, ...]) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre)


@functools.total_ordering
@dataclass(frozen=True, eq=False)
class Version:
    numbers: tuple[int, ...]  # always at least three (major, minor, patch)
    pre: tuple[str, ...] = ()
    build: str = ""
    prefix: str = ""
    text: str = field(default="", compare=False)

    def sort_key(self) -> tuple[object, ...]:
        # A release (no pre-release) sorts after every pre-release of the same numbers.
        return (self.numbers, 1 if not self.pre else 0, _pre_key(self.pre))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self.sort_key() == other.sort_key()

    def __lt__(self, other: Version) -> bool:
        return self.sort_key() < other.sort_key()

    def __hash__(self) -> int:
        return hash(self.sort_key())

    def __str__(self) -> str:
        return self.text or ".".join(map(str, self.numbers))


def parse_version(text: str) -> Version:
    if not isinstance(text, str) or len(text) > MAX_CHARS:
        raise VersionError(f"not a version: {str(text)[:40]!r}")
    return _parse(text)


@functools.lru_cache(maxsize=4096)  # a site has few distinct versions and asks about them per poll
def _parse(text: str) -> Version:
    m = _VERSION.match(text.strip())
    if m is None:
        raise VersionError(f"not a version: {text!r} (expected e.g. 1.8.0, fw_1.8.0, v2.1, 2.0.0-rc.1)")
    nums = tuple(int(n) for n in m.group("nums").split("."))
    nums = nums + (0,) * (3 - len(nums)) if len(nums) < 3 else nums
    pre = tuple(m.group("pre").split(".")) if m.group("pre") else ()
    for p in pre:
        if p.isdigit() and len(p) > 1 and p.startswith("0"):
            raise VersionError(f"not a version: {text!r} (numeric pre-release part with a leading zero)")
    return Version(nums, pre, m.group("build") or "", m.group("prefix") or "", text.strip())


def try_version(text: str | None) -> Version | None:
    if text is None:
        return None
    try:
        return parse_version(text)
    except VersionError:
        return None
