"""Conformance: the Ocean OBP driver and its ophyd face against the ocean-hdx simulator, over TCP and pty."""

from __future__ import annotations

import os
import threading
import time

import bluesky.plan_stubs as bps
import numpy as np
import pytest
from bluesky.utils import FailedStatus

from drivers.errors import (
    CommandRejected,
    ConnectionLost,
    InstrumentBusy,
    InstrumentTimeout,
    ProtocolError,
    SafetyLimitError,
)
from drivers.ocean import (
    ChecksumError,
    CorruptedRequest,
    MissingCalibration,
    Nack,
    NotReady,
    OceanSpectrometer,
    Saturated,
    TruncatedReply,
    make_device,
)
from drivers.transport import Transport
from simulators.clock import ScaledClock, VirtualClock
from simulators.testing import run_simulator

LINKS = ["tcp", "pty"]


def fast() -> ScaledClock:
    return ScaledClock(1000.0)


def put_vial(sim, dye: str | None, dye_ul: float = 0.0, water_ul: float = 2000.0) -> None:
    """Set a fresh vial in the holder: ``dye`` diluted with water, or water alone (a blank)."""

    def place() -> None:
        world = sim.lab.world
        vial = world.new_vessel()
        world.stations["spectrometer"].vessel = vial
        if dye:
            world.transfer(world.stocks[dye], vial, dye_ul)
        world.transfer(world.stocks["water"], vial, water_ul)

    sim.call(place)


def true_absorbance(sim, wavelengths: np.ndarray) -> np.ndarray:
    world = sim.lab.world
    return sim.call(lambda: world.chemistry.absorbance(world.vessel_at("spectrometer"), wavelengths))


def frames(sim) -> int:
    simulator = sim.lab.simulators["ocean-hdx"]
    return sim.call(lambda: simulator.frames_received)


@pytest.mark.parametrize("link", LINKS)
def test_identity_calibration_and_absorbance(link):
    with (
        run_simulator("ocean-hdx", link=link, clock=fast()) as sim,
        OceanSpectrometer.connect(sim.url("obp"), timeout=1.0, averages=3) as spec,
    ):
        assert spec.serial_number() == "HDX01234" and spec.product_id() == 0x2003
        simulator = sim.lab.simulators["ocean-hdx"]
        np.testing.assert_allclose(spec.wavelengths(), simulator.wavelengths, rtol=1e-12)
        spec.set_integration_time_us(100000)
        put_vial(sim, None)
        dark = spec.acquire_dark()
        reference = spec.acquire_reference()
        assert abs(dark.mean() - 1005) < 10 and reference.max() > 25000
        assert sim.call(lambda: simulator.lamp_enabled)  # the lamp is back on after the dark
        put_vial(sim, "red", 1000, 1000)  # 20 µM red: A ≈ 0.5 at 504 nm
        absorbance = spec.absorbance()
        expected = true_absorbance(sim, spec.wavelengths())
        peak = int(np.argmax(expected))
        assert absorbance[peak] == pytest.approx(expected[peak], abs=0.02)
        assert np.nanmax(np.abs(absorbance - expected)) < 0.05  # nonlinearity undone, noise averaged


@pytest.mark.parametrize("link", LINKS)
def test_safety_limits_are_checked_before_any_byte_leaves(link):
    with (
        run_simulator("ocean-hdx", link=link, clock=fast()) as sim,
        OceanSpectrometer.connect(sim.url("obp"), timeout=1.0, max_integration_time_us=500000) as spec,
    ):
        spec.set_integration_time_us(20000)
        before = frames(sim)
        for bad in (1000, 5999, 600000, 20000.5):
            with pytest.raises(SafetyLimitError, match="6000–500000 µs"):
                spec.set_integration_time_us(bad)
        with pytest.raises(SafetyLimitError, match="averages"):
            spec.set_averages(0)
        assert frames(sim) == before  # the wire stayed silent
        assert spec.integration_time_us == 20000
    with pytest.raises(ValueError, match="6000 <= min_integration_time_us"):
        OceanSpectrometer(None, min_integration_time_us=10)  # type: ignore[arg-type]


