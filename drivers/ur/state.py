"""The arm's state from RTDE (TCP 30004): pushed by the controller, not polled over the dashboard.

``URStateStream`` negotiates RTDE protocol version 2, sets up one output recipe of the fields
below at ``frequency`` Hz and starts; a reader thread keeps the newest package. Reading the state
is then a lock and a copy, and waiting for a change (a program ending) wakes on the package that
shows it instead of on a poll. The stream only reads: it sets up no input recipe, so it never
takes an input register from another RTDE client (``ur_rtde``'s control interface, a fieldbus).
"""

from __future__ import annotations

import logging
import math
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drivers.errors import ConnectionLost, InstrumentTimeout, ProtocolError
from drivers.transport import Transport
from drivers.ur import rtde
from drivers.ur.codec import RobotMode, SafetyStatus
from drivers.ur.rtde import PackageType, Recipe, RTDEError, RuntimeState

log = logging.getLogger(__name__)

FIELDS = (
    "timestamp", "robot_mode", "safety_mode", "runtime_state", "robot_status_bits", "actual_q", "actual_qd",
    "actual_TCP_pose",
)  # fmt: skip
#: Fastest rate a CB3 accepts; an e-Series goes to 500 Hz. Enough to see a program end within 8 ms.
DEFAULT_FREQUENCY = 125.0


@dataclass(frozen=True)
class RobotState:
    """One RTDE data package: the controller's clock and what it reported then."""

    timestamp: float  # controller seconds since it started
    received: float  # time.monotonic() when the package arrived
    robot_mode: RobotMode
    safety: SafetyStatus
    runtime: RuntimeState
    powered: bool
    q: tuple[float, ...]
    qd: tuple[float, ...]
    tcp_pose: tuple[float, ...]
    sequence: int  # packages received before this one

    @property
    def running(self) -> bool:
        return self.runtime == RuntimeState.PLAYING


_MODES = {number: RobotMode(name) for number, name in rtde.ROBOT_MODE_NAMES.items()}
_SAFETY = {
    number: SafetyStatus[name]
    for number, name in rtde.SAFETY_MODE_NAMES.items()
    if name in SafetyStatus.__members__
}
_RUNTIME = {int(state): state for state in RuntimeState}
#: The recipe above, flattened: the struct of one package's body (after its recipe id).
_BODY = struct.Struct(">diiII6d6d6d")


def _state(body: bytes, sequence: int) -> RobotState:
    """A package body of the FIELDS recipe, decoded with one precompiled struct: at 125-500 packages a
    second, the reader thread's CPU is the price of following state over RTDE."""
    values = _BODY.unpack(body)
    return RobotState(
        timestamp=values[0],
        received=time.monotonic(),
        robot_mode=_MODES.get(values[1], RobotMode.NO_CONTROLLER),
        safety=_SAFETY.get(values[2], SafetyStatus.FAULT),
        runtime=_RUNTIME.get(values[3], RuntimeState.STOPPED),
        powered=bool(values[4] & rtde.ROBOT_POWER_ON),
        q=values[5:11],
        qd=values[11:17],
        tcp_pose=values[17:23],
        sequence=sequence,
    )


