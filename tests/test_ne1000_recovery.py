"""An NE-1000 that power-cycles while it is being recovered or checked: a reset stops the pump and loses its
settings, which recovery restores anyway, so a reset then is no reason to fail the recovery or the check (the
lab service would otherwise quarantine a pump that is fine, and use up its automatic releases)."""

from __future__ import annotations

import pytest
from test_driver_faults import BENCHES, running, works


@pytest.mark.parametrize("skip", range(8))
@pytest.mark.parametrize("step", ["recover", "check_health"])
def test_a_power_cycle_during_recovery_or_the_health_check_is_absorbed(step: str, skip: int) -> None:
    bench = BENCHES["ne1000"]
    with running(bench) as (sim, device, events):
        device.make_safe()
        sim.inject("reset", skip=skip)
        getattr(device, step)()
        works(bench, device)
        if sim.fired("reset"):
            assert any(e["event"] in ("retry", "recovered") for e in events), events
