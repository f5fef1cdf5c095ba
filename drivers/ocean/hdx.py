"""Ocean Insight network spectrometers (HDX) over the Ocean Binary Protocol.

One ``OceanSpectrometer`` talks to one instrument through a ``drivers.transport.Transport``:
``socket://host:57357`` for an HDX on the network, or any pyserial URL (a pseudo-terminal, an
RS-232 adapter for OBP models with a serial port). Calibration (wavelengths, linearity), dark and
reference subtraction and absorbance are computed here on the host, as in Ocean's software.

Every request is idempotent (queries, settings, "acquire now"), so after a corrupted, truncated or
missing reply or a dropped connection the driver simply asks again under the shared
:class:`drivers.retry.RetryPolicy` (``retries`` resends, an overall deadline per call); after a
reconnect it re-applies the settings it made (integration time, lamp). "Not ready" is waited out
for up to ``not_ready_wait_s``; a saturated scan (a lamp flare) is taken once more.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from drivers.errors import InstrumentTimeout, ReplyCutShort, SafetyLimitError
from drivers.halt import Halt
from drivers.ocean import codec, spectra
from drivers.ocean.codec import ErrorCode, Message, MessageType
from drivers.ocean.errors import (
    CorruptedRequest,
    HardwareException,
    MissingCalibration,
    Nack,
    NotReady,
    Saturated,
    TruncatedReply,
    UnexpectedReply,
)
from drivers.retry import Backoff, FaultEvents, RetryPolicy
from drivers.transport import Transport, tcp_url

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The HDX answers multicast discovery on 239.239.239.239:57357 and serves OBP over TCP on its port.
DEFAULT_TCP_PORT = 57357


@dataclass(frozen=True)
class Model:
    name: str
    pixels: int
    min_integration_time_us: int
    max_integration_time_us: int
    max_count: int
    spectrum_message: int
    usb_product_id: int


# Figures from seabreeze's device table (pyseabreeze/devices.py, class HDX).
HDX = Model("HDX", 2068, 6_000, 10_000_000, 65535, MessageType.GET_SPECTRUM_NOW_HDX, 0x2003)


class OceanSpectrometer:
    """An Ocean OBP spectrometer; safety limits are checked before any byte is sent."""

    def __init__(
        self,
        transport: Transport,
        *,
        model: Model = HDX,
        min_integration_time_us: int | None = None,
        max_integration_time_us: int | None = None,
        averages: int = 1,
        correct_nonlinearity: bool = True,
        dark_with_lamp: bool = True,
        md5: bool = True,
        retries: int = 2,
        not_ready_wait_s: float = 5.0,
        saturation_retries: int = 1,
        events: FaultEvents | None = None,
    ):
        self.transport = transport
        self.model = model
        low, high = (
            int(default if given is None else given)
            for given, default in (
                (min_integration_time_us, model.min_integration_time_us),
                (max_integration_time_us, model.max_integration_time_us),
            )
        )
        if not model.min_integration_time_us <= low <= high <= model.max_integration_time_us:
            raise ValueError(
                f"integration-time limits must satisfy {model.min_integration_time_us} <= "
                f"min_integration_time_us <= max_integration_time_us <= {model.max_integration_time_us} "
                f"for the {model.name}; got min={low}, max={high}"
            )
        self.min_integration_time_us = low
        self.max_integration_time_us = high
        self.averages = self._check_averages(averages)
        self.correct_nonlinearity = correct_nonlinearity
        self.dark_with_lamp = dark_with_lamp
        self.md5 = md5
        self.retry = RetryPolicy(attempts=1 + int(retries), deadline_s=None)
        self.events = events or FaultEvents(transport.url)
        self.not_ready_wait_s = float(not_ready_wait_s)
        self.saturation_retries = int(saturation_retries)
        #: A stop (abort(), or the ophyd face's action stopped) ends the acquisition in progress;
        #: acquisitions run as its operations, one at a time.
        self.halt = Halt()
        self._regarding = itertools.count(1)
        self._lock = threading.RLock()
        self._integration_time_us: int | None = None
        self._lamp: bool | None = None
        self._wavelengths: np.ndarray | None = None
        self._nonlinearity: list[float] | None = None
        self.dark: np.ndarray | None = None
        self.reference: np.ndarray | None = None

    @property
    def retries(self) -> int:
        return self.retry.attempts - 1

    @retries.setter
    def retries(self, retries: int) -> None:
        self.retry = self.retry.with_(attempts=1 + int(retries))

    @classmethod
    def connect(cls, url: str, *, timeout: float = 1.0, **options: Any) -> OceanSpectrometer:
        """Open ``url`` (``socket://host:57357``, ``/dev/pts/N``, …) and wrap it."""
        serial_options = {k: options.pop(k) for k in ("baudrate",) if k in options}
        transport = Transport(url, timeout=timeout, **serial_options).open()
        return cls(transport, **options)

    @classmethod
    def connect_tcp(cls, host: str, port: int = DEFAULT_TCP_PORT, **options: Any) -> OceanSpectrometer:
        return cls.connect(tcp_url(host, port), **options)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> OceanSpectrometer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OceanSpectrometer({self.model.name}, {self.transport.url!r})"

    # -- identity and calibration -------------------------------------------------------------------
    def serial_number(self) -> str:
        length = codec.unpack_u8(self._query(MessageType.GET_SERIAL_NUMBER_LENGTH), "serial length")
        return self._query(MessageType.GET_SERIAL_NUMBER)[:length].decode("ascii", "replace")

    def product_id(self) -> int:
        """The USB product id (0x2003 for an HDX): one short round trip, the cheapest query there is."""
        return codec.unpack_u16(self._query(MessageType.GET_PRODUCT_ID), "product id")

    def wavelength_coefficients(self) -> list[float]:
        return self._coefficients(
            MessageType.GET_WAVELENGTH_COEFFICIENT_COUNT, MessageType.GET_WAVELENGTH_COEFFICIENT
        )

    def nonlinearity_coefficients(self) -> list[float]:
        return self._coefficients(
            MessageType.GET_NONLINEARITY_COEFFICIENT_COUNT, MessageType.GET_NONLINEARITY_COEFFICIENT
        )

    def wavelengths(self, *, refresh: bool = False) -> np.ndarray:
        """Pixel wavelengths in nm from the factory calibration (read once, then cached)."""
        if self._wavelengths is None or refresh:
            self._wavelengths = spectra.wavelengths(self.wavelength_coefficients(), self.model.pixels)
        return self._wavelengths.copy()

    def _coefficients(self, count_type: int, item_type: int) -> list[float]:
        count = codec.unpack_u8(self._query(count_type), "coefficient count")
        items = (self._query(item_type, codec.pack_u8(i)) for i in range(count))
        return [codec.unpack_f32(item, "coefficient") for item in items]

    # -- settings -----------------------------------------------------------------------------------
    @property
    def integration_time_us(self) -> int | None:
        """The integration time this driver last set (None until it sets one)."""
        return self._integration_time_us

    def check_integration_time_us(self, microseconds: int) -> int:
        """The integration time as a whole number of µs; SafetyLimitError outside the limits."""
        value = int(microseconds)
        if value != microseconds or not self.min_integration_time_us <= value <= self.max_integration_time_us:
            raise SafetyLimitError(
                f"{self.model.name}: integration time {microseconds} µs is outside the allowed range "
                f"{self.min_integration_time_us}–{self.max_integration_time_us} µs (whole microseconds); "
                "nothing was sent"
            )
        return value

    def set_integration_time_us(self, microseconds: int) -> None:
        value = self.check_integration_time_us(microseconds)
        with self._lock:
            log.info("%s: integration time %d µs", self.transport.url, value)
            self._command(MessageType.SET_INTEGRATION_TIME_US, codec.pack_u32(value))
            if value != self._integration_time_us and (self.dark is not None or self.reference is not None):
                log.warning("%s: integration time changed; dark and reference discarded", self.transport.url)
                self.dark = self.reference = None
            self._integration_time_us = value

    def set_averages(self, averages: int) -> None:
        self.averages = self._check_averages(averages)

    @property
    def lamp(self) -> bool | None:
        """The lamp-enable line as this driver last set it (None until it sets it)."""
        return self._lamp

    def set_lamp(self, enabled: bool) -> None:
        """Drive the lamp-enable line (the light source's TTL shutter/enable input)."""
        with self._lock:
            log.info("%s: lamp %s", self.transport.url, "on" if enabled else "off")
            self._command(MessageType.SET_LAMP_ENABLE, codec.pack_u8(1 if enabled else 0))
            self._lamp = bool(enabled)

    @staticmethod
    def _check_averages(averages: int) -> int:
        if int(averages) != averages or not 1 <= averages <= 1000:
            raise SafetyLimitError(f"averages must be a whole number from 1 to 1000, got {averages!r}")
        return int(averages)

    # -- acquisition --------------------------------------------------------------------------------
    def raw_spectrum(self) -> np.ndarray:
        """One acquisition, counts exactly as the detector sent them (no averaging, no correction)."""
        seconds = (self._integration_time_us or self.model.max_integration_time_us) / 1e6
        # A scan the device reports as failed (a hardware exception) is taken again, like a lost reply.
        policy = self.retry.with_(retryable=(*self.retry.retryable, HardwareException))
        message = self.model.spectrum_message
        with self.halt.operation() as stopping:
            self.halt.check(f"{self.model.name}: acquisition")
            data = self._with_retries(
                lambda: self._send_once(message, processing_s=seconds).data,
                codec.type_name(message),
                policy=policy,
                cancelled=stopping,
            )
        return codec.unpack_spectrum(data, self.model.pixels)

    def abort(self) -> None:
        """Stop acquiring, from any thread: no new acquisition starts, and the device is told to abort.

        The abort waits for the link: over one connection it goes out when the scan in flight ends.
        """
        self.halt.request()
        self._command(MessageType.ABORT_ACQUISITION, b"")

    def spectrum(self) -> np.ndarray:
        """``averages`` acquisitions averaged and linearised; Saturated if any pixel hit full scale.

        A saturated set of scans is taken once more (``saturation_retries``): a lamp flare passes.
        """
        with self.halt.operation(), self._lock:  # always in this order: an acquisition, then the settings
            scans: list[np.ndarray] = []
            for attempt in range(1, self.saturation_retries + 2):
                scans = [self.raw_spectrum() for _ in range(self.averages)]
                clipped = max(len(spectra.saturated_pixels(scan, self.model.max_count)) for scan in scans)
                if not clipped:
                    if attempt > 1:
                        self.events.emit("recovered", "alarm", "a retaken scan is below full scale")
                    break
                saturated = Saturated(
                    f"{self.model.name}: {clipped} pixel(s) at full scale ({self.model.max_count} counts) at "
                    f"{self._integration_time_us} µs; shorten the integration time and measure again",
                    clipped,
                )
                if attempt > self.saturation_retries:
                    self.events.emit("gave_up", "alarm", str(saturated), attempt)
                    raise saturated
                self.events.emit("retry", "alarm", f"{saturated}; taking the scan again", attempt)
            counts = np.mean(scans, axis=0)
            if self.correct_nonlinearity:
                if self._nonlinearity is None:
                    self._nonlinearity = self.nonlinearity_coefficients()
                counts = spectra.correct_nonlinearity(counts, self._nonlinearity)
            return counts

    def acquire_dark(self) -> np.ndarray:
        """Measure and keep the dark spectrum (lamp off through the lamp-enable line, unless disabled)."""
        with self.halt.operation(), self._lock:
            if not self.dark_with_lamp:
                self.dark = self.spectrum()
                return self.dark.copy()
            self.set_lamp(False)
            try:
                self.dark = self.spectrum()
            finally:
                self.set_lamp(True)
            log.info("%s: dark taken (mean %.1f counts)", self.transport.url, float(np.mean(self.dark)))
            return self.dark.copy()

    def acquire_reference(self) -> np.ndarray:
        """Measure and keep the reference spectrum (the blank in the holder, lamp on)."""
        with self.halt.operation(), self._lock:
            self.reference = self.spectrum()
            log.info("%s: reference taken (max %.0f counts)", self.transport.url, float(self.reference.max()))
            return self.reference.copy()

    def absorbance(self, sample: np.ndarray | None = None) -> np.ndarray:
        """A = −log10((S − D)/(R − D)) of ``sample`` (a ``spectrum()``), or of a fresh acquisition."""
        if self.dark is None or self.reference is None:
            raise MissingCalibration(
                f"{self.model.name}: absorbance needs a dark and a reference taken at the current "
                "integration time; call acquire_dark() and acquire_reference() first"
            )
        counts = self.spectrum() if sample is None else sample
        return spectra.absorbance(counts, self.dark, self.reference)

    # -- recovery -----------------------------------------------------------------------------------
    def recover(self) -> None:
        """Reconnect and re-apply the settings this driver made (after a dropped link or a power cycle)."""
        with self._lock:
            log.info("%s: reconnecting", self.transport.url)
            self.transport.reconnect()
            self._reapply_settings()

    def shorten_integration(self) -> int:
        """The documented remedy for saturation: halve the integration time (not below the minimum).

        Dark and reference are discarded with the old integration time; returns the new one (µs).
        """
        current = self._integration_time_us or self.max_integration_time_us
        shorter = max(self.min_integration_time_us, current // 2)
        if shorter == current:
            raise Saturated(f"{self.model.name}: already at the shortest integration time ({current} µs)", 0)
        self.set_integration_time_us(shorter)
        return shorter

    def _reapply_settings(self) -> None:
        if self._integration_time_us is not None:
            self._send_once(
                MessageType.SET_INTEGRATION_TIME_US, codec.pack_u32(self._integration_time_us), ack=True
            )
        if self._lamp is not None:
            self._send_once(MessageType.SET_LAMP_ENABLE, codec.pack_u8(int(self._lamp)), ack=True)

    # -- exchanges ----------------------------------------------------------------------------------
    def _query(self, message_type: int, data: bytes = b"") -> bytes:
        return self._with_retries(
            lambda: self._send_once(message_type, data).data, codec.type_name(message_type)
        )

    def _command(self, message_type: int, data: bytes) -> None:
        self._with_retries(
            lambda: self._send_once(message_type, data, ack=True), codec.type_name(message_type)
        )

    def _with_retries(
        self,
        attempt: Callable[[], T],
        what: str,
        *,
        policy: RetryPolicy | None = None,
        cancelled: threading.Event | None = None,
    ) -> T:
        def once() -> T:
            if not self.transport.is_open:
                self.transport.open()
                self._reapply_settings()
            return self._waiting_out_not_ready(attempt, what)

        return (policy or self.retry).run(
            once,
            transport=self.transport,
            events=self.events,
            what=what,
            on_reconnect=self._reapply_settings,
            cancelled=cancelled,
        )

    def _waiting_out_not_ready(self, attempt: Callable[[], T], what: str) -> T:
        # "Not ready": an acquisition (ours on another connection, or the device's own) is finishing.
        deadline = time.monotonic() + self.not_ready_wait_s
        intervals = Backoff(0.005, max_s=0.1)
        tries = 0
        while True:
            tries += 1
            try:
                return attempt()
            except NotReady as exc:
                if self.retry.attempts == 1 or time.monotonic() >= deadline:
                    self.events.emit("gave_up", exc.fault, f"{what}: {exc}", tries)
                    raise
                self.events.emit("retry", exc.fault, f"{what}: not ready; asking again", tries)
                time.sleep(intervals.next())

    def _send_once(
        self, message_type: int, data: bytes = b"", *, ack: bool = False, processing_s: float = 0.0
    ) -> Message:
        """One request and its reply; ``processing_s``: the device works that long before it answers."""
        regarding = next(self._regarding) & 0xFFFFFFFF or 1
        frame = codec.request(message_type, data, ack=ack, regarding=regarding, md5=self.md5)
        log.debug("%s: -> %s %s", self.transport.url, codec.type_name(message_type), data.hex())
        reply = self.transport.exchange(
            frame, lambda t: self._read_reply(t, message_type, regarding, processing_s),
            processing_s=processing_s,
        )  # fmt: skip
        if reply.is_hardware_exception:
            # Before the NACK it may come with: the device's own failure, not a refused request.
            raise HardwareException(
                f"{codec.type_name(message_type)}: device reports a hardware exception "
                f"(error {reply.error}: {codec.error_text(reply.error)})"
            )
        if reply.is_nack:
            if reply.error == ErrorCode.UNKNOWN_CHECKSUM_TYPE and self.md5:
                log.warning("%s: device does not take MD5 checksums; sending without", self.transport.url)
                self.md5 = False
                return self._send_once(message_type, data, ack=ack, processing_s=processing_s)
            if reply.error == ErrorCode.NOT_READY:
                raise NotReady(message_type)
            if reply.error == ErrorCode.BAD_CHECKSUM:
                raise CorruptedRequest(message_type)
            raise Nack(message_type, reply.error)
        if ack and not reply.is_ack:
            raise UnexpectedReply(f"{codec.type_name(message_type)}: reply is neither ACK nor NACK")
        return reply

    def _read_reply(
        self, transport: Transport, message_type: int, regarding: int, processing_s: float
    ) -> Message:
        # Late replies to earlier requests are skipped, but only until the longest this reply may
        # take: a peer that keeps sending them must not hold the call forever. Each read waits for
        # the link's learned reply timeout (silence there: InstrumentTimeout).
        # The link's deadline and this one fall together, so whichever expires first, a call that
        # saw only late replies says so.
        deadline = time.monotonic() + processing_s + transport.reply_timeout

        def only_late() -> UnexpectedReply:
            return UnexpectedReply(
                f"{transport.url}: no reply regarding request {regarding} "
                f"({codec.type_name(message_type)}) before the deadline, only late replies"
            )

        skipped = 0
        while True:
            if time.monotonic() >= deadline:
                raise only_late()
            try:
                start = transport.read_exactly(2)
            except ReplyCutShort as exc:
                raise TruncatedReply(f"{transport.url}: {codec.type_name(message_type)}: {exc}") from exc
            except InstrumentTimeout as exc:
                if skipped:
                    raise only_late() from exc
                raise
            if start != codec.START:
                raise codec.FrameError(f"reply starts with {start.hex(' ')}, not an OBP frame")
            try:
                rest = transport.read_exactly(codec.HEADER_SIZE - 2)
                header = codec.decode_header(start + rest)
                body = transport.read_exactly(header.bytes_remaining)
            except (InstrumentTimeout, ReplyCutShort) as exc:
                raise TruncatedReply(
                    f"{transport.url}: {codec.type_name(message_type)} reply stopped part-way"
                ) from exc
            reply = codec.decode(start + rest + body)
            if reply.regarding and reply.regarding != regarding:
                log.info("%s: skipping a late reply (regarding %d)", transport.url, reply.regarding)
                skipped += 1
                continue
            if reply.message_type != message_type:
                raise UnexpectedReply(
                    f"{transport.url}: asked {codec.type_name(message_type)}, "
                    f"got {codec.type_name(reply.message_type)}"
                )
            return reply
