"""The ophyd face of a UR arm with a Robotiq gripper, for bluesky plans.

    yield from bps.mv(arm, "feeder")                     # a named, configured position
    yield from bps.mv(arm.gripper, "closed")             # or "open"; reads show object_detected
    yield from bps.mv(arm.transfer, ("feeder", "dispense"))   # pick + place via *_above positions

Every action runs on a background thread and completes its Status when the arm has finished;
driver errors (UnknownPosition, ProtectiveStop, GripperMissedObject, FeederEmpty...) fail the Status,
and so the plan, with the driver's own exception. ``stop()`` on the arm or on either child stops the
arm (dashboard ``stop``) and ends the action's thread without another motion command.

A feeder's vials are a consumable named by its station (``arm.set_contents("feeder", 48, lot="V-7")``,
``arm.contents()``); a transfer reads ``<name>_transfer_slot`` (the rack slot of the vial it took from
a counted feeder, 0 otherwise) and reports each vial it took to the subscribers of
``arm.subscribe_usage`` (``drivers.stock``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from drivers.errors import InstrumentBusy, SafetyLimitError, name_instrument
from drivers.ophyd_support import BackgroundAction, InstrumentDevice, UnitSignal
from drivers.ophyd_types import Component as Cpt
from drivers.ophyd_types import Device, DeviceStatus, Signal
from drivers.stock import Contents
from drivers.ur.arm import URArm
from drivers.ur.errors import FeederEmpty, GripperFault, MotionStopped, RemoteControlRequired, SafetyStop

log = logging.getLogger(__name__)

GRIPPER_STATES = ("open", "closed")


class SpeedSignal(UnitSignal):
    """Joint speed (rad/s) for the following moves; refused above the arm's cap."""

    def put(self, value: Any, **kwargs: Any) -> None:
        arm: URArm | None = getattr(self.root, "arm", None)
        if arm is not None:
            arm.check_limits(float(value), arm.acceleration)
        super().put(float(value), **kwargs)


class URGripperDevice(Device):
    state = Cpt(Signal, value="unknown", kind="hinted")
    object_detected = Cpt(Signal, value=False, kind="hinted")
    finger_position = Cpt(Signal, value=0, kind="normal")

    def set(self, value: str) -> DeviceStatus:
        root: URArmDevice = self.root
        if value not in GRIPPER_STATES:
            status = DeviceStatus(self)
            status.set_exception(SafetyLimitError(f"{self.name}: set 'open' or 'closed', not {value!r}"))
            return status

        def work(halt: threading.Event) -> None:
            with root.arm.operation(halt):
                root.prepare()
                caught = root.arm.grip() if value == "closed" else root.arm.release()
            self.state.put(value)
            self.object_detected.put(bool(caught))
            self.finger_position.put(root.arm.gripper.position())

        return root.action.run(self, work, f"{value} the gripper")

    def stop(self, *, success: bool = False) -> None:
        self.root.stop(success=success)  # the fingers belong to the arm's one action


class URTransferDevice(Device):
    """``set((source, destination))`` or ``set("source->destination")``: carry a vessel."""

    last = Cpt(Signal, value="", kind="normal")
    #: The rack slot of the vial the last transfer took from a counted feeder (0: not from one).
    slot = Cpt(Signal, value=0, kind="normal")

    def set(self, value: Any) -> DeviceStatus:
        root: URArmDevice = self.root
        try:
            source, destination = value.split("->") if isinstance(value, str) else value
            source, destination = str(source).strip(), str(destination).strip()
            root.arm.target(source)
            root.arm.target(destination)
            root.arm.check_feeder(source)  # an empty feeder fails the Status before anything moves
        except FeederEmpty as empty:
            status = DeviceStatus(self)
            status.set_exception(name_instrument(empty, root.name))
            return status
        except (ValueError, TypeError, SafetyLimitError) as exc:
            status = DeviceStatus(self)
            status.set_exception(
                exc if isinstance(exc, SafetyLimitError) else SafetyLimitError(f"{self.name}: {exc}")
            )
            return status

        def work(halt: threading.Event) -> None:
            before = root.arm.last_pick
            try:
                with root.arm.operation(halt):
                    root.prepare()
                    pick = root.arm.transfer(source, destination, retries=root.pick_retries)
            finally:
                root.report_pick(before)
            root.report_place(destination)
            self.slot.put(pick.slot or 0)
            root.location.put(root.arm.position or "")
            root.gripper.state.put("open")
            root.gripper.object_detected.put(False)
            self.last.put(f"{source}->{destination}")

        return root.action.run(self, work, f"transfer {source} to {destination}")

    def stop(self, *, success: bool = False) -> None:
        self.root.stop(success=success)  # a transfer is the arm moving


