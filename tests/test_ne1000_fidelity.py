"""A third-party New Era client (nesp-lib, used against real pumps) drives our simulator unchanged.

nesp-lib opens the port with pyserial and no read timeout, so it runs in a worker thread that
the test joins with a deadline: a simulator that failed to answer would fail the test, not hang it.
"""

from __future__ import annotations

import threading

import nesp_lib  # the dev extra pins it
import pytest

from simulators.clock import ScaledClock
from simulators.testing import run_simulator

CONFIG = {
    "pumps": [
        {
            "address": 0,
            "diameter_mm": 10.0,
            "syringe_volume_ul": 5000,
            "reagent": "blue",
            "outlet": "dispense",
        },
        {
            "address": 3,
            "diameter_mm": 14.57,
            "syringe_volume_ul": 10000,
            "reagent": "red",
            "outlet": "dispense",
        },
    ]
}


def run_with_deadline(session, deadline_s: float = 20.0) -> dict:
    results: dict = {}

    def target() -> None:
        try:
            session(results)
        except BaseException as exc:  # reported in the test's thread below
            results["error"] = exc

    worker = threading.Thread(target=target, name="nesp-lib", daemon=True)
    worker.start()
    worker.join(deadline_s)
    assert not worker.is_alive(), f"nesp-lib still waiting after {deadline_s} s: {results}"
    if "error" in results:
        raise results["error"]
    return results


def test_nesp_lib_configures_runs_and_reads_back_in_basic_and_safe_mode():
    # 20x: the 6 s dispense takes 0.3 s; the safe-mode timeout (60 s) stays far above nesp-lib's
    # heartbeat period of timeout/2 in real seconds.
    with run_simulator("ne1000", link="pty", clock=ScaledClock(20), config=CONFIG) as sim:

        def session(results: dict) -> None:
            port = nesp_lib.Port(sim.url("pump"), 19200)
            try:
                pump = nesp_lib.Pump(port, address=3)  # sends SAF0 in safe framing, shrugs off A?R
                results["identity"] = (pump.model_number, pump.firmware_version)
                pump.syringe_diameter_mm = 14.57
                results["diameter"] = pump.syringe_diameter_mm
                pump.pumping_direction = nesp_lib.PumpingDirection.INFUSE
                pump.pumping_volume_ml = 0.1  # sent as "VOLUL" then "VOL100"
                pump.pumping_rate_ml_per_min = 1.0  # sent as "RAT1000UM"
                results["settings"] = (
                    pump.pumping_volume_ml,
                    pump.pumping_rate_ml_per_min,
                    pump.pumping_direction,
                )
                pump.volume_infused_clear()
                pump.run()  # blocks, polling the status, until the pump stops
                results["infused"] = pump.volume_infused_ml
                try:
                    pump.pumping_rate_ml_per_min = 50.0  # beyond a 14.57 mm syringe: ?OOR
                except ValueError:
                    results["refused"] = True
                pump.safe_mode_timeout_s = 60  # CRC-framed packets and a heartbeat from here on
                results["safe"] = (pump.safe_mode_timeout_s, pump.syringe_diameter_mm, pump.status)
                pump.safe_mode_timeout_s = 0
                results["basic"] = pump.running
            finally:
                port.close()

        results = run_with_deadline(session)
        assert results["identity"] == (1000, (3, 928))
        assert results["diameter"] == 14.57
        assert results["settings"] == (0.1, 1.0, nesp_lib.PumpingDirection.INFUSE)
        assert results["infused"] == pytest.approx(0.1)
        assert results["refused"]
        assert results["safe"] == (60, 14.57, nesp_lib.Status.STOPPED)
        assert results["basic"] is False
        vessel = sim.call(lambda: sim.lab.world.vessel_at("dispense"))
        assert vessel.volume_ul == pytest.approx(100.0)
        assert vessel.concentration("red") == pytest.approx(4.0e-5)
