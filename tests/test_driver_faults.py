"""Every fault a simulator can inject, against every built-in driver (docs/decisions/0005).

A link fault (drop, garble, partial, silent) on any reply is a typed error with its fault kind when
the driver may not resend, and is retried away when it may. An instrument fault (every one a
simulator declares) is a typed instrument fault when the driver's own remedy is off; then
``make_safe()``, ``recover()`` and ``check_health()`` bring the instrument back and the next action
works (what the lab service does before it releases a quarantine). With the remedy on, the driver
absorbs the fault and says so in a fault event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

import drivers.cavro
import drivers.ika
import drivers.newera
import drivers.ocean
import drivers.ur
from drivers.errors import FaultKind, InstrumentError
from simulators.base import simulator_class
from simulators.clock import ScaledClock
from simulators.faults import LINK_FAULTS
from simulators.testing import BackgroundLab, run_simulator
from simulators.ur import DEFAULT_POSITIONS

SETTLE_S = 30.0


@dataclass(frozen=True)
class Bench:
    """One driver against its simulator: how to build it, a short action, its timeout option."""

    kind: str
    make: Callable[..., Any]
    address: Callable[[BackgroundLab], Any]
    options: Mapping[str, Any]
    action: Callable[[Any], Any]  # starts a short action; returns its Status
    timeout_option: str
    speed: float = 50.0
    config: Mapping[str, Any] | None = None


def _reference_scan(device: Any) -> Any:
    device.mode.put("reference")  # lamp on (a sample needs a dark and a reference first)
    return device.trigger()


BENCHES = {
    "ne1000": Bench(
        "ne1000", drivers.newera.make_device, lambda sim: sim.url("pump"),
        {"pumps": {"a": {"address": 0, "diameter_mm": 14.57, "syringe_volume_ul": 10000,
                         "max_rate_ul_min": 5000, "rate_ul_min": 2000}}, "poll_s": 0.005},
        lambda device: device.a.set(20.0), "reply_timeout",
    ),
    "cavro": Bench(
        "cavro", drivers.cavro.make_device, lambda sim: sim.url("pump"),
        {"syringe_volume_ul": 1000, "ports": {"water": 1, "outlet": 2, "waste": 3}, "flow_ul_s": 200,
         "poll_interval_s": 0.005},
        lambda device: device.set(100.0), "timeout",
        config={"address": 1, "syringe_volume_ul": 1000, "valve_ports": 6, "init_output_port": 3,
                "ports": {1: "stock:water", 2: "station:dispense", 3: "station:waste"},
                "init_duration_s": 0.05, "valve_switch_s": 0.01},
    ),
    "ur": Bench(
        "ur", drivers.ur.make_device,
        lambda sim: {name: sim.url(name) for name in ("dashboard", "script", "gripper")},
        {"positions": DEFAULT_POSITIONS, "speed": 1.0, "unlock_retry_interval": 0.02},
        lambda device: device.transfer.set(("feeder", "waste")), "reply_timeout",
        config={"initial_mode": "RUNNING", "gripper": {"active": True, "activation_s": 0.05}},
    ),
    "ocean-hdx": Bench(
        "ocean-hdx", drivers.ocean.make_device, lambda sim: sim.url("obp"),
        {"integration_time_us": 50_000, "averages": 3}, _reference_scan, "timeout",
    ),
    "ika-rct": Bench(
        "ika-rct", drivers.ika.make_device, lambda sim: sim.url("serial"),
        {"poll_s": 0.005, "heater_grace_s": 0.01}, lambda device: device.temperature.set(40.0),
        "reply_timeout", speed=1000.0,
    ),
}  # fmt: skip


@contextmanager
def running(bench: Bench, **options: Any) -> Iterator[tuple[BackgroundLab, Any, list[dict[str, Any]]]]:
    with run_simulator(bench.kind, clock=ScaledClock(bench.speed), config=bench.config) as sim:
        device = bench.make("dut", bench.address(sim), **{**bench.options, **options})
        events: list[dict[str, Any]] = []
        device.subscribe_faults(events.append)
        try:
            device.connect()
            yield sim, device, events
        finally:
            device.destroy()


def works(bench: Bench, device: Any) -> None:
    status = bench.action(device)
    status.wait(SETTLE_S)
    assert status.success


# -- link faults ------------------------------------------------------------------------------------------
#: What each link fault is, as the core reads it (over TCP: a dropped connection is a lost link).
LINK_KINDS = {
    "drop": FaultKind.LINK_LOST,
    "garble": FaultKind.GARBLED,
    "partial": FaultKind.GARBLED,
    "silent": FaultKind.TIMEOUT,
}


def test_every_link_fault_is_in_the_matrix():
    assert set(LINK_KINDS) == set(LINK_FAULTS)


@pytest.mark.parametrize("fault", sorted(LINK_KINDS))
@pytest.mark.parametrize("kind", sorted(BENCHES))
def test_a_link_fault_without_resends_is_a_typed_fault_and_the_next_call_works(kind, fault):
    bench = BENCHES[kind]
    with running(bench, retries=0, **{bench.timeout_option: 0.2}) as (sim, device, _):
        sim.inject(fault)
        with pytest.raises(InstrumentError) as raised:
            device.check_health()
        assert raised.value.fault is LINK_KINDS[fault], raised.value
        assert str(raised.value).startswith("dut: ")
        assert sim.fired(fault) == 1
        device.check_health()  # resynchronised (reconnected, stale input dropped) by itself


@pytest.mark.parametrize("fault", sorted(LINK_KINDS))
@pytest.mark.parametrize("kind", sorted(BENCHES))
def test_a_link_fault_is_retried_away(kind, fault):
    bench = BENCHES[kind]
    with running(bench, **{bench.timeout_option: 0.2}) as (sim, device, events):
        sim.inject(fault)
        device.check_health()
        assert sim.fired(fault) == 1
        assert [e["fault"] for e in events if e["event"] == "retry"] == [LINK_KINDS[fault]]


@pytest.mark.parametrize("skip", [0, 2, 5])
@pytest.mark.parametrize("fault", sorted(LINK_KINDS))
@pytest.mark.parametrize("kind", sorted(BENCHES))
def test_an_action_rides_through_a_link_fault(kind, fault, skip):
    bench = BENCHES[kind]
    with running(bench, **{bench.timeout_option: 0.2}) as (sim, device, events):
        sim.inject(fault, skip=skip)
        works(bench, device)
        assert sim.fired(fault) == 1
        assert any(e["event"] == "retry" for e in events)


# -- instrument faults ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InstrumentFault:
    kind: str
    fault: str
    #: Driver options that turn its own remedy off, and what the action then fails with.
    remedy_off: Mapping[str, Any]
    error: FaultKind
    #: Injection: this many opportunities in a row, after skipping some.
    times: int = 1
    skip: int = 0
    #: Options that turn the remedy on where it is off by default.
    remedy_on: Mapping[str, Any] = field(default_factory=dict)


INSTRUMENT_FAULTS = [
    InstrumentFault("ne1000", "stall", {"stall_retries": 0}, FaultKind.ALARM),
    # A power cycle before RUN is set up again; eight in a row are more than a move's set-up takes
    # (five), and make_safe() and recover() meet the rest.
    InstrumentFault("ne1000", "reset", {}, FaultKind.ALARM, times=8),
    InstrumentFault("cavro", "plunger-overload", {"overload_retries": 0}, FaultKind.ALARM),
    InstrumentFault("cavro", "valve-overload", {"overload_retries": 0}, FaultKind.ALARM),
    InstrumentFault("cavro", "init-failure", {}, FaultKind.ALARM, times=2),  # initialise is tried twice
    InstrumentFault("ur", "protective-stop", {}, FaultKind.PROTECTIVE_STOP,
                    remedy_on={"auto_unlock": True, "unlock_delay": 0.15}),  # 5 s simulated: 0.1 s
    InstrumentFault("ur", "miss", {"pick_retries": 0}, FaultKind.ALARM),
    InstrumentFault("ocean-hdx", "not-ready", {"not_ready_wait_s": 0}, FaultKind.NOT_READY),
    InstrumentFault("ocean-hdx", "saturate", {"saturation_retries": 0}, FaultKind.ALARM),
    InstrumentFault("ocean-hdx", "acquisition-error", {"retries": 0}, FaultKind.ALARM),
    # The plate forgets or drops its heating mid-way (the 6th command of a heat is a reading).
    InstrumentFault("ika-rct", "reset", {"recoveries": 0}, FaultKind.ALARM, skip=5),
    InstrumentFault("ika-rct", "watchdog", {"recoveries": 0}, FaultKind.ALARM, skip=5),
]  # fmt: skip


def test_every_instrument_fault_is_in_the_matrix():
    declared = {(kind, fault) for kind in BENCHES for fault in simulator_class(kind).instrument_faults}
    assert {(case.kind, case.fault) for case in INSTRUMENT_FAULTS} == declared


@pytest.mark.parametrize("case", INSTRUMENT_FAULTS, ids=lambda case: f"{case.kind}-{case.fault}")
def test_an_instrument_fault_is_typed_and_recovery_brings_the_instrument_back(case):
    bench = BENCHES[case.kind]
    with running(bench, **case.remedy_off) as (sim, device, _):
        sim.inject(case.fault, times=case.times, skip=case.skip)
        status = bench.action(device)
        with pytest.raises(InstrumentError) as raised:
            status.wait(SETTLE_S)
        assert raised.value.fault is case.error, raised.value
        assert sim.fired(case.fault) >= 1
        # The lab service's path: make it safe now; recover and check it before it serves again.
        device.make_safe()
        device.recover()
        device.check_health()
        works(bench, device)


@pytest.mark.parametrize("case", INSTRUMENT_FAULTS, ids=lambda case: f"{case.kind}-{case.fault}")
def test_an_instrument_fault_is_absorbed_by_the_drivers_remedy(case):
    bench = BENCHES[case.kind]
    with running(bench, **case.remedy_on) as (sim, device, events):
        sim.inject(case.fault, skip=case.skip)
        works(bench, device)
        assert sim.fired(case.fault) == 1
        assert any(e["event"] in ("retry", "recovered") and e["fault"] == case.error for e in events), events
