"""The ophyd face of a SiLA 2 server: properties as signals, commands as bluesky actions.

On ``connect()`` the device reads the server's features and grows, for each property, a signal
named after it in snake case (``Mode`` -> ``device.mode``, read as ``<device>_mode``; a name two
features share, or one ophyd already uses, is prefixed with the feature's), and for each command
an action (``Dispense`` -> ``device.dispense``): ``bps.mv(device.dispense, {"Pump": "a",
"Volume": 100})`` runs it, a single parameter can be given bare, and the action reads its
responses. Observable properties are subscribed (the server pushes each change); unobservable
ones are read at connect and when set. A property ``X`` with a one-parameter command ``SetX``
beside it is settable: ``bps.mv(device.x, value)`` calls ``SetX``.

The lab file may also say which command ``device.set()`` and ``device.trigger()`` run
(``set:``/``trigger:``) and name actions with fixed parameters (``actions:``), which then exist
before connecting, like any ophyd component. Observable commands report progress on the
action's ``progress`` signal; ``stop()`` cancels them on the server (CancelController), and the
action's Status fails with ``Stopped``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import numpy as np

from drivers.errors import CommandRejected, SafetyLimitError, name_instrument
from drivers.ophyd_support import BackgroundAction, InstrumentDevice, Stopped
from drivers.ophyd_types import Component, Device, DeviceStatus, Kind, Signal, StatusBase
from drivers.sila2.connection import CommandInfo, Connection, FeatureInfo, Running

log = logging.getLogger(__name__)


def snake(identifier: str) -> str:
    """``IntegrationTime`` -> ``integration_time``; ``UUID`` -> ``uuid``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", identifier).lower()


def ophyd_value(value: Any) -> Any:
    """A value ophyd can describe: lists of numbers as arrays, structures as their text."""
    if isinstance(value, list):
        items = cast(list[Any], value)
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
            return np.asarray(items, dtype=float)
        return repr(items)
    if isinstance(value, dict):
        return repr(cast(dict[Any, Any], value))
    return value


class ValueSignal(Signal):
    """A signal holding what the server last said; describes arrays with their shape."""

    def describe(self) -> dict[str, dict[str, Any]]:
        description = super().describe()
        value = self.get()
        if isinstance(value, np.ndarray):
            array = cast(np.ndarray[Any, Any], value)
            description[self.name].update(dtype="array", shape=list(array.shape), dtype_numpy=array.dtype.str)
        return description

    def update(self, value: Any) -> None:
        Signal.put(self, ophyd_value(value))


