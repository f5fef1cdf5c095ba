"""The ocean-hdx simulator on the wire: OBP frames in, OBP frames out, physics from the world."""

from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.errors import InstrumentTimeout
from drivers.ocean import codec
from drivers.ocean.codec import ErrorCode, Message, MessageType
from drivers.transport import Transport
from simulators.base import ConfigError
from simulators.clock import ScaledClock, VirtualClock
from simulators.lab import build_single
from simulators.testing import run_simulator

FAST = ScaledClock(1000.0)


def read_frame(transport: Transport, timeout: float = 2.0) -> Message:
    head = transport.read_exactly(codec.HEADER_SIZE, timeout=timeout)
    header = codec.decode_header(head)
    return codec.decode(head + transport.read_exactly(header.bytes_remaining, timeout=timeout))


def ask(transport: Transport, message_type: int, data: bytes = b"", **options) -> Message:
    frame = codec.request(message_type, data, **options)
    return transport.exchange(frame, read_frame)


def spectrum(transport: Transport) -> np.ndarray:
    reply = ask(transport, MessageType.GET_SPECTRUM_NOW_HDX)
    assert not reply.is_nack, codec.error_text(reply.error)
    return codec.unpack_spectrum(reply.data, 2068)


def wait_until(condition, what: str, deadline_s: float = 5.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def fill_holder(sim, dye: str, dye_ul: float, water_ul: float) -> None:
    def fill() -> None:
        world = sim.lab.world
        vial = world.new_vessel()
        world.stations["spectrometer"].vessel = vial
        world.transfer(world.stocks[dye], vial, dye_ul)
        world.transfer(world.stocks["water"], vial, water_ul)

    sim.call(fill)


def test_identity_and_calibration_queries():
    with run_simulator("ocean-hdx", clock=FAST) as sim, Transport(sim.url("obp")) as link:
        length = codec.unpack_u8(ask(link, MessageType.GET_SERIAL_NUMBER_LENGTH).data)
        assert ask(link, MessageType.GET_SERIAL_NUMBER).data[:length] == b"HDX01234"
        assert codec.unpack_u16(ask(link, MessageType.GET_PRODUCT_ID).data) == 0x2003
        assert codec.unpack_u16(ask(link, MessageType.GET_VENDOR_ID).data) == 0x2457
        count = codec.unpack_u8(ask(link, MessageType.GET_WAVELENGTH_COEFFICIENT_COUNT).data)
        first = ask(link, MessageType.GET_WAVELENGTH_COEFFICIENT, b"\x01")
        assert count == 4 and codec.unpack_f32(first.data) == pytest.approx(0.3145, rel=1e-6)
        assert first.is_response and not first.is_ack  # a query's answer is data, not an ACK
        assert codec.unpack_u8(ask(link, MessageType.GET_NONLINEARITY_COEFFICIENT_COUNT).data) == 3


def test_nacks_carry_the_obp_error_numbers():
    config = {"md5_checksums": True}
    with run_simulator("ocean-hdx", clock=FAST, config=config) as sim, Transport(sim.url("obp")) as link:
        unknown = ask(link, 0x00ABCDEF, regarding=42)
        assert unknown.is_nack and unknown.error == ErrorCode.UNKNOWN_MESSAGE_TYPE
        assert unknown.regarding == 42 and unknown.message_type == 0x00ABCDEF
        short = ask(link, MessageType.SET_INTEGRATION_TIME_US, b"\x10\x27", ack=True)
        assert short.error == ErrorCode.PAYLOAD_LENGTH_MISMATCH
        too_short_time = ask(link, MessageType.SET_INTEGRATION_TIME_US, codec.pack_u32(100), ack=True)
        assert too_short_time.is_nack and too_short_time.error == ErrorCode.INVALID_PAYLOAD
        assert ask(link, MessageType.GET_WAVELENGTH_COEFFICIENT, b"\x09").error == ErrorCode.INVALID_PAYLOAD
        assert ask(link, MessageType.SET_LAMP_ENABLE, b"\x02", ack=True).error == ErrorCode.INVALID_PAYLOAD
        assert ask(link, MessageType.SET_TRIGGER_MODE, b"\x01", ack=True).error == ErrorCode.INVALID_PAYLOAD
        assert ask(link, MessageType.GET_RAW_SPECTRUM_NOW).error == ErrorCode.UNKNOWN_MESSAGE_TYPE

        corrupt = bytearray(codec.request(MessageType.GET_PRODUCT_ID, md5=True, regarding=7))
        corrupt[50] ^= 0xFF
        bad_sum = link.exchange(bytes(corrupt), read_frame)
        assert bad_sum.error == ErrorCode.BAD_CHECKSUM and bad_sum.regarding == 7
        odd_checksum = bytearray(codec.request(MessageType.GET_PRODUCT_ID))
        odd_checksum[22] = 9
        assert link.exchange(bytes(odd_checksum), read_frame).error == ErrorCode.UNKNOWN_CHECKSUM_TYPE
        obp2 = bytearray(codec.request(MessageType.GET_PRODUCT_ID))
        obp2[2:4] = b"\x00\x20"
        assert link.exchange(bytes(obp2), read_frame).error == ErrorCode.INVALID_PROTOCOL
        # After all that, the session is still in step.
        assert codec.unpack_u16(ask(link, MessageType.GET_PRODUCT_ID).data) == 0x2003


def test_commands_ack_only_when_asked_and_noise_before_a_frame_is_skipped():
    with run_simulator("ocean-hdx", clock=FAST) as sim, Transport(sim.url("obp")) as link:
        simulator = sim.lab.simulators["ocean-hdx"]
        link.write(codec.request(MessageType.SET_INTEGRATION_TIME_US, codec.pack_u32(20000)))
        ack = ask(link, MessageType.SET_LAMP_ENABLE, b"\x00", ack=True, md5=True)
        # The unacknowledged command left nothing on the wire: the next frame is the lamp's ACK.
        assert ack.is_ack and ack.message_type == MessageType.SET_LAMP_ENABLE
        assert ack.checksum_type == codec.Checksum.MD5  # checksummed request, checksummed reply
        assert sim.call(lambda: (simulator.integration_time_us, simulator.lamp_enabled)) == (20000, False)
        reply = link.exchange(b"\x00\xff\xc1junk" + codec.request(MessageType.GET_PRODUCT_ID), read_frame)
        assert codec.unpack_u16(reply.data) == 0x2003


def test_acquisition_takes_the_integration_time_and_a_second_client_is_told_not_ready():
    clock = VirtualClock()
    with (
        run_simulator("ocean-hdx", clock=clock) as sim,
        Transport(sim.url("obp")) as first,
        Transport(sim.url("obp")) as second,
    ):
        simulator = sim.lab.simulators["ocean-hdx"]
        first.write(codec.request(MessageType.GET_SPECTRUM_NOW_HDX))
        wait_until(lambda: sim.call(lambda: simulator.acquiring), "the acquisition to start")
        busy = ask(second, MessageType.GET_SPECTRUM_NOW_HDX)
        assert busy.is_nack and busy.error == ErrorCode.NOT_READY
        refused = ask(second, MessageType.SET_INTEGRATION_TIME_US, codec.pack_u32(50000), ack=True)
        assert refused.error == ErrorCode.NOT_READY
        assert codec.unpack_u16(ask(second, MessageType.GET_PRODUCT_ID).data) == 0x2003  # queries still work
        clock.advance(0.09)  # 100 ms integration time: not yet
        with pytest.raises(InstrumentTimeout):
            read_frame(first, timeout=0.1)
        clock.advance(0.02)
        counts = codec.unpack_spectrum(read_frame(first).data, 2068)
        assert counts.max() > 10000 and not sim.call(lambda: simulator.acquiring)


def test_counts_follow_lamp_integration_time_and_the_sample():
    with run_simulator("ocean-hdx", clock=FAST) as sim, Transport(sim.url("obp")) as link:
        simulator = sim.lab.simulators["ocean-hdx"]
        blank = spectrum(link)
        ask(link, MessageType.SET_INTEGRATION_TIME_US, codec.pack_u32(50000), ack=True)
        half = spectrum(link)
        np.testing.assert_allclose(half - 1000, (blank - 1000) / 2, rtol=0.05, atol=40)
        ask(link, MessageType.SET_LAMP_ENABLE, b"\x00", ack=True)
        dark = spectrum(link)
        assert abs(dark.mean() - 1000 * 0.95) < 20 and dark.std() < 15  # read noise around the offset
        ask(link, MessageType.SET_LAMP_ENABLE, b"\x01", ack=True)
        fill_holder(sim, "blue", 500, 1500)  # 2.5 µM blue: A ≈ 0.33 at 630 nm
        sample = spectrum(link)
        wavelengths = simulator.wavelengths
        expected = sim.call(
            lambda: sim.lab.world.chemistry.absorbance(sim.lab.world.vessel_at("spectrometer"), wavelengths)
        )
        peak = int(np.argmax(expected))
        ratio = (sample[peak - 5 : peak + 5] - dark[peak - 5 : peak + 5]).mean() / (
            half[peak - 5 : peak + 5] - dark[peak - 5 : peak + 5]
        ).mean()
        assert -np.log10(ratio) == pytest.approx(expected[peak], abs=0.03)


def test_long_integration_saturates_at_full_scale():
    with run_simulator("ocean-hdx", clock=FAST) as sim, Transport(sim.url("obp")) as link:
        ask(link, MessageType.SET_INTEGRATION_TIME_US, codec.pack_u32(400000), ack=True)
        counts = spectrum(link)
        assert counts.max() == 65535 and (counts == 65535).sum() > 100
        assert sim.call(lambda: sim.lab.simulators["ocean-hdx"].acquisitions) == 1


def test_not_ready_and_saturate_faults_fire_on_acquisitions():
    with (
        run_simulator("ocean-hdx", clock=FAST, faults="not-ready@1,saturate@1") as sim,
        Transport(sim.url("obp")) as link,
    ):
        assert ask(link, MessageType.GET_PRODUCT_ID).data  # not an acquisition: no opportunity
        assert ask(link, MessageType.GET_SPECTRUM_NOW_HDX).error == ErrorCode.NOT_READY
        flare = spectrum(link)
        assert (flare == 65535).sum() > 1000
        assert spectrum(link).max() < 40000


def test_firmware_without_md5_refuses_checksummed_requests():
    config = {"md5_checksums": False}
    with run_simulator("ocean-hdx", clock=FAST, config=config) as sim, Transport(sim.url("obp")) as link:
        refused = ask(link, MessageType.GET_PRODUCT_ID, md5=True)
        assert refused.error == ErrorCode.UNKNOWN_CHECKSUM_TYPE
        assert refused.checksum_type == codec.Checksum.NONE
        assert codec.unpack_u16(ask(link, MessageType.GET_PRODUCT_ID).data) == 0x2003


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"colour": "red"}, "unknown key.*colour.*allowed: .*dark_level"),
        ({"holder": "bench"}, "holder: no station 'bench'"),
        ({"lamp": {"watts": 5}}, "lamp: unknown key.*watts"),
        ({"pixels": -3}, "pixels: expected a positive whole number"),
        ({"integration_time_us": {"initial": 1}}, "integration_time_us: need min <= initial <= max"),
    ],
)
def test_bad_configuration_names_the_field(config, message):
    with pytest.raises(ConfigError, match=message):
        build_single("ocean-hdx", FAST, config=config)