def test_the_instrument_refusing_a_value_raises_a_typed_nack():
    config = {"integration_time_us": {"min": 10000}}  # firmware stricter than the driver's limits
    with (
        run_simulator("ocean-hdx", clock=fast(), config=config) as sim,
        OceanSpectrometer.connect(sim.url("obp"), timeout=1.0) as spec,
    ):
        with pytest.raises(Nack) as caught:
            spec.set_integration_time_us(8000)
        assert isinstance(caught.value, CommandRejected) and caught.value.code == 6
        assert "payload data invalid" in str(caught.value)
        with pytest.raises(MissingCalibration, match="acquire_dark"):
            spec.absorbance()


@pytest.mark.parametrize(
    ("link", "fault", "error"),
    [
        ("tcp", "drop@1", ConnectionLost),
        ("pty", "drop@1", InstrumentTimeout),  # a pty cannot hang up: the reply is just lost
        ("tcp", "garble@1", ChecksumError),
        ("pty", "garble@1", ChecksumError),
        ("tcp", "partial@1", TruncatedReply),
        ("pty", "partial@1", TruncatedReply),
        ("tcp", "silent@1", InstrumentTimeout),
    ],
)
def test_link_faults_raise_typed_errors_and_the_driver_recovers(link, fault, error):
    with (
        run_simulator("ocean-hdx", link=link, clock=fast(), faults=fault) as sim,
        OceanSpectrometer.connect(sim.url("obp"), timeout=0.3, retries=0) as spec,
    ):
        with pytest.raises(error):
            spec.product_id()
        if error is ConnectionLost:
            spec.recover()
        assert spec.product_id() == 0x2003  # the next exchange is clean: stale bytes are gone
    with (
        run_simulator("ocean-hdx", link=link, clock=fast(), faults=fault) as sim,
        OceanSpectrometer.connect(sim.url("obp"), timeout=0.3) as spec,
    ):
        spec.set_integration_time_us(50000)  # reply 1 is hit, the retry succeeds
        assert sim.call(lambda: sim.lab.simulators["ocean-hdx"].integration_time_us) == 50000


class CorruptingTransport(Transport):
    """Flips one byte of the next ``damage`` requests on their way out, as line noise would."""

    damage = 0

    def write(self, data: bytes) -> None:
        if self.damage:
            self.damage -= 1
            data = data[:25] + bytes([data[25] ^ 0x40]) + data[26:]  # second byte of the immediate data
        super().write(data)


def test_a_request_damaged_on_the_way_is_refused_by_checksum_and_resent():
    with run_simulator("ocean-hdx", clock=fast()) as sim:
        transport = CorruptingTransport(sim.url("obp"), timeout=1.0).open()
        with OceanSpectrometer(transport, retries=0) as spec:
            transport.damage = 1
            with pytest.raises(CorruptedRequest) as caught:
                # Without a checksum the device would have taken 43616 µs (0xEA60 -> 0xAA60) as valid.
                spec.set_integration_time_us(60000)
            assert caught.value.code == 3 and isinstance(caught.value, ProtocolError)
            spec.retries, transport.damage = 2, 1
            spec.set_integration_time_us(60000)
            assert sim.call(lambda: sim.lab.simulators["ocean-hdx"].integration_time_us) == 60000


def test_recover_reapplies_the_settings_after_a_power_cycle():
    with (
        run_simulator("ocean-hdx", clock=fast()) as sim,
        OceanSpectrometer.connect(sim.url("obp"), timeout=1.0) as spec,
    ):
        simulator = sim.lab.simulators["ocean-hdx"]
        spec.set_integration_time_us(50000)
        spec.acquire_dark()  # leaves the lamp on

        def power_cycle() -> None:
            simulator.integration_time_us, simulator.lamp_enabled = 100000, False

        sim.call(power_cycle)
        spec.recover()
        assert sim.call(lambda: (simulator.integration_time_us, simulator.lamp_enabled)) == (50000, True)