class URArmDevice(InstrumentDevice):
    #: The named position the arm last reached ("" while moving or after an interrupted move).
    location = Cpt(Signal, value="", kind="hinted")
    robot_mode = Cpt(Signal, value="", kind="normal")
    safety_status = Cpt(Signal, value="", kind="normal")
    speed = Cpt(SpeedSignal, value=0.0, kind="config", metadata={"units": "rad/s"})
    gripper = Cpt(URGripperDevice, "")
    transfer = Cpt(URTransferDevice, "")

    def __init__(self, arm: URArm, *, name: str, power_on: bool = True, pick_retries: int = 1, **kwargs: Any):
        self.arm = arm
        self.power_on = power_on
        self.pick_retries = pick_retries
        self.action = BackgroundAction(name)
        self._prepared = False
        super().__init__(name=name, **kwargs)
        arm.events = arm.gripper.events = self.fault_events
        Signal.put(self.speed, arm.speed)

    @property
    def position(self) -> str | None:
        return self.arm.position

    def report_pick(self, before: object) -> None:
        """Report the vial the arm took since ``before`` (its ``last_pick`` then), if it took one."""
        pick = self.arm.last_pick
        if pick is None or pick is before:
            return
        self.usage_events.emit("picked", device=self.transfer.name, consumable=pick.station, amount=1.0,
                        unit="vials", lot=pick.lot, remaining=pick.remaining, slot=pick.slot)  # fmt: skip

    def report_place(self, station: str) -> None:
        """Report the vial the arm left at ``station`` (a transfer that ended there)."""
        self.usage_events.emit(
            "placed", device=self.transfer.name, consumable=station, amount=1.0, unit="vials"
        )

    def prepare(self) -> None:
        """Connect, then power and release the arm (or check it is ready) before its first action."""
        self.ensure_connected()
        if self._prepared:
            return
        if self.power_on:
            self.arm.prepare()
        else:
            self.arm.ensure_ready(power=False)
        self._prepared = True

    def set(self, value: str) -> DeviceStatus:
        try:
            self.arm.target(str(value))
            self.arm.check_limits(float(self.speed.get()), self.arm.acceleration)
        except SafetyLimitError as exc:
            status = DeviceStatus(self)
            status.set_exception(exc)
            return status

        def work(halt: threading.Event) -> None:
            try:
                with self.arm.operation(halt):
                    self.prepare()
                    self.arm.move_to(str(value), speed=float(self.speed.get()))
            finally:
                self.location.put(self.arm.position or "")

        return self.action.run(self, work, f"move to {value}")

    def trigger(self) -> DeviceStatus:
        status = DeviceStatus(self)
        try:
            state = self.arm.status()
            self.robot_mode.put(state.robot_mode.value)
            self.safety_status.put(state.safety.value)
        except Exception as exc:
            status.set_exception(exc)
        else:
            status.set_finished()
        return status

    def stop(self, *, success: bool = False) -> None:
        busy = self.action.busy or self.arm.halt.active  # an action, or a recovery in progress
        if success and not busy:
            return  # the RunEngine's end-of-plan courtesy stop: nothing moves, keep the dashboard quiet
        self.action.stop("the motion", MotionStopped("stopped before the motion finished"))
        if busy or self.arm.dashboard.transport.is_open:
            self.arm.stop()

    # -- the device contract -----------------------------------------------------------------
    def _actions(self) -> list[BackgroundAction]:
        return [self.action]

    def _connect(self) -> None:
        self.arm.open()
        # Another worker may have activated it already: activating again would cycle the fingers.
        self.arm.activate_gripper()

    def _disconnect(self) -> None:
        self.arm.close()
        self._prepared = False

    def _make_safe(self) -> None:
        self.arm.open()
        self.arm.stop()

    def _recover(self) -> None:
        self.arm.open()
        self.arm.recover_from_protective_stop()
        self.arm.activate_gripper()
        self._prepared = False  # power and brakes are checked again before the next move

    def identity(self) -> dict[str, Any]:
        """Model, serial number and PolyScope version, from the dashboard server."""
        with self._named():
            self.ensure_connected()
            ask = self.arm.dashboard.request
            return {
                "model": self.arm.query(lambda: ask("get robot model")),
                "serial": self.arm.query(lambda: ask("get serial number")),
                "firmware": self.arm.query(self.arm.dashboard.polyscope_version),
            }

    def _contents(self) -> dict[str, Contents]:
        return {station: self.arm.feeder(station) for station in self.arm.feeders()}

    def _set_contents(self, name: str, amount: float | None, lot: str | None) -> None:
        if name not in self.arm.positions:
            raise self._unknown_consumable(name, self.arm.positions)
        if self.action.busy:
            raise InstrumentBusy(f"{self.name} is moving; say what the feeder holds once it stops")
        self.arm.set_feeder(name, amount, lot)

    def _check_health(self) -> None:
        state = self.arm.status()
        self.robot_mode.put(state.robot_mode.value)
        self.safety_status.put(state.safety.value)
        if not state.remote_control:
            raise RemoteControlRequired("the robot is in local control; switch to Remote Control")
        if not state.safety.allows_motion:
            raise SafetyStop(f"the arm is stopped by its safety system ({state.safety.value})", state.safety)
        code = self.arm.gripper.fault()
        if code:
            raise GripperFault(f"the gripper reports fault {code}", code)
