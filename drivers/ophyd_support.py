"""What the instruments' ophyd faces share: one way to be busy, to stop, to connect.

ophyd's ``set()`` and ``trigger()`` must return at once with a Status that completes later; the
drivers are synchronous, so each face runs the driver call on a thread and settles the Status
from there — with the driver's own exception when it fails, so the plan fails with it.

:class:`BackgroundAction` owns that thread: a second action while one runs fails at once with
``InstrumentBusy``; ``stop()`` sets the action's ``halt`` event (which the driver checks before
every motion command, so nothing moves after a stop) and fails the Status; ``join()`` waits for
the thread to end, which ``disconnect()`` and ``destroy()`` do.

:class:`InstrumentDevice` is the device contract of docs/decisions/0003 on top of an ophyd
``Device``: ``connect``/``disconnect``/``destroy``, ``make_safe``, ``recover``, ``check_health`` and
``subscribe_faults``; a face implements the ``_connect``, ``_disconnect``, ``_make_safe``,
``_recover`` and ``_check_health`` hooks and gets the rest. An instrument that draws from consumables
(``drivers.stock``) implements ``_contents`` and ``_set_contents`` too, and reports what its actions
used on ``self.usage_events``; ``contents``, ``set_contents`` and ``subscribe_usage`` come with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Iterable
from contextlib import contextmanager
from typing import Any

from drivers.errors import InstrumentBusy, InstrumentError, Stopped, name_instrument
from drivers.ophyd_types import Device, DeviceStatus, InvalidState, Signal, StatusBase
from drivers.retry import FaultCallback, FaultEvents, fault_of
from drivers.stock import Contents, UsageCallback, UsageEvents

log = logging.getLogger(__name__)

#: How long disconnect() waits for an action's thread to notice its halt and end.
JOIN_TIMEOUT_S = 10.0


class UnitSignal(Signal):
    """A soft signal that says its units: ophyd's soft ``Signal`` keeps ``metadata={"units": ...}`` but does
    not describe it (only EPICS signals do), so the documents' data keys would carry no units."""

    def describe(self) -> dict[str, dict[str, Any]]:
        description = super().describe()
        units = self.metadata.get("units")
        if units:
            description[self.name]["units"] = units
        return description


def settle(status: StatusBase, exc: BaseException | None = None) -> None:
    """Finish ``status`` or fail it with ``exc``, unless ``stop()`` already settled it (another thread)."""
    try:
        if exc is None:
            status.set_finished()
        else:
            status.set_exception(exc)
    except InvalidState:
        pass


