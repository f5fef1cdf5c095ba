"""Ocean Insight HDX spectrometer over the Ocean Binary Protocol (``ocean-hdx``, endpoint ``obp``).

The spectrometer looks through whatever vessel sits at its holder station: the counts of pixel p are

    dark + lamp(λp) · t/t_ref · 10^(−A(λp)) + shot noise + read noise

with A from the world's chemistry model (an empty holder is a blank), passed through the inverse of
the factory nonlinearity polynomial (so a host that linearises with the published coefficients gets
linear counts back) and clipped at full scale. An acquisition takes its integration time in simulated
time; a second connection that asks for one meanwhile is told "not ready" (OBP error 7).

The lamp-enable line (OBP 0x00110410) gates the light source, which is how a host takes a dark.
A chemistry model with ``photoluminescence(vessel, wavelengths, excitation_counts)`` adds the sample's
emission to the light that reaches the detector, excited by the lamp and, when the holder's station is
lit (``light`` > 0), by an excitation LED (365 nm, behind a long-pass filter): with the lamp off, a
"dark" then reads the photoluminescence alone, as an in-line PL measurement does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from drivers.ocean import codec
from drivers.ocean.codec import ErrorCode, FrameError, Message, MessageType
from simulators.base import ConfigError, Simulator, register
from simulators.stream import Stream

_DEFAULTS: dict[str, Any] = {
    "holder": "spectrometer",
    "serial_number": "HDX01234",
    "pixels": 2068,
    # λ(p) = Σ cᵢ pⁱ: about 190–790 nm across the HDX UV-VIS detector.
    "wavelength_coefficients": [190.0, 0.3145, -1.1e-5, -1.0e-10],
    # The detector reads c·P(c) low by a few per cent; hosts divide by P(c) = Σ kᵢ cⁱ to linearise.
    "nonlinearity_coefficients": [0.95, 1.6e-6, -2.0e-11],
    "max_count": 65535,
    "lamp": {
        "peak_counts": 30000.0,  # at the peak wavelength and the reference integration time
        "reference_integration_time_us": 100000,
        "centre_nm": 560.0,
        "width_nm": 170.0,
        "floor": 0.15,  # fraction of the peak left at the far ends of the range
        "enabled": True,  # lamp-enable line at power-up
    },
    "dark_level": 1000.0,
    "dark_current_counts_per_s": 50.0,
    "read_noise": 8.0,
    "electrons_per_count": 4.0,
    "integration_time_us": {"min": 6000, "max": 10_000_000, "initial": 100000},
    "flare_factor": 20.0,  # how much brighter the lamp flashes during a "saturate" fault
    # An excitation LED at the holder (on while the holder's station is lit, ``light`` > 0), behind a
    # long-pass filter: it reaches the detector only as the photoluminescence it excites.
    "excitation": {"centre_nm": 365.0, "width_nm": 8.0, "peak_counts": 30000.0},
    "md5_checksums": True,  # False: NACK checksummed requests with error 8, like firmware without MD5
    "vendor_id": 0x2457,
    "product_id": 0x2003,
}

_NORMAL_TRIGGER = 0


@register
class OceanHDX(Simulator):
    kind = "ocean-hdx"
    endpoints = ("obp",)
    instrument_faults: ClassVar[dict[str, str]] = {
        "not-ready": "an acquisition request is refused with NACK 7 (device not ready)",
        "saturate": "an acquisition catches a lamp flare: counts clip at full scale",
        "acquisition-error": "an acquisition fails inside the device after its integration time: NACK 13 "
        "(internal device error) with the hardware-exception flag (opportunity: an acquisition)",
    }

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {"holder": "spectrometer"}

    def __init__(self, world, config=None, faults=None, *, name=None):
        super().__init__(world, config, faults, name=name)
        merged = _merge(_DEFAULTS, self.config)
        self.holder: str = str(merged["holder"])
        if self.holder not in world.stations:
            raise ConfigError(f"holder: no station {self.holder!r}; stations: {sorted(world.stations)}")
        self.serial_number = str(merged["serial_number"]).encode("ascii")
        self.pixels = _positive_int(merged["pixels"], "pixels")
        # Coefficients travel as float32: keep exactly what a client will read back.
        self.wavelength_coefficients = [float(np.float32(c)) for c in merged["wavelength_coefficients"]]
        self.nonlinearity_coefficients = [float(np.float32(c)) for c in merged["nonlinearity_coefficients"]]
        self.max_count = _positive_int(merged["max_count"], "max_count")
        self.lamp = dict(merged["lamp"])
        self.excitation = {k: float(v) for k, v in merged["excitation"].items()}
        self.dark_level = float(merged["dark_level"])
        self.dark_current = float(merged["dark_current_counts_per_s"])
        self.read_noise = float(merged["read_noise"])
        self.electrons_per_count = float(merged["electrons_per_count"])
        limits = merged["integration_time_us"]
        self.min_integration_us = _positive_int(limits["min"], "integration_time_us.min")
        self.max_integration_us = _positive_int(limits["max"], "integration_time_us.max")
        self.integration_time_us = _positive_int(limits["initial"], "integration_time_us.initial")
        if not self.min_integration_us <= self.integration_time_us <= self.max_integration_us:
            raise ConfigError("integration_time_us: need min <= initial <= max")
        self.flare_factor = float(merged["flare_factor"])
        self.md5_checksums = bool(merged["md5_checksums"])
        self.vendor_id = int(merged["vendor_id"])
        self.product_id = int(merged["product_id"])
        self.lamp_enabled = bool(self.lamp["enabled"])
        self.trigger_mode = _NORMAL_TRIGGER
        p = np.arange(self.pixels, dtype=np.float64)
        self.wavelengths = np.polynomial.polynomial.polyval(p, self.wavelength_coefficients)
        self.acquiring = False
        #: Every frame that reached the simulator, good or bad: tests use it to prove the wire stayed silent.
        self.frames_received = 0
        self.acquisitions = 0
        self.aborts = 0
        wl, nl = self.wavelength_coefficients, self.nonlinearity_coefficients
        self._handlers = {
            MessageType.GET_SERIAL_NUMBER: (0, lambda _: self.serial_number),
            MessageType.GET_SERIAL_NUMBER_LENGTH: (0, lambda _: codec.pack_u8(len(self.serial_number))),
            MessageType.GET_VENDOR_ID: (0, lambda _: codec.pack_u16(self.vendor_id)),
            MessageType.GET_PRODUCT_ID: (0, lambda _: codec.pack_u16(self.product_id)),
            MessageType.SET_INTEGRATION_TIME_US: (4, self._set_integration_time),
            MessageType.SET_TRIGGER_MODE: (1, self._set_trigger_mode),
            MessageType.SET_LAMP_ENABLE: (1, self._set_lamp),
            MessageType.ABORT_ACQUISITION: (0, self._abort),
            MessageType.GET_WAVELENGTH_COEFFICIENT_COUNT: (0, lambda _: codec.pack_u8(len(wl))),
            MessageType.GET_WAVELENGTH_COEFFICIENT: (1, lambda d: _coefficient(wl, d)),
            MessageType.GET_NONLINEARITY_COEFFICIENT_COUNT: (0, lambda _: codec.pack_u8(len(nl))),
            MessageType.GET_NONLINEARITY_COEFFICIENT: (1, lambda d: _coefficient(nl, d)),
        }

    # -- the session ----------------------------------------------------------------------------------
    async def serve(self, endpoint: str, stream: Stream) -> None:
        while True:
            try:
                request = await self._read_request(stream)
            except FrameError as exc:
                self.log.info("bad frame: %s", exc)
                nack = Message(exc.message_type, flags=codec.Flag.RESPONSE | codec.Flag.NACK, error=exc.code,
                               regarding=exc.regarding)  # fmt: skip
                await stream.send(codec.encode(nack))
                continue
            answer = await self._answer(request)
            if answer is not None:
                await stream.send(codec.encode(answer))

    async def _read_request(self, stream: Stream) -> Message:
        # Hunt for the start bytes, so line noise before a frame costs nothing but itself.
        window = await stream.read_exactly(2)
        while window != codec.START:
            window = window[1:] + await stream.read_exactly(1)
        head = window + await stream.read_exactly(codec.HEADER_SIZE - 2)
        self.frames_received += 1
        header = codec.decode_header(head)
        body = await stream.read_exactly(header.bytes_remaining)
        self.record("obp", head + body)
        return codec.decode(head + body)

    async def _answer(self, request: Message) -> Message | None:
        if request.checksum_type == codec.Checksum.MD5 and not self.md5_checksums:
            plain = Message(request.message_type, regarding=request.regarding)
            return _nack(plain, ErrorCode.UNKNOWN_CHECKSUM_TYPE)
        if request.message_type == MessageType.GET_SPECTRUM_NOW_HDX:
            if request.data:
                return _nack(request, ErrorCode.PAYLOAD_LENGTH_MISMATCH)
            return await self._acquire(request)
        try:
            size, handler = self._handlers[request.message_type]
        except KeyError:
            return _nack(request, ErrorCode.UNKNOWN_MESSAGE_TYPE)
        if len(request.data) != size:
            return _nack(request, ErrorCode.PAYLOAD_LENGTH_MISMATCH)
        try:
            data = handler(request.data)
        except _Refused as refusal:
            return _nack(request, refusal.code)
        if data is None and not request.wants_ack:
            return None  # a command nobody asked to acknowledge succeeds silently
        return codec.reply(request, data or b"")

    # -- messages ---------------------------------------------------------------------------------------
    def _set_integration_time(self, data: bytes) -> None:
        value = codec.unpack_u32(data)
        if not self.min_integration_us <= value <= self.max_integration_us:
            raise _Refused(ErrorCode.INVALID_PAYLOAD)
        if self.acquiring:
            raise _Refused(ErrorCode.NOT_READY)
        self.log.info("integration time %d µs", value)
        self.integration_time_us = value

    def _set_trigger_mode(self, data: bytes) -> None:
        # Only free-running acquisition is simulated; external-trigger modes would wait for a pulse forever.
        if codec.unpack_u8(data) != _NORMAL_TRIGGER:
            raise _Refused(ErrorCode.INVALID_PAYLOAD)
        self.trigger_mode = _NORMAL_TRIGGER

    def _abort(self, data: bytes) -> None:
        # Requests on one connection are served in turn, so an abort arrives between acquisitions:
        # there is nothing in flight to cut short, and the next acquisition starts only if asked.
        self.log.info("abort acquisition")
        self.aborts += 1

    def _set_lamp(self, data: bytes) -> None:
        value = codec.unpack_u8(data)
        if value not in (0, 1):
            raise _Refused(ErrorCode.INVALID_PAYLOAD)
        self.log.info("lamp %s", "on" if value else "off")
        self.lamp_enabled = bool(value)

    async def _acquire(self, request: Message) -> Message:
        if self.acquiring or self.faults.fires("not-ready"):
            return _nack(request, ErrorCode.NOT_READY)
        self.acquiring = True
        try:
            seconds = self.integration_time_us / 1e6
            await self.world.clock.sleep(seconds)
            if self.faults.fires("acquisition-error"):
                self.log.info("fault acquisition-error")
                failed = _nack(request, ErrorCode.INTERNAL_DEVICE_ERROR)
                return dataclasses.replace(failed, flags=failed.flags | codec.Flag.HW_EXCEPTION)
            counts = self.counts(seconds, flare=self.faults.fires("saturate"))
        finally:
            self.acquiring = False
        self.acquisitions += 1
        return codec.reply(request, codec.pack_spectrum(counts))

    # -- physics --------------------------------------------------------------------------------------------
    def lamp_counts(self, seconds: float) -> np.ndarray:
        """Counts the lamp alone puts on each pixel through a blank in ``seconds``."""
        if not self.lamp_enabled:
            return np.zeros(self.pixels)
        lamp = self.lamp
        shape = np.exp(-0.5 * ((self.wavelengths - float(lamp["centre_nm"])) / float(lamp["width_nm"])) ** 2)
        floor = float(lamp["floor"])
        scale = seconds * 1e6 / float(lamp["reference_integration_time_us"])
        return float(lamp["peak_counts"]) * scale * (floor + (1.0 - floor) * shape)

    def excitation_counts(self, seconds: float) -> np.ndarray:
        """Photons per pixel band the holder's LED sends into the sample in ``seconds`` (0 when unlit)."""
        lit = self.world.stations[self.holder].light
        if lit <= 0:
            return np.zeros(self.pixels)
        led = self.excitation
        scale = seconds * 1e6 / float(self.lamp["reference_integration_time_us"])
        shape = np.exp(-0.5 * ((self.wavelengths - led["centre_nm"]) / led["width_nm"]) ** 2)
        return lit * led["peak_counts"] * scale * shape

    def counts(self, seconds: float, *, flare: bool = False) -> np.ndarray:
        chemistry = self.world.chemistry
        vessel = self.world.vessel_at(self.holder)
        absorbance = chemistry.absorbance(vessel, self.wavelengths)
        lamp = self.lamp_counts(seconds)
        light = lamp * np.power(10.0, -np.asarray(absorbance, dtype=np.float64))
        # A fluorescing sample adds its emission, excited by the lamp and the holder's LED, to what passes.
        emission = getattr(chemistry, "photoluminescence", None)
        if emission is not None and vessel is not None:
            excitation = lamp + self.excitation_counts(seconds)
            light = light + np.asarray(emission(vessel, self.wavelengths, excitation), dtype=np.float64)
        if flare:
            self.log.info("fault saturate: lamp flare")
            light = light * self.flare_factor
        rng = self.world.rng
        shot = rng.normal(0.0, 1.0, self.pixels) * np.sqrt(np.maximum(light, 0.0) / self.electrons_per_count)
        read = rng.normal(0.0, self.read_noise, self.pixels)
        linear = self.dark_level + self.dark_current * seconds + light + shot + read
        return np.clip(np.rint(self._unlinearise(linear)), 0, self.max_count).astype(np.uint16)

    def _unlinearise(self, linear: np.ndarray) -> np.ndarray:
        # The detector reading r satisfies r / P(r) = linear; P is within a few per cent of 1, so a
        # fixed-point iteration converges to well under a count in a few steps.
        reading = np.maximum(linear, 0.0)
        for _ in range(6):
            reading = np.maximum(linear, 0.0) * np.polynomial.polynomial.polyval(
                np.minimum(reading, self.max_count * 2.0), self.nonlinearity_coefficients
            )
        return reading


class _Refused(Exception):
    def __init__(self, code: int):
        self.code = code


def _coefficient(coefficients: list[float], data: bytes) -> bytes:
    index = codec.unpack_u8(data)
    if index >= len(coefficients):
        raise _Refused(ErrorCode.INVALID_PAYLOAD)
    return codec.pack_f32(coefficients[index])


def _nack(request: Message, code: int) -> Message:
    return codec.reply(request, error=code)


def _merge(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(defaults))}"
        )
    merged = dict(defaults)
    for key, value in overrides.items():
        if isinstance(defaults[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key}: expected a mapping with keys {', '.join(sorted(defaults[key]))}")
            try:
                merged[key] = _merge(defaults[key], value)
            except ConfigError as exc:
                raise ConfigError(f"{key}: {exc}") from None
        else:
            merged[key] = value
    return merged


def _positive_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value <= 0:
        raise ConfigError(f"{field}: expected a positive whole number, got {value!r}")
    return int(value)


__all__ = ["OceanHDX"]
