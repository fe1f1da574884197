"""The dashboard's samples card: what the site keeps and sends for retraining, in words. Pure.

The status's ``samples`` section in, label / value rows out: today's budget and what it gave,
what waits (kept for the budget, chosen for the upload server), and per reason how many were
kept, sent and dropped (by the budget at the day's end, by the store's bound), and the upload's
last failure. No rows while samples are off (the page hides the card).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.http.dashboard import human

REASONS = ("error", "shadow_disagreement", "low_confidence", "user_corrected", "random")


def rows(st: Mapping[str, Any]) -> list[list[str]]:
    s = st.get("samples") or {}
    if not s.get("enabled"):
        return []
    counts = s.get("counts") or {}
    budget = int(s.get("budget_bytes_per_day") or 0)
    spent = int(s.get("day_spent_bytes") or 0)
    share = f" ({human.percent(100 * spent / budget)})" if budget else ""
    out = [
        ["Budget today", f"{human.size(spent)} of {human.size(budget)} given out{share}"],
        [
            "Waiting",
            f"{s.get('kept_now', 0)} kept for the budget, {s.get('waiting_upload', 0)} chosen for upload "
            f"({human.size(s.get('kept_bytes'))})",
        ],
    ]
    for reason in REASONS:
        n = {what: int((counts.get(what) or {}).get(reason, 0)) for what in counts}
        if not any(n.values()):
            continue
        words = f"{n.get('kept', 0)} kept, {n.get('sent', 0)} sent, {n.get('dropped_budget', 0)} dropped by budget"
        if n.get("dropped_full"):
            words += f", {n['dropped_full']} dropped (store full)"
        if n.get("duplicate"):
            words += f", {n['duplicate']} repeats"
        out.append([reason.replace("_", " ").capitalize(), words])
    failures = int(s.get("upload_failures") or 0)
    if not s.get("upload_url"):
        out.append(["Upload", "no samples.upload_url: nothing is sent"])
    elif failures:
        out.append(["Upload", f"{failures} failed attempts; last: {s.get('last_failure') or human.DASH}"])
    else:
        out.append(["Upload", "no failures"])
    return out
