"""The ``[drift]`` section: how the gateway measures and alerts on drift of the devices' inputs
(:mod:`gateway.core.drift`). Pure values; loaded with the rest by :mod:`gateway.service.settings`."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.core.setting_rules import POSITIVE, check

WHOLE = check("a whole number of at least 1", lambda v: isinstance(v, int) and v >= 1)


@dataclass(frozen=True)
class DriftSettings:
    """Drift of the devices' inputs and outputs (``drift`` sketches in their metrics)."""

    enabled: bool = True
    window_s: float = field(default=600.0, metadata=POSITIVE)  # one drift record per feature and window
    # the population stability index at which a feature alerts (0.1: moderate shift, 0.25: major,
    # the rule of thumb of ML monitoring); it must stay there alert_windows windows in a row
    alert_at: float = field(default=0.1, metadata=POSITIVE)
    alert_windows: int = field(default=3, metadata=WHOLE)
    # also alert on the distance to the manifest's reference profile (off: only on the distance to
    # the site's own past; a one-hour window of a site with a day and a night is rarely its model's
    # whole-day training profile)
    alert_on_reference: bool = False
    # values a window (and the past it is compared with) needs before it is judged
    min_count: int = field(default=500, metadata=WHOLE)
    # the site's own past: the same time of day (slot_s slots of a day_s day) over the last
    # past_days days, so the night is compared with past nights and the day with past days
    past_days: int = field(default=3, metadata=check("a whole number from 1 to 14", lambda v: 1 <= v <= 14))
    day_s: float = field(default=86400.0, metadata=POSITIVE)
    slot_s: float = field(default=3600.0, metadata=POSITIVE)
    # memory bounds whatever devices send: (model, feature) pairs tracked at the site, and cohorts
    # tracked apart (past these, new ones are counted and ignored)
    max_features: int = field(default=32, metadata=WHOLE)
    max_cohorts: int = field(default=8, metadata=WHOLE)