class BackgroundAction:
    """Runs one driver call at a time for a device on a thread, reporting through a DeviceStatus.

    ``work(halt)`` gets the action's own halt event, set by ``stop()``; the driver checks it before
    every command that moves something. A second call while one is running fails its Status at once
    with ``InstrumentBusy`` rather than queueing (a plan that asks an instrument to do two things
    at once has a bug). A thread whose action was stopped or has settled its Status is on its way
    out: the next action waits for it to end before it starts.
    """

    def __init__(self, instrument: str = "") -> None:
        self.instrument = instrument
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._status: DeviceStatus | None = None
        self._thread: threading.Thread | None = None

    @property
    def halt(self) -> threading.Event:
        """The running (or last) action's halt event."""
        return self._halt

    @property
    def busy(self) -> bool:
        """An action runs that nobody stopped and that has not settled its Status."""
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
            return alive and not self._halt.is_set() and not self._done()

    def _done(self) -> bool:
        return self._status is None or self._status.done

    def run(self, device: Device, work: Callable[[threading.Event], None], what: str) -> DeviceStatus:
        # A failed action does not call device.stop() (ophyd's default): failing is not moving, and
        # a busy refusal must not halt the action that is running.
        status = DeviceStatus(device, call_stop_on_failure=False)
        refused: threading.Thread | None = None
        with self._lock:
            previous = self._thread if self._thread is not None and self._thread.is_alive() else None
            if previous is not None and not self._halt.is_set() and not self._done():
                refused = previous
            else:
                halt = threading.Event()
                self._halt, self._status = halt, status
                self._thread = threading.Thread(
                    target=self._target, args=(device, work, what, status, halt, previous),
                    name=f"{device.name}:{what}", daemon=True,
                )  # fmt: skip
                self._thread.start()
        if refused is not None:  # settled outside the lock: status callbacks may call back in
            busy = InstrumentBusy(f"busy ({refused.name.split(':', 1)[-1]}); cannot {what} now")
            status.set_exception(name_instrument(busy, self.instrument or device.root.name))
        return status

    def _target(
        self,
        device: Device,
        work: Callable[[threading.Event], None],
        what: str,
        status: DeviceStatus,
        halt: threading.Event,
        previous: threading.Thread | None,
    ) -> None:
        instrument = self.instrument or device.root.name
        if previous is not None:
            previous.join(JOIN_TIMEOUT_S)  # a stopped action ends without moving anything more
            if previous.is_alive():
                busy = InstrumentBusy(f"the stopped action {previous.name} has not ended; cannot {what}")
                settle(status, name_instrument(busy, instrument))
                return
        if halt.is_set():
            settle(status, name_instrument(Stopped(f"stopped before {what} started"), instrument))
            return
        try:
            work(halt)
        except Exception as exc:
            name_instrument(exc, instrument)
            if halt.is_set():
                log.info("%s: %s ended by stop: %s", device.name, what, exc)
            else:
                log.warning("%s: %s failed: %s", device.name, what, exc)
            settle(status, exc)
        else:
            if halt.is_set():
                settle(status, name_instrument(Stopped(f"{what} was stopped"), instrument))
            else:
                settle(status)

    def stop(self, what: str = "the action", error: InstrumentError | None = None) -> bool:
        """Halt the running action and fail its Status now (with ``error``, if given); True if one ran."""
        with self._lock:
            self._halt.set()
            status, thread = self._status, self._thread
        if status is None or status.done or thread is None or not thread.is_alive():
            return False
        reason = error if error is not None else Stopped(f"stopped before {what} finished")
        settle(status, name_instrument(reason, self.instrument))
        return True

    def join(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        """Wait for the action's thread to end (after a stop, it ends without moving anything)."""
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning(
                    "%s: action thread %s did not end within %g s", self.instrument, thread.name, timeout
                )


class InstrumentDevice(Device):
    """An ophyd Device that keeps the device contract of docs/decisions/0003.

    Subclasses implement ``_connect`` (open links, handshake; idempotent), ``_disconnect`` (close
    links), ``_stop_now`` (send the instrument's stop), ``_make_safe``, ``_recover`` and
    ``_check_health``; and list their BackgroundActions in ``_actions()``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fault_events = FaultEvents(self.name)
        #: What the device's actions used (drivers.stock); faces emit on it.
        self.usage_events = UsageEvents(self.name)
        self._lifecycle = threading.RLock()
        self._connected = False

    # -- the contract ------------------------------------------------------------------------
    def connect(self) -> None:
        """Open every link and do the handshake; cheap when already connected (idempotent)."""
        with self._lifecycle, self._named():
            if self._connected:
                return
            try:
                self._connect()
            except BaseException:
                self._close_links()
                raise
            self._connected = True

    def disconnect(self) -> None:
        """Stop following any action, join the device's threads, close its links; connect() works again."""
        with self._lifecycle:
            for action in self._actions():
                action.halt.set()
            for action in self._actions():
                action.join()
            self._close_links()
            self._connected = False

    def destroy(self) -> None:
        """``disconnect()``, then ophyd's own teardown. Terminal."""
        try:
            self.disconnect()
        finally:
            super().destroy()

    @property
    def connected(self) -> bool:
        return self._connected

    def make_safe(self) -> None:
        """Bring the instrument to a safe state (stopped, lamp off…), connecting first if needed."""
        with self._named():
            self.ensure_connected()
            for action in self._actions():
                action.stop("the action")
            self._make_safe()
            for action in self._actions():
                action.join()

    def recover(self) -> None:
        """Run the instrument's documented recovery; a typed, named error says what could not be recovered."""
        with self._named():
            self.ensure_connected()
            try:
                self._recover()
            except Exception as exc:
                self.fault_events.emit("gave_up", fault_of(exc), f"recovery: {exc}")
                raise
            self.fault_events.emit("recovered", "alarm", "recovery procedure completed")

    def check_health(self) -> None:
        """A short self-test that moves nothing irreversible; raises a typed error when unhealthy."""
        with self._named():
            self.ensure_connected()
            self._check_health()

    def subscribe_faults(self, callback: FaultCallback) -> Callable[[], None]:
        """``callback(event)`` for each retry, reconnect, recovery and give-up; returns an unsubscribe."""
        return self.fault_events.subscribe(callback)

    # -- consumables (drivers.stock) -----------------------------------------------------------
    def contents(self) -> dict[str, dict[str, Any]]:
        """What the driver tracks of each consumable it draws from, by name: ``{"kind", "unit",
        "amount" (None: not told), "lot", "capacity"}``. Empty for an instrument that uses nothing up."""
        return {name: contents.as_dict() for name, contents in self._contents().items()}

    def set_contents(self, name: str, amount: float | None, *, lot: str | None = None) -> None:
        """Tell the driver how much consumable ``name`` holds now (after a refill, or at connect: a
        driver's count is a cache of the store's), and its lot; None stops tracking it. No I/O.

        ValueError for an unknown name or a bad amount; ``InstrumentBusy`` while an action uses it.
        """
        with self._named():
            self._set_contents(name, amount, lot)

    def subscribe_usage(self, callback: UsageCallback) -> Callable[[], None]:
        """``callback(record)`` for what each action used (drivers.stock); returns an unsubscribe."""
        return self.usage_events.subscribe(callback)

    # -- helpers for faces -------------------------------------------------------------------
    def ensure_connected(self) -> None:
        """Connect unless connected (an action's first step; children call it on their device)."""
        if not self._connected:
            self.connect()

    @contextmanager
    def _named(self) -> Generator[None, None, None]:
        """Errors raised inside name this device (decision 0003: the message starts with it)."""
        try:
            yield
        except InstrumentError as exc:
            name_instrument(exc, self.name)
            raise

    def _actions(self) -> list[BackgroundAction]:
        return []

    def _close_links(self) -> None:
        self._disconnect()

    # -- hooks --------------------------------------------------------------------------------
    def _connect(self) -> None:
        raise NotImplementedError

    def _disconnect(self) -> None:
        raise NotImplementedError

    def _make_safe(self) -> None:
        raise NotImplementedError

    def _recover(self) -> None:
        raise NotImplementedError

    def _check_health(self) -> None:
        raise NotImplementedError

    def _contents(self) -> dict[str, Contents]:
        return {}

    def _set_contents(self, name: str, amount: float | None, lot: str | None) -> None:
        raise ValueError(f"{self.name}: no consumable {name!r}; it draws from none")

    def _unknown_consumable(self, name: str, known: Iterable[str]) -> ValueError:
        have = ", ".join(sorted(known)) or "none"
        return ValueError(f"{self.name}: no consumable {name!r}; it has: {have}")
