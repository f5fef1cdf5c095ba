"""Fidelity: a third-party client written for real IKA hotplates drives our simulator unchanged.

``ika-control`` (an asyncio client for IKA devices behind a serial-to-Ethernet gateway) sends
``IN_PV_1\\r\\n`` without the manual's blank, reads replies up to CR LF and strips the channel number
from the end of a reading; it knows nothing of our driver.
"""

from __future__ import annotations

import asyncio

from ika import Hotplate

from drivers.testing import wait_for
from simulators.clock import ScaledClock
from simulators.ika import plate_state
from simulators.testing import run_simulator


def test_ika_control_reads_sets_and_switches_the_simulated_plate():
    with run_simulator("ika-rct", clock=ScaledClock(1000.0)) as sim:
        address = sim.url("serial").removeprefix("socket://")

        async def session() -> dict:
            plate = Hotplate(address)
            try:
                name = await plate.query(plate.READ_DEVICE_NAME)
                limit = await plate.query(plate.READ_TEMP_LIMIT)
                await plate.set("process", 45)
                await plate.set("shaker", 400)
                await plate.control("heater", True)
                await plate.control("motor", True)
                setpoint = await plate.query(plate.READ_PROCESS_TEMP_SETPOINT)
                speed = await plate.query(plate.READ_SPEED_SETPOINT)
                medium = await plate.query(plate.READ_ACTUAL_PROCESS_TEMP)
                return {"name": name, "limit": limit, "setpoint": setpoint, "speed": speed, "medium": medium}
            finally:
                plate.hw.close()

        seen = asyncio.run(session())
        assert seen["name"] == "RCT digital"
        assert seen["limit"] == 340.0 and seen["setpoint"] == 45.0 and seen["speed"] == 400.0
        assert 15.0 < seen["medium"] < 60.0
        simulator = sim.lab.simulators["ika-rct"]
        both_on = lambda: plate_state(simulator)["heating"] and plate_state(simulator)["stirring"]  # noqa: E731
        wait_for(lambda: sim.call(both_on), 10, what="heater and motor on")