@pytest.mark.parametrize("fault", ["garble@2", "partial@2"])
def test_a_corrupted_spectrum_is_detected_and_measured_again(fault):
    with (
        run_simulator("ocean-hdx", clock=fast(), faults=fault) as sim,
        OceanSpectrometer.connect(sim.url("obp"), timeout=0.3, retries=0) as spec,
    ):
        spec.product_id()
        with pytest.raises(ProtocolError):
            spec.raw_spectrum()
        assert spec.raw_spectrum().shape == (2068,)
        assert sim.call(lambda: sim.lab.simulators["ocean-hdx"].acquisitions) == 2


def test_not_ready_is_instrument_busy_and_is_waited_out():
    with (
        run_simulator("ocean-hdx", clock=fast(), faults="not-ready@1,not-ready@3") as sim,
        OceanSpectrometer.connect(sim.url("obp"), timeout=1.0, retries=0) as spec,
    ):
        with pytest.raises(NotReady) as caught:
            spec.raw_spectrum()
        assert isinstance(caught.value, InstrumentBusy) and caught.value.code == 7
        assert spec.raw_spectrum().shape == (2068,)
        spec.retries = 2
        assert spec.raw_spectrum().shape == (2068,)  # refused once more, then asked again


def test_saturation_raises_and_a_shorter_integration_time_recovers():
    with (
        run_simulator("ocean-hdx", clock=fast(), faults="saturate@2") as sim,
        OceanSpectrometer.connect(sim.url("obp"), timeout=1.0, saturation_retries=0) as spec,
    ):
        spec.set_integration_time_us(100000)
        spec.acquire_dark()
        with pytest.raises(Saturated) as caught:
            spec.acquire_reference()  # the lamp flares
        assert caught.value.pixels > 1000 and spec.reference is None
        spec.acquire_reference()
        spec.set_integration_time_us(400000)  # too long for this lamp: really saturates
        assert spec.dark is None and spec.reference is None  # taken at another integration time
        with pytest.raises(Saturated, match="shorten the integration time"):
            spec.spectrum()
        spec.set_integration_time_us(150000)
        assert spec.spectrum().max() < 65535


def test_a_lamp_flare_is_measured_again_by_default():
    with (
        run_simulator("ocean-hdx", clock=fast(), faults="saturate@1") as sim,
        OceanSpectrometer.connect(sim.url("obp"), timeout=1.0) as spec,
    ):
        events: list[dict] = []
        spec.events.subscribe(events.append)
        spec.set_integration_time_us(100000)
        assert spec.spectrum().max() < 65535  # the flared scan was taken again
        assert [e["event"] for e in events] == ["retry", "recovered"]
        assert sim.call(lambda: sim.lab.simulators["ocean-hdx"].acquisitions) == 2


def test_two_clients_share_the_instrument_one_waits_for_the_other():
    clock = VirtualClock()
    with (
        run_simulator("ocean-hdx", clock=clock) as sim,
        OceanSpectrometer.connect(sim.url("obp"), timeout=5.0) as first,
        OceanSpectrometer.connect(sim.url("obp"), timeout=5.0, retries=0) as impatient,
        OceanSpectrometer.connect(sim.url("obp"), timeout=5.0) as patient,
    ):
        simulator = sim.lab.simulators["ocean-hdx"]
        started = sim.call(lambda: simulator.acquisitions)
        results: dict[str, np.ndarray] = {}
        threads = [
            threading.Thread(target=lambda: results.setdefault("first", first.raw_spectrum())),
        ]
        threads[0].start()
        wait_for(lambda: sim.call(lambda: simulator.acquiring), "the first acquisition")
        with pytest.raises(NotReady):
            impatient.raw_spectrum()
        threads.append(threading.Thread(target=lambda: results.setdefault("patient", patient.raw_spectrum())))
        threads[1].start()
        clock.advance(0.1)
        wait_for(lambda: "first" in results, "the first spectrum")
        wait_for(lambda: sim.call(lambda: simulator.acquiring), "the patient client's acquisition")
        clock.advance(0.1)
        for thread in threads:
            thread.join(timeout=5)
        assert set(results) == {"first", "patient"}
        assert sim.call(lambda: simulator.acquisitions) == started + 2