class PropertySignal(ValueSignal):
    """A SiLA property; ``put`` calls its ``Set<Property>`` command when the feature has one."""

    def __init__(self, *, setter: Callable[[Any], None] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.setter = setter

    def put(self, value: Any, **kwargs: Any) -> None:
        if self.setter is None:
            raise CommandRejected(f"{self.name} is read-only (its feature has no Set command)")
        self.setter(value)
        super().put(ophyd_value(value), **kwargs)


class Command:
    """A SiLA command of one device run as an ophyd action: one execution at a time, stoppable."""

    def __init__(
        self, root: SilaDevice, feature: str, command: str, fixed: Mapping[str, Any], label: str
    ) -> None:
        self.root = root
        self.feature = feature
        self.command = command
        self.fixed = dict(fixed)
        self.label = label
        self.action = BackgroundAction(root.name)
        self.responses: dict[str, Any] = {}
        self._running: Running | None = None
        self._guard = threading.Lock()

    @property
    def info(self) -> CommandInfo:
        return self.root.connection.features[self.feature].commands[self.command]

    def parameters(self, value: Any) -> dict[str, Any]:
        """The call's parameters: the fixed ones, then ``value`` for the rest (bare if one is left,
        a mapping by identifier, or a sequence in their order)."""
        free = [p for p in self.info.parameters if p not in self.fixed]
        if value is None and not free:
            return dict(self.fixed)
        given: dict[str, Any]
        if isinstance(value, Mapping):
            given = {str(k): v for k, v in cast(Mapping[Any, Any], value).items()}
        elif isinstance(value, list | tuple) and len(free) > 1:
            given = dict(zip(free, cast(list[Any], value), strict=False))
        elif len(free) == 1:
            given = {free[0]: value}
        else:
            given = {}
        unknown = sorted(set(given) - set(free))
        missing = [p for p in free if p not in given]
        if unknown or missing:
            raise SafetyLimitError(
                f"{self.label}: {self.command} takes {', '.join(free) or 'no parameters'}"
                + (f" (fixed: {', '.join(self.fixed)})" if self.fixed else "")
                + (f"; unknown {', '.join(unknown)}" if unknown else "")
                + (f"; missing {', '.join(missing)}" if missing else "")
            )
        return {**self.fixed, **given}

    def run(
        self, face: Device, value: Any, on_progress: Callable[[float], None] | None = None
    ) -> DeviceStatus:
        try:
            self.root.ensure_connected()
            parameters = self.parameters(value)
        except Exception as exc:
            status = DeviceStatus(face)
            status.set_exception(name_instrument(exc, self.root.name))
            return status

        def work(halt: threading.Event) -> None:
            if not self.info.observable:
                self.responses = self.root.connection.call(self.feature, self.command, parameters)
                return
            with self._guard:  # a stop() either sees this execution or sees the halt first
                if halt.is_set():
                    return
                self._running = running = self.root.connection.start(self.feature, self.command, parameters)
            try:
                responses = running.wait(halt, on_progress)
            finally:
                with self._guard:
                    self._running = None
            if not halt.is_set():
                self.responses = responses

        return self.action.run(face, work, f"{self.command}")

    def stop(self) -> None:
        """Halt the action and cancel its execution on the server, now, from any thread."""
        busy = self.action.busy
        with self._guard:
            self.action.stop(self.command, Stopped(f"{self.command} was cancelled"))
            running = self._running
        if running is None or running.done:
            return
        if not self.root.connection.cancel(running.execution) and not self.root.stop_on_server():
            log.warning(
                "%s: %s cannot be stopped on the server (no CancelController, no stop command)",
                self.root.name,
                self.command,
            )
        elif busy:
            log.info("%s: cancelled %s (%s)", self.root.name, self.command, running.execution)


class SilaAction(Device):
    """A command as a bluesky action: ``set(parameters)`` runs it; reads its last responses."""

    progress = Component(Signal, value=0.0, kind="omitted")

    def __init__(
        self,
        *args: Any,
        feature: str = "",
        command: str = "",
        fixed: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # What the lab file named (feature, command, fixed parameters); resolved on connect.
        self.ref = (feature, command, dict(fixed or {}))
        self.bound: Command | None = None

    def bind(self, root: SilaDevice, feature: str, command: str, fixed: Mapping[str, Any]) -> None:
        self.bound = Command(root, feature, command, fixed, self.name)

    @property
    def command(self) -> Command:
        if self.bound is None:
            raise CommandRejected(f"{self.name}: not connected (its command is read from the server)")
        return self.bound

    def set(self, value: Any) -> DeviceStatus:
        self.progress.put(0.0)
        return self.command.run(self, value, self.progress.put)

    def stop(self, *, success: bool = False) -> None:
        # Like the arm's children: stopping one action stops what the instrument is doing.
        root = self.root
        if isinstance(root, SilaDevice):
            root.stop(success=success)

    def read(self) -> dict[str, dict[str, Any]]:
        out = super().read()
        if self.bound is not None:
            for key, value in self.bound.responses.items():
                out[f"{self.name}_{snake(key)}"] = {"value": ophyd_value(value), "timestamp": time.time()}
        return out

    def describe(self) -> dict[str, dict[str, Any]]:
        out = super().describe()
        if self.bound is not None and self.bound.responses:
            for key, value in self.bound.responses.items():
                signal = ValueSignal(name=f"{self.name}_{snake(key)}", value=ophyd_value(value))
                out.update(signal.describe())
        return out


class SilaDevice(InstrumentDevice):
    """A SiLA 2 server as one ophyd device (see the module docstring)."""

    def __init__(
        self,
        *args: Any,
        connection: Connection,
        set_command: tuple[str, Mapping[str, Any]] | None = None,
        trigger_command: tuple[str, Mapping[str, Any]] | None = None,
        stop_command: tuple[str, Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.connection = connection
        self.refs = {"set": set_command, "trigger": trigger_command, "stop": stop_command}
        self.properties: dict[str, PropertySignal] = {}
        self.commands: dict[str, SilaAction] = {}
        self.results: dict[str, ValueSignal] = {}
        self._set: Command | None = None
        self._trigger: Command | None = None
        self._stop: Command | None = None
        self._dynamic: list[str] = []

    # -- what the server offers --------------------------------------------------------------
    def _resolve(self, ref: str) -> tuple[str, str]:
        """``Feature.Command`` (or a fully qualified feature) -> (feature id, command)."""
        feature_name, _, command = ref.rpartition(".")
        for fqi, info in self.connection.features.items():
            if feature_name in (info.identifier, fqi) and command in info.commands:
                return fqi, command
        offered = sorted(f"{i.identifier}.{c}" for i in self.connection.features.values() for c in i.commands)
        raise CommandRejected(f"the server has no command {ref!r}; it offers {', '.join(offered) or 'none'}")

    def _names(self) -> dict[tuple[str, str], str]:
        """(feature, member) -> attribute name: snake case, prefixed by the feature where needed."""
        members = [
            (fqi, m)
            for fqi, info in self.connection.features.items()
            for m in (*info.properties, *info.commands)
        ]
        counts: dict[str, int] = {}
        for _, member in members:
            counts[snake(member)] = counts.get(snake(member), 0) + 1
        names: dict[tuple[str, str], str] = {}
        for fqi, member in members:
            name = snake(member)
            if (
                counts[name] > 1
                or hasattr(type(self), name)
                or name in self.component_names
                or name in self.__dict__
            ):
                name = f"{snake(self.connection.features[fqi].identifier)}_{name}"
            names[(fqi, member)] = name
        return names

    def _grow(self) -> None:
        """Signals and actions for what the server offers (again after a reconnect)."""
        self._shrink()
        names = self._names()
        for fqi, info in self.connection.features.items():
            for prop, observable in info.properties.items():
                self._add_property(fqi, info, prop, observable, names[(fqi, prop)])
            for command in info.commands:
                action = SilaAction(name=f"{self.name}_{names[(fqi, command)]}", parent=self)
                action.bind(self, fqi, command, {})
                self.commands[names[(fqi, command)]] = action
                setattr(self, names[(fqi, command)], action)
                self._dynamic.append(names[(fqi, command)])
        for attr in self.component_names:
            child = getattr(self, attr)
            if isinstance(child, SilaAction):
                feature, command, fixed = child.ref
                child.bind(self, *self._resolve(f"{feature}.{command}"), fixed)
        self._set = self._bound("set")
        self._trigger = self._bound("trigger")
        self._stop = self._bound("stop")
        if self._trigger is not None:
            for response in self._trigger.info.responses:
                signal = ValueSignal(
                    name=f"{self.name}_{snake(response)}", value=0.0, parent=self, kind="hinted"
                )
                self.results[response] = signal

    def _bound(self, which: str) -> Command | None:
        ref = self.refs[which]
        if ref is None:
            return None
        feature, command = self._resolve(ref[0])
        return Command(self, feature, command, ref[1], f"{self.name}.{which}")

    def _add_property(self, fqi: str, info: FeatureInfo, prop: str, observable: bool, attr: str) -> None:
        setter_command = info.commands.get(f"Set{prop}")
        setter: Callable[[Any], None] | None = None
        if setter_command is not None and len(setter_command.parameters) == 1:
            parameter = setter_command.parameters[0]

            def call_setter(value: Any, command: str = setter_command.identifier) -> None:
                self.ensure_connected()
                self.connection.call(fqi, command, {parameter: plain_value(value)})

            setter = call_setter

        kind = "config" if setter is not None or not observable else "normal"
        signal = PropertySignal(name=f"{self.name}_{attr}", value=0.0, parent=self, kind=kind, setter=setter)
        self.properties[attr] = signal
        setattr(self, attr, signal)
        self._dynamic.append(attr)
        if observable:
            self.connection.subscribe(fqi, prop, signal.update)
            first = self.connection.get(fqi, prop)
            signal.update(first)
        else:
            signal.update(self.connection.get(fqi, prop))

    def _shrink(self) -> None:
        for attr in self._dynamic:
            self.__dict__.pop(attr, None)
        self._dynamic.clear()
        self.properties.clear()
        self.commands.clear()
        self.results.clear()

    # -- bluesky -----------------------------------------------------------------------------
    def set(self, value: Any) -> DeviceStatus:
        self.ensure_connected()
        if self._set is None:
            raise CommandRejected(
                f"{self.name}: no command to set (give 'set: Feature.Command' in the lab file)"
            )
        return self._set.run(self, value)

    def trigger(self) -> StatusBase:
        self.ensure_connected()
        if self._trigger is None:
            return super().trigger()
        trigger = self._trigger
        status = trigger.run(self, None)

        def publish(finished: StatusBase) -> None:
            if finished.success:
                for response, signal in self.results.items():
                    signal.update(trigger.responses.get(response))

        status.add_callback(publish)
        return status

    def stop(self, *, success: bool = False) -> None:
        commands = [c for c in (self._set, self._trigger) if c is not None]
        commands += [a.bound for a in self._actions_faces() if a.bound is not None]
        busy = any(c.action.busy for c in commands)
        if success and not busy:
            return  # the RunEngine's courtesy stop at the end of a plan: nothing runs
        for command in commands:
            command.stop()

    def stop_on_server(self) -> bool:
        """The lab file's ``stop:`` command, if any (for servers without a CancelController)."""
        if self._stop is None:
            return False
        self.connection.call(self._stop.feature, self._stop.command, self._stop.fixed)
        return True

    def read(self) -> dict[str, dict[str, Any]]:
        out = super().read()
        for signal in (
            *self.results.values(),
            *(s for s in self.properties.values() if Kind.normal in s.kind),
        ):
            out.update(signal.read())
        return out

    def describe(self) -> dict[str, dict[str, Any]]:
        out = super().describe()
        for signal in (
            *self.results.values(),
            *(s for s in self.properties.values() if Kind.normal in s.kind),
        ):
            out.update(signal.describe())
        return out

    def read_configuration(self) -> dict[str, dict[str, Any]]:
        out = super().read_configuration()
        for signal in self.properties.values():
            if Kind.config in signal.kind:
                out.update(signal.read())
        return out

    def describe_configuration(self) -> dict[str, dict[str, Any]]:
        out = super().describe_configuration()
        for signal in self.properties.values():
            if Kind.config in signal.kind:
                out.update(signal.describe())
        return out

    # -- the device contract -----------------------------------------------------------------
    def _actions_faces(self) -> list[SilaAction]:
        named = [getattr(self, attr) for attr in self.component_names]
        return [a for a in (*named, *self.commands.values()) if isinstance(a, SilaAction)]

    def _actions(self) -> list[BackgroundAction]:
        commands = [c for c in (self._set, self._trigger) if c is not None]
        return [c.action for c in commands] + [a.bound.action for a in self._actions_faces() if a.bound]

    def _connect(self) -> None:
        self.connection.open()
        self._grow()

    def _disconnect(self) -> None:
        self.connection.close()

    def _make_safe(self) -> None:
        self.ensure_connected()
        if not self.connection.cancel_all() and not self.stop_on_server():
            log.warning("%s: the server has no CancelController and no stop command was given", self.name)

    def _recover(self) -> None:
        """A fresh session: the channel, the lock and the features read again."""
        self.connection.close()
        self.connection.open()
        self._grow()

    def _check_health(self) -> None:
        self.connection.ping()

    def identity(self) -> dict[str, Any]:
        with self._named():
            self.ensure_connected()
            return self.connection.identity()


def plain_value(value: Any) -> Any:
    """What a SiLA parameter takes: numpy scalars and arrays as Python values."""
    if isinstance(value, np.ndarray):
        return cast(list[Any], value.tolist())
    if isinstance(value, np.generic):
        return cast(np.generic[Any], value).item()
    return value


def make_sila_device(
    name: str,
    connection: Connection,
    actions: Mapping[str, tuple[str, Mapping[str, Any]]],
    **kwargs: Any,
) -> SilaDevice:
    """The device class for ``actions`` (name -> (Feature.Command, fixed parameters)), instantiated."""
    components: dict[str, Component[SilaAction]] = {}
    for attr, (ref, fixed) in actions.items():
        feature, _, command = ref.rpartition(".")
        components[attr] = Component(SilaAction, feature=feature, command=command, fixed=dict(fixed))
    cls = type(f"SilaDevice_{name}", (SilaDevice,), components)
    return cls(name=name, connection=connection, **kwargs)
