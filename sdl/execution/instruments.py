"""The instruments one process holds: built offline, connected when needed, stopped, made safe, closed.

The core knows a device only through bluesky's protocols and the lifecycle of decision 0003
(`sdl.spec.devices`: `connect`, `disconnect`, `make_safe`, `recover`, `check_health`, `subscribe_faults`,
`identity`, `destroy`), each optional: a driver without one of them still works, and what it lacks is
skipped and logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from bluesky.protocols import HasName, Stoppable

from sdl.execution.provenance import driver_version
from sdl.spec.campaign import Instrument
from sdl.spec.devices import (
    ChecksHealth,
    Connectable,
    Destroyable,
    FaultListener,
    Identifies,
    MakesSafe,
    Recovers,
    ReportsFaults,
    ReportsUsage,
)
from sdl.spec.importpaths import UnresolvedImport, resolve_driver

log = logging.getLogger(__name__)


class InstrumentUnavailable(RuntimeError):
    """An instrument could not be built, connected, made safe or checked; the message names it."""

    def __init__(self, instrument: str, message: str, *, fault: str | None = None) -> None:
        super().__init__(f"{instrument}: {message}")
        self.instrument = instrument
        self.fault = fault


def _fault_kind(exc: BaseException) -> str | None:
    kind = getattr(exc, "fault", None)
    return kind if isinstance(kind, str) else None


class Instruments:
    """Named instruments of a lab, built from their specs (driver, resolved address, options)."""

    def __init__(
        self,
        specs: Mapping[str, Instrument],
        addresses: Mapping[str, Any],
        *,
        base_dir: Path | None = None,
        on_fault: FaultListener | None = None,
        on_usage: Callable[[str, dict[str, Any]], None] | None = None,
        on_connect: Callable[[str, HasName], None] | None = None,
    ) -> None:
        self.specs = dict(specs)
        self.addresses = dict(addresses)
        self.base_dir = base_dir
        self.on_fault = on_fault
        #: ``on_usage(instrument, record)`` for what each action used; ``on_connect(instrument, device)``
        #: after each (re)connection, to tell the device what the lab knows of it (its stocks).
        self.on_usage = on_usage
        self.on_connect = on_connect
        self.devices: dict[str, HasName] = {}
        self.connected: set[str] = set()
        #: What each instrument said it is (its driver's ``identity()``), read once per device built.
        self.identities: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()

    def build(self, name: str) -> HasName:
        """The device for ``name``, built (offline) on first use."""
        with self._lock:
            if name in self.devices:
                return self.devices[name]
            spec = self.specs[name]
            try:
                factory = resolve_driver(spec.driver, self.base_dir)
            except UnresolvedImport as exc:
                raise InstrumentUnavailable(name, f"driver {spec.driver!r} does not resolve: {exc}") from exc
            address = self.addresses.get(name, spec.address)
            log.info("building %s (%s) for %s", name, spec.driver, address)
            try:
                device: HasName = factory(name, address, **spec.options)
            except Exception as exc:
                raise InstrumentUnavailable(
                    name, f"{spec.driver} at {address}: {exc}", fault=_fault_kind(exc)
                ) from exc
            self.devices[name] = device
            self.identities.pop(name, None)
            if not isinstance(device, Connectable):
                self.connected.add(name)  # an older driver connects while it is built
                self._identify(name, device)
            if isinstance(device, ReportsFaults) and self.on_fault is not None:
                device.subscribe_faults(self.on_fault)
            if isinstance(device, ReportsUsage) and self.on_usage is not None:
                on_usage = self.on_usage
                device.subscribe_usage(lambda record: on_usage(name, record))
            if name in self.connected and self.on_connect is not None:
                self.on_connect(name, device)
            return device

    def connect(self, names: Iterable[str]) -> dict[str, HasName]:
        """Build and connect ``names``; return them. Raises :class:`InstrumentUnavailable` for the first
        that fails (those connected before it stay connected)."""
        out = {}
        for name in names:
            device = self.build(name)
            with self._lock:
                if name not in self.connected:
                    log.info("connecting %s", name)
                    try:
                        if isinstance(device, Connectable):
                            device.connect()
                    except Exception as exc:
                        raise InstrumentUnavailable(
                            name, f"cannot connect: {exc}", fault=_fault_kind(exc) or "link_lost"
                        ) from exc
                    self.connected.add(name)
                    if name not in self.identities:
                        self._identify(name, device)
                    if self.on_connect is not None:
                        self.on_connect(name, device)
            out[name] = device
        return out

    def _identify(self, name: str, device: object) -> None:
        """Ask a freshly connected instrument what it is; a driver without ``identity()`` says nothing,
        and a failed query is recorded, never raised (it must not cost an experiment)."""
        if not isinstance(device, Identifies):
            self.identities[name] = {}
            return
        try:
            reported = device.identity()
            self.identities[name] = (
                dict(reported) if isinstance(reported, Mapping) else {"reported": reported}
            )
        except Exception as exc:
            log.warning("%s: reading its identity failed: %s", name, exc)
            self.identities[name] = {"error": f"{type(exc).__name__}: {exc}"}

    def describe(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Provenance of ``names``: driver, driver version, address, and the identity each reported
        (absent for one never connected)."""
        out = {}
        for name in names:
            spec = self.specs.get(name)
            if spec is None:
                continue
            out[name] = {
                "driver": spec.driver,
                "driver_version": driver_version(spec.driver),
                "address": self.addresses.get(name, spec.address),
                "identity": self.identities.get(name),
            }
        return out

    def disconnect(self, names: Iterable[str]) -> None:
        """Close ``names``' links so another process can open them (a shared instrument's next holder)."""
        for name in names:
            with self._lock:
                device = self.devices.get(name)
                if device is None or name not in self.connected:
                    continue
                self.connected.discard(name)
                try:
                    if isinstance(device, Connectable):
                        device.disconnect()
                    else:  # cannot reconnect an older driver: destroy it, build it again next time
                        self._destroy(name)
                except Exception:
                    log.exception("disconnecting %s failed", name)

    def stop_all(self) -> list[str]:
        """Send every connected instrument its stop now (e-stop); return those that took it."""
        stopped = []
        for name in sorted(self.connected):
            device = self.devices.get(name)
            if isinstance(device, Stoppable):
                try:
                    device.stop(success=False)
                    stopped.append(name)
                except Exception:
                    log.exception("stopping %s failed", name)
        return stopped

    def make_safe(self, name: str) -> None:
        """Connect ``name`` if needed and bring it to a safe state (its driver's recovery plan)."""
        device = self.connect([name])[name]
        try:
            if isinstance(device, MakesSafe):
                device.make_safe()
            elif isinstance(device, Stoppable):
                log.info("%s has no make_safe(); stopping it instead", name)
                device.stop()
            else:
                log.info("%s has neither make_safe() nor stop(); nothing to make safe", name)
        except Exception as exc:
            raise InstrumentUnavailable(
                name, f"could not be made safe: {exc}", fault=_fault_kind(exc)
            ) from exc

    def check(self, name: str) -> None:
        """Connect ``name``, run its documented recovery, then its health check."""
        device = self.connect([name])[name]
        steps: list[tuple[str, Callable[[], None] | None]] = [
            ("recover", device.recover if isinstance(device, Recovers) else None),
            ("check_health", device.check_health if isinstance(device, ChecksHealth) else None),
        ]
        for step, action in steps:
            if action is None:
                log.info("%s has no %s(); skipped", name, step)
                continue
            try:
                action()
            except Exception as exc:
                raise InstrumentUnavailable(name, f"{step} failed: {exc}", fault=_fault_kind(exc)) from exc

    def _destroy(self, name: str) -> None:
        device = self.devices.pop(name, None)
        self.connected.discard(name)
        if isinstance(device, Destroyable):
            device.destroy()

    def close(self) -> None:
        """Destroy every device built here, in reverse order; errors are logged, not raised."""
        with self._lock:
            for name in reversed(list(self.devices)):
                try:
                    self._destroy(name)
                except Exception:
                    log.exception("closing instrument %s failed", name)
