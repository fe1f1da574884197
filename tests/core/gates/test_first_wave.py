"""The first wave sized by the evidence it can give (``gates.first_wave_error_level``): a wave whose
devices make few errors on the baseline cannot show a rise in them past ``error_rate_rise_max``
(x3 on a 0.3 % camera is +0.6 points, inside a +1 point margin), so it takes the next devices in
rank order until their pooled error rate is at least that many times the margin, or twice its
count. Through the real gate (:func:`~gateway.core.gates.machine.open_gate`) on sites of unlike
devices, over several seeds."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.core.gates import levels as L
from gateway.core.settings import GateSettings
from gateway.core.waves import admit, first_wave_most
from tests.core.gates.helpers import Fleet, opened, unlike_devices

SEEDS = range(31, 39)
DEVICES = 20
SITE = GateSettings(min_devices_per_wave=2)


def _site(seed: int, scale: float = 1.0) -> Fleet:
    traits = unlike_devices(DEVICES, seed, bad_camera=seed % 2 == 1)
    scaled = {d: dataclasses.replace(t, error_rate=min(0.2, t.error_rate * scale)) for d, t in traits.items()}
    return Fleet(scaled, seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_quiet_first_wave_grows_until_its_errors_could_show_the_margin(seed: int) -> None:
    site = _site(seed)  # errors around 0.5 %: a doubling is under the +1 point margin
    state = opened(site, SITE)
    counted = admit(state.deployment, site.eligible, [], SITE.waves, 0, min_devices=2, order_attr="")
    most = first_wave_most(SITE.waves, DEVICES, 2)
    need = SITE.first_wave_error_level * SITE.error_rate_rise_max
    level = L.pooled(state.reference, state.admitted, "errors")
    assert level is not None
    assert set(counted) <= set(state.admitted) and set(state.admitted.values()) == {0}
    assert level >= need or len(state.admitted) == most, (level, len(state.admitted))
    counted_level = L.pooled(state.reference, counted, "errors")
    assert counted_level is not None
    if counted_level < need:
        assert len(state.admitted) > len(counted)  # the count alone could not show the margin
        # it stopped at the first size that was enough (the admitted are in rank order)
        low = L.pooled(state.reference, list(state.admitted)[:-1], "errors")
        assert len(state.admitted) == most or (low is not None and low < need)
    off = opened(site, dataclasses.replace(SITE, first_wave_error_level=0.0))
    assert set(off.admitted) == set(counted)  # 0: the count alone, as before


@pytest.mark.parametrize("seed", SEEDS)
def test_a_first_wave_whose_errors_can_show_the_margin_keeps_its_count(seed: int) -> None:
    site = _site(seed, scale=20.0)  # errors around 10 %: any first wave could show +1 point
    state = opened(site, SITE)
    assert len(state.admitted) == 2
    first = opened(site, SITE, baseline=None)  # a first version: no errors to compare, its count
    assert len(first.admitted) == 2
