"""Our instruments as SiLA 2 servers: `sdl sila serve --lab LAB.yaml` lands here.

Each connected ophyd device of a lab gets a SiLA server of its own (one port, one server UUID)
with a feature that describes what it is — ``SyringePumpController`` (dispense, withdraw, rate),
``RobotArmController`` (moves to taught positions, transfers), ``SpectrometerController``
(acquisition, mode, integration time) — beside the core ``CancelController`` (a cancelled
command stops the instrument on its wire) and ``LockController`` (one client at a time).

A device's role is read from its shape, so an out-of-tree driver with the same faces is served
too: a spectrometer triggers and has ``mode``, ``absorbance`` and ``wavelengths``; an arm has a
``transfer`` face and taught positions; a pump line has settable channels with a ``dispensed``
signal (or is one, with ``volume``). Anything else is not served, and the log says so.

Driver errors keep their meaning across the wire: an ``InstrumentError`` becomes the feature's
defined execution error named after its fault kind (features.FAULT_ERRORS).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from queue import Queue
from typing import TYPE_CHECKING, Any, cast

from sila2.features.lockcontroller import (
    InvalidLockIdentifier,
    LockControllerBase,
    LockControllerFeature,
    LockServer_Responses,
    ServerAlreadyLocked,
    ServerNotLocked,
    UnlockServer_Responses,
)
from sila2.framework import (
    Command,
    DefinedExecutionError,
    Feature,
    FullyQualifiedIdentifier,
    Metadata,
    Property,
)
from sila2.server import (
    FeatureImplementationBase,
    MetadataDict,
    MetadataInterceptor,
    ObservableCommandInstance,
    SilaServer,
)

from drivers.errors import InstrumentError
from drivers.sila2 import features
from drivers.sila2.tls import server_credentials

if TYPE_CHECKING:  # the devices served bring ophyd; serving needs none of its names at run time
    from drivers.ophyd_types import StatusBase

log = logging.getLogger(__name__)

#: How often a running command reports progress to its observers.
PROGRESS_S = 0.05
#: The namespace of our servers' UUIDs: the same lab and instrument name give the same UUID.
UUID_NAMESPACE = uuid.UUID("6f1d3a52-3c1e-4a0b-9b8e-5d0c2f7a9e41")
VENDOR_URL = "https://sila-standard.com"
#: sila2 logs every property update and every refused command at INFO, with tracebacks.
#: (Logger names split at dots: "observable-command-manager-org" is the parent of every execution's.)
NOISY_LOGGERS = (
    "sila2",
    "observable-command-manager-org",
    "SiLAService",
    "SyringePumpController",
    "RobotArmController",
    "SpectrometerController",
    "CancelController",
    "LockController",
    *(
        f"SubscriptionManagerThread[{feature}"
        for feature in (
            "SyringePumpController",
            "RobotArmController",
            "SpectrometerController",
            "SiLAService",
            "CancelController",
            "LockController",
        )
    ),
)


# -- running commands, cancellable --------------------------------------------------------------
@dataclass
class Execution:
    stop: Callable[[], None]
    cancelled: threading.Event = field(default_factory=threading.Event)


class Executions:
    """The observable commands running on one server, by execution UUID, so they can be cancelled."""

    def __init__(self, stop_all: Callable[[], None]) -> None:
        self._running: dict[uuid.UUID, Execution] = {}
        self._lock = threading.Lock()
        self._stop_all = stop_all

    def begin(self, execution: uuid.UUID, stop: Callable[[], None]) -> Execution:
        with self._lock:
            self._running[execution] = entry = Execution(stop)
        return entry

    def end(self, execution: uuid.UUID) -> None:
        with self._lock:
            self._running.pop(execution, None)

    def cancel(self, execution: uuid.UUID) -> bool:
        with self._lock:
            entry = self._running.get(execution)
        if entry is None:
            return False
        entry.cancelled.set()
        entry.stop()
        return True

    def cancel_all(self) -> None:
        with self._lock:
            entries = list(self._running.values())
        for entry in entries:
            entry.cancelled.set()
        self._stop_all()


def defined_error(feature: Feature, exc: BaseException) -> BaseException:
    """A driver error as the feature's defined execution error named after its fault kind."""
    if isinstance(exc, InstrumentError):
        identifier = features.ERROR_OF_FAULT.get(str(exc.fault), "Unrecoverable")
        return DefinedExecutionError(feature.defined_execution_errors[identifier], str(exc))
    return exc


