"""The dashboard's device list: search, filters, one page at a time. Pure: records and ``now`` in.

A site may know 100,000 devices; the page asks for one page (``limit`` at most
:data:`MAX_LIMIT`) of the devices that match, newest seen first, and the counts beside each
filter (versions, cohorts, states) so the operator sees where the fleet is. One pass over the
records per request; the page is chosen with a bounded heap, not a full sort.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core.device import DeviceRecord
from gateway.http.dashboard import human

MAX_LIMIT = 200
MAX_TEXT = 100
MAX_FACETS = 50
SEEN = {"5m": 300.0, "1h": 3600.0, "1d": 86400.0}  # seen within; "older": not seen for a day
STATES = ("running", "updating", "rolled back", "failed", "polling", "gone")
NO_VERSION = "none"
NO_COHORT = "(none)"


def device_state(rec: DeviceRecord) -> str:
    """What the device is doing, by its last event (see ``STATES``)."""
    if rec.gone:
        return "gone"
    event = rec.last_event
    if event in ("downloaded", "verified", "download"):
        return "updating"
    if event == "rolled_back":
        return "rolled back"
    if event == "failed":
        return "failed"
    if event in ("activated", "healthy") or rec.model_version:
        return "running"
    return "polling"


@dataclass(frozen=True)
class DeviceQuery:
    text: str = ""  # part of the id or of any attribute value
    version: str = ""  # model version, "model@version", or "none"
    cohort: str = ""
    state: str = ""
    seen: str = ""  # 5m, 1h, 1d (seen within) or older
    blocked: str = ""  # yes: waiting for a firmware update; no: not
    offset: int = 0
    limit: int = 50

    @classmethod
    def parse(cls, q: Mapping[str, str]) -> DeviceQuery:
        """From the query string; ValueError saying which parameter is wrong and what it takes."""
        unknown = sorted(set(q) - {"q", "version", "cohort", "state", "seen", "blocked", "offset", "limit"})
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0][:40]!r}")
        texts = {k: q.get(k, "").strip() for k in ("q", "version", "cohort", "state", "seen", "blocked")}
        for k, v in texts.items():
            if len(v) > MAX_TEXT:
                raise ValueError(f"{k}: at most {MAX_TEXT} characters")
        if texts["state"] and texts["state"] not in STATES:
            raise ValueError("state: one of " + ", ".join(STATES))
        if texts["seen"] and texts["seen"] not in (*SEEN, "older"):
            raise ValueError("seen: 5m, 1h, 1d or older")
        if texts["blocked"] not in ("", "yes", "no"):
            raise ValueError("blocked: yes or no")
        offset, limit = _int(q, "offset", 0, 0, 10**9), _int(q, "limit", 50, 1, MAX_LIMIT)
        return cls(
            texts["q"].lower(),
            texts["version"],
            texts["cohort"],
            texts["state"],
            texts["seen"],
            texts["blocked"],
            offset,
            limit,
        )

    @property
    def everything(self) -> bool:
        return not (self.text or self.version or self.cohort or self.state or self.seen or self.blocked)

    def matches(self, rec: DeviceRecord, now: float, cohort_attribute: str, state: str | None = None) -> bool:
        if self.version and self.version not in _versions(rec):
            return False
        if self.cohort and rec.attrs.get(cohort_attribute, "") != (
            "" if self.cohort == NO_COHORT else self.cohort
        ):
            return False
        if self.state and (state or device_state(rec)) != self.state:
            return False
        if self.blocked and bool(rec.blocked_by_firmware) != (self.blocked == "yes"):
            return False
        if self.seen:
            age = now - rec.last_seen
            if not (age > SEEN["1d"] if self.seen == "older" else age <= SEEN[self.seen]):
                return False
        if self.text:
            hay = [rec.device_id, *rec.attrs.values(), rec.model_version or "", rec.model_id or ""]
            if not any(self.text in h.lower() for h in hay):
                return False
        return True


def _int(q: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = q.get(key, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{key}: a whole number from {low} to {high}") from None
    if not low <= value <= high:
        raise ValueError(f"{key}: a whole number from {low} to {high}")
    return value


def _versions(rec: DeviceRecord) -> tuple[str, ...]:
    if not rec.model_version:
        return (NO_VERSION,)
    return (rec.model_version, f"{rec.model_id}@{rec.model_version}")


def row(rec: DeviceRecord, now: float, cohort_attribute: str) -> dict[str, str]:
    """One device as the page shows it: text only."""
    model = rec.model_id or ""
    return {
        "id": rec.device_id,
        "model": f"{model}@{rec.model_version}" if model and rec.model_version else rec.model_version or "–",
        "cohort": rec.attrs.get(cohort_attribute, "") or "–",
        "firmware": rec.attrs.get("fw", "") or "–",
        "state": device_state(rec),
        "last_seen": human.ago(rec.last_seen, now),
        "last_event": (rec.last_event or "").replace("_", " ") or "–",
        "blocked": f"needs newer firmware for {rec.blocked_by_firmware}" if rec.blocked_by_firmware else "",
    }


def select(
    records: Iterable[DeviceRecord], query: DeviceQuery, *, now: float, cohort_attribute: str
) -> dict[str, Any]:
    """The page of matching devices (seen most lately first), how many match, and the facets."""
    matched: list[DeviceRecord] = []
    versions: Counter[str] = Counter()
    cohorts: Counter[str] = Counter()
    states: Counter[str] = Counter()
    blocked = 0
    attr = cohort_attribute
    for rec in records:
        state = device_state(rec)
        versions[rec.model_version or NO_VERSION] += 1
        cohorts[rec.attrs.get(attr, "")] += 1
        states[state] += 1
        if rec.blocked_by_firmware:
            blocked += 1
        if query.everything or query.matches(rec, now, attr, state):
            matched.append(rec)
    total = len(matched)
    wanted = query.offset + query.limit
    page = heapq.nlargest(wanted, matched, key=lambda r: (r.last_seen, r.device_id))[query.offset :]
    return {
        "total": total,
        "known": sum(states.values()),
        "offset": query.offset,
        "limit": query.limit,
        "devices": [row(r, now, cohort_attribute) for r in page],
        "facets": {
            "version": _facet(versions),
            "cohort": _facet(cohorts, blank=NO_COHORT),
            "state": [[s, states[s]] for s in STATES if states[s]],
            "blocked": blocked,
        },
        "cohort_attribute": cohort_attribute,
    }


def _facet(counts: Counter[str], blank: str = "") -> list[list[Any]]:
    return [[k or blank, n] for k, n in counts.most_common(MAX_FACETS) if k or blank]