class URStateStream:
    def __init__(
        self, transport: Transport, *, frequency: float = DEFAULT_FREQUENCY, stale_after: float = 1.0
    ):
        if not (math.isfinite(frequency) and 0 < frequency <= 500):
            raise ValueError(f"RTDE frequency must be in (0, 500] Hz, got {frequency}")
        self.transport = transport
        self.frequency = frequency
        #: A state older than this (s) means the stream stalled: reading it raises ConnectionLost.
        self.stale_after = max(stale_after, 10.0 / frequency)
        self.controller_version: tuple[int, int, int, int] | None = None
        self._recipe: Recipe | None = None
        self._latest: RobotState | None = None
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None
        self._failure: Exception | None = None
        self._closing = False

    @classmethod
    def connect(cls, url: str, **options: Any) -> URStateStream:
        stream = cls(Transport(url), **options)
        stream.open()
        return stream

    # -- lifetime ---------------------------------------------------------------------------
    def open(self) -> URStateStream:
        """Connect, negotiate, set up the recipe and start; returns once the first package arrived."""
        if self._reader is not None and self._reader.is_alive():
            return self
        self.close()
        self._closing = False
        self._failure = None
        self._latest = None
        self.transport.open()
        try:
            self._handshake()
        except BaseException:
            self.transport.close()
            raise
        reader = threading.Thread(target=self._read_packages, name=f"rtde {self.transport.url}", daemon=True)
        self._reader = reader
        reader.start()
        self.wait_for(lambda state: True, timeout=max(2.0, 20.0 / self.frequency))
        log.info("rtde: %d fields at %g Hz from %s", len(FIELDS), self.frequency, self.transport.url)
        return self

    def close(self) -> None:
        self._closing = True
        self.transport.close()  # the reader sees its link gone and ends
        reader, self._reader = self._reader, None
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=5)
        with self._changed:
            self._changed.notify_all()

    @property
    def is_open(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def _exchange(self, request: bytes, kind: PackageType) -> bytes:
        def reply(link: Transport) -> bytes:
            while True:
                size, got = rtde.split_header(link.read_exactly(rtde.HEADER.size))
                payload = link.read_exactly(size - rtde.HEADER.size)
                if got == kind:
                    return payload
                if got != PackageType.TEXT_MESSAGE:
                    raise ProtocolError(f"rtde: expected a reply of type {kind.name}, got type {got}")

        try:
            return self.transport.exchange(request, reply)
        except RTDEError as exc:
            raise ProtocolError(f"rtde: {exc}") from exc

    def _handshake(self) -> None:
        accepted = self._exchange(rtde.request_protocol_version(2), PackageType.REQUEST_PROTOCOL_VERSION)
        if not rtde.parse_success(accepted):
            raise ProtocolError("rtde: the controller refused protocol version 2")
        version = self._exchange(rtde.request_controller_version(), PackageType.GET_URCONTROL_VERSION)
        self.controller_version = rtde.parse_controller_version(version)
        frequency = self.frequency if self.controller_version[0] >= 5 else min(self.frequency, 125.0)
        reply = self._exchange(
            rtde.request_output_setup(FIELDS, frequency), PackageType.CONTROL_PACKAGE_SETUP_OUTPUTS
        )
        recipe = rtde.parse_setup_reply(reply, FIELDS)
        if recipe.valid and recipe.structure.format != _BODY.format:
            raise ProtocolError(f"rtde: the controller's types {recipe.types} are not the guide's")
        if not recipe.valid:
            missing = [
                n for n, t in zip(recipe.names, recipe.types, strict=True) if t not in rtde.TYPE_FORMATS
            ]
            raise ProtocolError(f"rtde: the controller cannot send {', '.join(missing) or 'the recipe'}")
        self._recipe = recipe
        started = self._exchange(rtde.request_start(), PackageType.CONTROL_PACKAGE_START)
        if not rtde.parse_success(started):
            raise ProtocolError("rtde: the controller refused to start the data stream")

    def _read_packages(self) -> None:
        recipe = self._recipe
        assert recipe is not None
        sequence = 0
        timeout = max(1.0, 20.0 / self.frequency)
        try:
            while not self._closing:
                size, kind = rtde.split_header(self.transport.read_exactly(rtde.HEADER.size, timeout=timeout))
                payload = self.transport.read_exactly(size - rtde.HEADER.size, timeout=timeout)
                if kind == PackageType.TEXT_MESSAGE:
                    message, source, level = rtde.parse_text_message(payload)
                    log.log(logging.WARNING if level <= rtde.MessageLevel.WARNING else logging.INFO,
                            "rtde message from %s: %s", source, message)  # fmt: skip
                    continue
                if kind != PackageType.DATA_PACKAGE or not payload:
                    continue
                if len(payload) != 1 + _BODY.size:
                    raise RTDEError(f"data package of {len(payload)} bytes, expected {1 + _BODY.size}")
                state = _state(payload[1:], sequence)
                sequence += 1
                with self._changed:
                    self._latest = state
                    self._changed.notify_all()
        except (ConnectionLost, InstrumentTimeout, RTDEError, ValueError) as exc:
            if not self._closing:
                log.warning("rtde: the state stream from %s stopped: %s", self.transport.url, exc)
                self._failure = exc
        finally:
            self.transport.close()
            with self._changed:
                self._changed.notify_all()

    # -- reading ----------------------------------------------------------------------------
    def latest(self) -> RobotState:
        """The newest state; ConnectionLost if the stream stopped or stalled."""
        with self._changed:
            return self._check(self._latest)

    def wait_for(self, condition: Callable[[RobotState], bool], *, timeout: float,
                 after: int = -1) -> RobotState:  # fmt: skip
        """The first state (newer than package ``after``) that meets ``condition``; InstrumentTimeout if
        none does within ``timeout`` s. Wakes on each package: nothing is polled."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                state = self._latest
                if state is not None and state.sequence > after and condition(state):
                    return self._check(state)
                if self._failure is not None or (self._reader is not None and not self._reader.is_alive()):
                    self._check(state)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise InstrumentTimeout(f"rtde: no state met the condition within {timeout} s")
                self._changed.wait(min(remaining, self.stale_after))

    def _check(self, state: RobotState | None) -> RobotState:
        if self._failure is not None:
            raise ConnectionLost(f"rtde: the state stream stopped: {self._failure}")
        if state is None or self._reader is None or not self._reader.is_alive():
            raise ConnectionLost(f"rtde: no state stream from {self.transport.url}")
        age = time.monotonic() - state.received
        if age > self.stale_after:
            raise ConnectionLost(f"rtde: the newest state is {age:.2f} s old")
        return state