def wait_for(condition, what: str, deadline_s: float = 5.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


@pytest.mark.parametrize("link", LINKS)
def test_a_bluesky_plan_takes_dark_reference_and_sample(link, engine):
    with run_simulator("ocean-hdx", link=link, clock=fast()) as sim:
        spec = make_device(
            "spec", {"obp": sim.url("obp")}, integration_time_us=100000, averages=2, timeout=1.0
        )
        documents: list[tuple[str, dict]] = []

        def plan():
            yield from bps.open_run()
            yield from bps.mv(spec.mode, "dark")
            yield from bps.trigger(spec, wait=True)
            yield from bps.mv(spec.mode, "reference")
            yield from bps.trigger(spec, wait=True)
            put_vial(sim, "yellow", 1000, 1000)  # what the arm does between reference and sample
            yield from bps.trigger_and_read([spec])
            yield from bps.close_run()

        try:
            put_vial(sim, None)
            engine(plan(), lambda name, doc: documents.append((name, doc)))
        finally:
            spec.destroy()
        descriptor = next(doc for name, doc in documents if name == "descriptor")
        assert descriptor["data_keys"]["spec_absorbance"]["shape"] == [2068]
        assert descriptor["data_keys"]["spec_counts"]["dtype"] == "array"
        configuration = descriptor["configuration"]["spec"]["data"]
        assert configuration["spec_integration_time"] == 100000 and configuration["spec_averages"] == 2
        assert configuration["spec_mode"] == "sample"  # back to sample after the reference
        wavelengths = np.asarray(configuration["spec_wavelengths"])
        event = next(doc for name, doc in documents if name == "event")
        absorbance = np.asarray(event["data"]["spec_absorbance"])
        expected = true_absorbance(sim, wavelengths)
        peak = int(np.argmax(expected))
        assert expected[peak] > 0.4 and absorbance[peak] == pytest.approx(expected[peak], abs=0.03)


def test_plan_failures_carry_the_driver_exception(engine):
    with run_simulator("ocean-hdx", clock=fast(), faults="saturate@1") as sim:
        # Integration time defaults to 100 ms; no retake, so the flare fails the trigger.
        spec = make_device("spec", sim.url("obp"), timeout=1.0, saturation_retries=0)
        try:
            before = frames(sim)
            with pytest.raises(FailedStatus) as limit:
                engine(bps.mv(spec.integration_time, 1000))
            assert isinstance(limit.value.__cause__, SafetyLimitError) and frames(sim) == before
            assert spec.integration_time.get() == 100000
            with pytest.raises(FailedStatus) as flare:
                engine(bps.trigger(spec, wait=True))
            assert isinstance(flare.value.__cause__, Saturated)
            with pytest.raises(FailedStatus) as uncalibrated:
                engine(bps.trigger(spec, wait=True))  # sample mode before any dark/reference
            assert isinstance(uncalibrated.value.__cause__, MissingCalibration)
            with pytest.raises(ValueError, match="mode must be one of sample, dark, reference"):
                spec.mode.put("blank")
        finally:
            spec.destroy()
    with pytest.raises(ValueError, match=r"unknown option.*colour.*allowed"):
        make_device("spec", "socket://127.0.0.1:1", colour="red")


@pytest.mark.hardware
def test_real_instrument_answers_a_harmless_query():
    url = os.environ.get("SDL_OCEAN_URL")
    if not url:
        pytest.fail("set SDL_OCEAN_URL (e.g. socket://192.168.1.200:57357) to run the hardware test")
    with OceanSpectrometer.connect(url, timeout=2.0) as spec:
        assert spec.product_id() > 0
        assert spec.serial_number()
        assert len(spec.wavelengths()) == spec.model.pixels