def wait_for_status(
    status: StatusBase,
    instance: ObservableCommandInstance,
    execution: Execution,
    feature: Feature,
    expected_s: float | None,
) -> None:
    """Follow an ophyd Status to its end, telling observers the progress; raise what it failed with."""
    done = threading.Event()
    status.add_callback(lambda _status: done.set())
    started = time.monotonic()
    while not done.wait(PROGRESS_S):
        if expected_s:
            elapsed = time.monotonic() - started
            instance.progress = min(0.99, elapsed / expected_s)
            instance.estimated_remaining_time = timedelta(seconds=max(0.0, expected_s - elapsed))
    if execution.cancelled.is_set():
        raise DefinedExecutionError(
            feature.defined_execution_errors[features.CANCELLED], "cancelled; the instrument was stopped"
        )
    error = status.exception()
    if error is not None:
        raise defined_error(feature, error)
    instance.progress = 1.0


class Role(FeatureImplementationBase):
    """What the role features share: the device, the feature, running executions, signal queues."""

    def __init__(self, server: SilaServer, feature: Feature, device: Any, executions: Executions) -> None:
        super().__init__(parent_server=server)
        self.feature = feature
        self.device = device
        self.executions = executions

    def run(
        self,
        instance: ObservableCommandInstance,
        start: Callable[[], StatusBase],
        stop: Callable[[], None],
        expected_s: float | None = None,
    ) -> None:
        execution = self.executions.begin(instance.execution_uuid, stop)
        try:
            instance.begin_execution()
            try:
                status = start()
            except Exception as exc:
                raise defined_error(self.feature, exc) from exc
            wait_for_status(status, instance, execution, self.feature, expected_s)
        finally:
            self.executions.end(instance.execution_uuid)

    def call(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except Exception as exc:
            raise defined_error(self.feature, exc) from exc

    def follow(self, identifier: str, read: Callable[[], Any], *signals: Any) -> None:
        """Push ``read()`` to subscribers of the observable property whenever one of ``signals`` changes."""
        queue: Queue[Any] = Queue()
        setattr(self, f"_{identifier}_producer_queue", queue)

        def subscribed(*, metadata: MetadataDict) -> None:
            pass  # sila2 calls this for each new subscriber; the queue already holds the value

        setattr(self, f"{identifier}_on_subscription", subscribed)

        def changed(**_: Any) -> None:
            queue.put(read())

        for signal in signals:
            signal.subscribe(changed, run=False)
        queue.put(read())


# -- the roles ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Channel:
    """One pump of an instrument, whatever its driver calls rate and delivered volume."""

    face: Any
    delivered: Any  # the signal holding the volume of the last move (µL)
    rate: Any  # the signal holding the rate
    rate_per_min: float  # 1 for µL/min, 60 for µL/s


def pump_channels(name: str, device: Any) -> dict[str, Channel]:
    """The settable pump channels of ``device`` (children with ``dispensed`` and ``rate``, or itself)."""
    channels: dict[str, Channel] = {}
    for attr in getattr(device, "component_names", ()):
        child = getattr(device, attr)
        if callable(getattr(child, "set", None)) and hasattr(child, "dispensed") and hasattr(child, "rate"):
            channels[attr] = Channel(child, child.dispensed, child.rate, 1.0)
    if (
        not channels
        and callable(getattr(device, "set", None))
        and hasattr(device, "volume")
        and hasattr(device, "flow")
    ):
        channels[name] = Channel(device, device.volume, device.flow, 60.0)
    return channels


class PumpRole(Role):
    def __init__(
        self,
        server: SilaServer,
        feature: Feature,
        device: Any,
        executions: Executions,
        channels: dict[str, Channel],
    ) -> None:
        super().__init__(server, feature, device, executions)
        self.channels = channels
        self.follow("Rates", self._rates, *(c.rate for c in channels.values()))
        self.follow("Delivered", self._delivered, *(c.delivered for c in channels.values()))

    def _rates(self) -> list[float]:
        return [float(c.rate.get()) * c.rate_per_min for c in self.channels.values()]

    def _delivered(self) -> list[float]:
        return [float(c.delivered.get()) for c in self.channels.values()]

    def get_Pumps(self, *, metadata: MetadataDict) -> list[str]:
        return list(self.channels)

    def _move(self, pump: str, volume: float, instance: ObservableCommandInstance, withdraw: bool) -> float:
        channel = self.channels[pump]
        rate = float(channel.rate.get()) * channel.rate_per_min
        expected = volume / rate * 60.0 if rate > 0 else None
        if withdraw:
            start = lambda: withdraw_status(channel.face, volume)  # noqa: E731
        else:
            start = lambda: channel.face.set(volume)  # noqa: E731
        self.run(instance, start, lambda: channel.face.stop(), expected)
        return float(channel.delivered.get())

    def Dispense(
        self, Pump: str, Volume: float, *, metadata: MetadataDict, instance: ObservableCommandInstance
    ) -> float:
        return self._move(Pump, Volume, instance, withdraw=False)

    def Withdraw(
        self, Pump: str, Volume: float, *, metadata: MetadataDict, instance: ObservableCommandInstance
    ) -> float:
        return self._move(Pump, Volume, instance, withdraw=True)

    def SetRate(self, Pump: str, Rate: float, *, metadata: MetadataDict) -> None:
        channel = self.channels[Pump]
        self.call(lambda: channel.rate.put(Rate / channel.rate_per_min))

    def Stop(self, *, metadata: MetadataDict) -> None:
        self.call(lambda: self.device.stop())


def withdraw_status(face: Any, volume: float) -> Any:
    """Start a withdrawal: the face's own ``withdraw`` if it has one, else its pump driver's, on the
    face's action thread (the NE-1000's ophyd face only infuses)."""
    if callable(getattr(face, "withdraw", None)):
        return face.withdraw(volume)
    pump, action = getattr(face, "pump", None), getattr(face, "action", None)
    if pump is None or action is None or not callable(getattr(pump, "withdraw", None)):
        from drivers.errors import CommandRejected

        raise CommandRejected(f"{face.name}: this pump cannot withdraw")
    rate = float(face.rate.get())
    pump.check_move(volume, rate)

    def work(halt: threading.Event) -> None:
        move = pump.withdraw(volume, rate, halt=halt)
        done = pump.wait_until_stopped(move.volume_ul / move.rate_ul_min * 90.0 + 10.0, halt=halt)
        face.dispensed.put(done.withdrawn_ul)

    return action.run(face, work, f"withdraw {volume:g} uL")


class ArmRole(Role):
    def __init__(
        self, server: SilaServer, feature: Feature, device: Any, executions: Executions, positions: list[str]
    ) -> None:
        super().__init__(server, feature, device, executions)
        self.positions = positions
        self.follow("Location", lambda: str(device.location.get()), device.location)

    def get_Positions(self, *, metadata: MetadataDict) -> list[str]:
        return self.positions

    def MoveTo(self, Position: str, *, metadata: MetadataDict, instance: ObservableCommandInstance) -> None:
        self.run(instance, lambda: self.device.set(Position), self.device.stop)

    def Transfer(
        self, Source: str, Destination: str, *, metadata: MetadataDict, instance: ObservableCommandInstance
    ) -> None:
        self.run(instance, lambda: self.device.transfer.set((Source, Destination)), self.device.stop)

    def Stop(self, *, metadata: MetadataDict) -> None:
        self.call(lambda: self.device.stop())


def arm_positions(device: Any) -> list[str] | None:
    positions = getattr(getattr(device, "arm", None), "positions", None)
    if hasattr(device, "transfer") and hasattr(device, "location") and isinstance(positions, Mapping):
        return sorted(cast(Mapping[str, Any], positions))
    return None


MODES = ("sample", "dark", "reference")


class SpectrometerRole(Role):
    def __init__(self, server: SilaServer, feature: Feature, device: Any, executions: Executions) -> None:
        super().__init__(server, feature, device, executions)
        self.follow("Mode", lambda: str(device.mode.get()), device.mode)

    def Acquire(
        self, *, metadata: MetadataDict, instance: ObservableCommandInstance
    ) -> tuple[list[float], list[float]]:
        self.run(instance, self.device.trigger, self.device.stop)
        counts = [float(v) for v in self.device.counts.get()]
        absorbance = [float(v) for v in self.device.absorbance.get()]
        return counts, absorbance

    def SetMode(self, Mode: str, *, metadata: MetadataDict) -> None:
        self.call(lambda: self.device.mode.put(Mode))

    def SetIntegrationTime(self, IntegrationTime: int, *, metadata: MetadataDict) -> None:
        self.call(lambda: self.device.integration_time.put(IntegrationTime))

    def get_Wavelengths(self, *, metadata: MetadataDict) -> list[float]:
        return [float(v) for v in self.device.wavelengths.get()]

    def get_IntegrationTime(self, *, metadata: MetadataDict) -> int:
        return int(self.device.integration_time.get())


def is_spectrometer(device: Any) -> bool:
    return callable(getattr(device, "trigger", None)) and all(
        hasattr(device, a) for a in ("mode", "absorbance", "counts", "wavelengths", "integration_time")
    )


# -- the core features --------------------------------------------------------------------------
class CancelControllerImpl(FeatureImplementationBase):
    def __init__(self, server: SilaServer, feature: Feature, executions: Executions) -> None:
        super().__init__(parent_server=server)
        self.feature = feature
        self.executions = executions

    def CancelCommand(self, CommandExecutionUUID: str, *, metadata: MetadataDict) -> None:
        if not self.executions.cancel(uuid.UUID(CommandExecutionUUID)):
            raise DefinedExecutionError(
                self.feature.defined_execution_errors["InvalidCommandExecutionUUID"],
                f"no command with execution UUID {CommandExecutionUUID} is running",
            )

    def CancelAll(self, *, metadata: MetadataDict) -> None:
        self.executions.cancel_all()


class LockControllerImpl(LockControllerBase):
    """LockController v1: while locked, every call to the instrument's feature must carry the lock
    identifier; each such call renews the lock; it lapses after ``Timeout`` s without one.

    Only the instrument's own feature is protected. Cancelling stays open to every client: a
    second orchestrator can always stop what moves.
    """

    def __init__(self, server: SilaServer, protected: Feature) -> None:
        super().__init__(parent_server=server)
        self.protected = protected
        self._token: str | None = None
        self._timeout = timedelta(0)
        self._used = datetime.now()
        self._guard = threading.Lock()
        server.add_metadata_interceptor(LockInterceptor(self))

    def locked_by(self) -> str | None:
        with self._guard:
            if self._token is not None and self._timeout and datetime.now() - self._used > self._timeout:
                self._token = None  # lapsed
            return self._token

    def use(self, token: str) -> None:
        with self._guard:
            if token != self._token:
                raise InvalidLockIdentifier("the server is locked with another lock identifier")
            self._used = datetime.now()

    def get_IsLocked(self, *, metadata: MetadataDict) -> bool:
        return self.locked_by() is not None

    def LockServer(
        self, LockIdentifier: str, Timeout: int, *, metadata: MetadataDict
    ) -> LockServer_Responses:
        if self.locked_by() is not None:
            raise ServerAlreadyLocked("the server is locked by another client")
        with self._guard:
            self._token, self._timeout, self._used = (
                LockIdentifier,
                timedelta(seconds=Timeout),
                datetime.now(),
            )
        return LockServer_Responses()

    def UnlockServer(self, LockIdentifier: str, *, metadata: MetadataDict) -> UnlockServer_Responses:
        token = self.locked_by()
        if token is None:
            raise ServerNotLocked("the server is not locked")
        if token != LockIdentifier:
            raise InvalidLockIdentifier("that is not the identifier the server was locked with")
        with self._guard:
            self._token = None
        return UnlockServer_Responses()

    def get_calls_affected_by_LockIdentifier(
        self,
    ) -> list[Feature | Command | Property | FullyQualifiedIdentifier]:
        # Unlocked, nothing needs the identifier (the standard: "no lock identifier has to be sent").
        return [self.protected] if self.locked_by() is not None else []


def lock_identifier() -> Metadata[str]:
    """The LockController's ``LockIdentifier`` metadata (sila2 types a feature's members as any kind)."""
    member = cast(object, LockControllerFeature["LockIdentifier"])
    if not isinstance(member, Metadata):
        raise TypeError(f"sila2's LockController has no LockIdentifier metadata, but {member!r}")
    return cast(Metadata[str], member)


class LockInterceptor(MetadataInterceptor):
    def __init__(self, controller: LockControllerImpl) -> None:
        self.identifier = lock_identifier()
        # sila2 annotates the parameter as a bare Metadata (no type argument): unknown to strict pyright.
        super().__init__([self.identifier])  # pyright: ignore[reportUnknownMemberType]
        self.controller = controller

    def intercept(
        self, parameters: Any, metadata: MetadataDict, target_call: FullyQualifiedIdentifier
    ) -> None:
        token = metadata[self.identifier]
        if self.controller.locked_by() is not None:
            self.controller.use(str(token))


# -- servers ------------------------------------------------------------------------------------
@dataclass
class InstrumentServer:
    """One instrument served: its SiLA server, where it listens, its UUID, its certificate (PEM)."""

    name: str
    role: str
    server: SilaServer
    host: str
    port: int
    certificate: Path | None

    @property
    def uuid(self) -> str:
        return str(self.server.server_uuid)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        if self.server.running:
            self.server.stop(grace_period=1.0)


def build_server(name: str, device: Any, *, lab: str = "lab") -> tuple[SilaServer, str] | None:
    """A SiLA server (not started) for ``device``, or None when its role is not one we serve."""
    server_uuid = uuid.uuid5(UUID_NAMESPACE, f"{lab}/{name}")
    channels = pump_channels(name, device)
    positions = arm_positions(device)
    spec: features.FeatureSpec
    if is_spectrometer(device):
        role, spec = "Spectrometer", features.spectrometer_feature(MODES)
    elif positions:
        role, spec = "RobotArm", features.arm_feature(positions)
    elif channels:
        role, spec = "SyringePump", features.pump_feature(list(channels))
    else:
        return None
    server = SilaServer(
        server_name=name[:255],
        server_type=role,
        server_description=f"{name}: {spec.description}",
        server_version="1.0",
        server_vendor_url=VENDOR_URL,
        server_uuid=server_uuid,
    )
    feature = Feature(spec.fdl())
    executions = Executions(stop_all=lambda: device.stop())
    implementation: Role
    if role == "Spectrometer":
        implementation = SpectrometerRole(server, feature, device, executions)
    elif role == "RobotArm":
        implementation = ArmRole(server, feature, device, executions, positions or [])
    else:
        implementation = PumpRole(server, feature, device, executions, channels)
    server.set_feature_implementation(feature, implementation)
    cancel = Feature(features.CANCEL_CONTROLLER)
    server.set_feature_implementation(cancel, CancelControllerImpl(server, cancel, executions))
    server.set_feature_implementation(LockControllerFeature, LockControllerImpl(server, feature))
    return server, role


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def serve_devices(
    devices: Mapping[str, Any],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    certs: Path | None = None,
    insecure: bool = False,
    discovery: bool = True,
    lab: str = "lab",
) -> list[InstrumentServer]:
    """Start one SiLA server per device we can describe; return them, started.

    ``port`` 0 gives each server a free port; otherwise the servers take ``port``, ``port + 1``, …
    in the order of ``devices``. TLS is on unless ``insecure``: each server's key and self-signed
    certificate (with its UUID, as the standard asks) live in ``certs`` as ``NAME.key``/``NAME.pem``,
    made on first use and reused after, so a client can trust ``NAME.pem`` once.
    """
    if not log.isEnabledFor(logging.DEBUG):
        for noisy in NOISY_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
    served: list[InstrumentServer] = []
    try:
        for index, (name, device) in enumerate(devices.items()):
            built = build_server(name, device, lab=lab)
            if built is None:
                log.warning("%s: not served over SiLA (no pump, arm or spectrometer face)", name)
                continue
            server, role = built
            chosen = port + index if port else free_port(host)
            certificate: Path | None = None
            if insecure:
                log.warning("%s: serving SiLA without TLS (the standard requires TLS; tests only)", name)
                server.start_insecure(host, chosen, enable_discovery=discovery)
            else:
                if certs is None:
                    raise ValueError("TLS needs a directory for the server certificates (or insecure)")
                key, chain, certificate = server_credentials(certs, name, server.server_uuid, host)
                server.start(
                    host,
                    chosen,
                    private_key=key,
                    cert_chain=chain,
                    ca_for_discovery=chain if discovery else None,
                    enable_discovery=discovery,
                )
            served.append(InstrumentServer(name, role, server, host, chosen, certificate))
            log.info("%s: SiLA %s server on %s:%d (%s)", name, role, host, chosen, server.server_uuid)
    except BaseException:
        for instrument in served:
            instrument.stop()
        raise
    return served


def stop_all(served: list[InstrumentServer]) -> None:
    for instrument in reversed(served):
        try:
            instrument.stop()
        except Exception:
            log.exception("stopping the SiLA server of %s failed", instrument.name)


def lines(served: list[InstrumentServer]) -> Iterator[str]:
    """What `sdl sila serve` prints: ``NAME HOST:PORT UUID [CERTIFICATE]`` per served instrument."""
    for s in served:
        yield " ".join([s.name, s.address, s.uuid, *([str(s.certificate)] if s.certificate else [])])


__all__ = ["InstrumentServer", "build_server", "lines", "serve_devices", "stop_all"]
