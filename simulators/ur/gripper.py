"""The simulated Robotiq 2F gripper behind the URCap socket, acting on the shared world.

Fingers travel at a speed set by ``SPE`` (the 2F-85's 20–150 mm/s over an 85 mm stroke). A close
at a station holding a vessel stops on it (``OBJ 2``) and lifts it off the station; a close with
nothing there runs to the end (``OBJ 3``). Opening while holding sets the vessel down at the arm's
station, or drops it when the arm is in the air. The effect happens when the fingers get there,
computed lazily from the clock like everything else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from drivers.ur.codec import GripperStatus, ObjectStatus
from simulators.world import Vessel, World

log = logging.getLogger(__name__)

STROKE_MM = 85.0
FLT_NOT_ACTIVATED = 7  # Robotiq: "the activation bit must be set prior to action"


@dataclass
class Motion:
    start: float
    end: float
    origin: int
    target: int
    result: ObjectStatus
    effect: Callable[[], None] | None = None
    applied: bool = False

    def position(self, now: float) -> int:
        if now >= self.end or self.end <= self.start:
            return self.target
        fraction = (now - self.start) / (self.end - self.start)
        return round(self.origin + (self.target - self.origin) * fraction)


class Gripper:
    def __init__(
        self,
        world: World,
        station_of_arm: Callable[[float], str | None],
        misses: Callable[[], bool],
        *,
        activation_s: float = 1.0,
        object_position: int = 130,
        active: bool = False,
    ):
        self.world = world
        self.station_of_arm = station_of_arm
        self.misses = misses
        self.activation_s = activation_s
        self.object_position = object_position
        self.variables = {"ACT": 0, "GTO": 0, "ATR": 0, "ARD": 0, "FOR": 0, "SPE": 255, "SID": 9, "POS": 0}
        self.requested = 0  # PRE: the position the fingers were last sent to
        self.fault = 0
        self.held: Vessel | None = None
        self.dropped: list[Vessel] = []
        self._active_from: float | None = 0.0 if active else None
        self.motion: Motion | None = None
        self._rest = 0
        if active:
            self.variables["ACT"] = 1

    # -- reading ---------------------------------------------------------------------------
    def status(self, now: float) -> GripperStatus:
        if self._active_from is None:
            return GripperStatus.RESET
        return GripperStatus.ACTIVE if now >= self._active_from else GripperStatus.ACTIVATING

    def position(self, now: float) -> int:
        return self._rest if self.motion is None else self.motion.position(now)

    def object_status(self, now: float) -> ObjectStatus:
        if self.motion is None:
            return ObjectStatus.AT_POSITION
        return ObjectStatus.MOVING if now < self.motion.end else self.motion.result

    def get(self, name: str, now: float) -> int:
        self.settle(now)
        if name == "POS":
            return self.position(now)
        if name == "PRE":
            return self.requested
        if name == "OBJ":
            return int(self.object_status(now))
        if name == "STA":
            return int(self.status(now))
        if name == "FLT":
            return self.fault
        return self.variables[name]

    # -- writing ---------------------------------------------------------------------------
    def set(self, values: dict[str, int], now: float) -> None:
        self.settle(now)
        for name, value in values.items():
            self.variables[name] = max(0, min(255, value)) if name in ("POS", "SPE", "FOR") else value
        if "ACT" in values:
            self._activation(values["ACT"], now)
        go = values.get("GTO") == 1 or ("POS" in values and self.variables["GTO"] == 1)
        if go:
            if self.status(now) != GripperStatus.ACTIVE:
                self.fault = FLT_NOT_ACTIVATED
            else:
                self._go(self.variables["POS"], now)

    def _activation(self, act: int, now: float) -> None:
        if act == 0:
            self._stop(now)
            self._active_from = None
            self.variables["GTO"] = 0
        elif self._active_from is None:
            # Activation runs the fingers through their stroke and leaves them open.
            self._stop(now)
            self._active_from = now + self.activation_s
            self.fault = 0
            self.requested = 0
            self.motion = Motion(now, now + self.activation_s, self._rest, 0, ObjectStatus.AT_POSITION)
            if self.held is not None:
                self.motion.effect = self._release_effect(self.station_of_arm(now))

    def _go(self, target: int, now: float) -> None:
        origin = self.position(now)
        self._stop(now)
        self.requested = target
        station = self.station_of_arm(now)
        result, effect, end_position = ObjectStatus.AT_POSITION, None, target
        if target > origin:  # closing
            if self.held is not None:
                end_position, result = max(origin, self.object_position), ObjectStatus.STOPPED_CLOSING
            elif (
                station is not None
                and self.world.vessel_at(station) is not None
                and target >= self.object_position
            ):
                if self.misses():
                    log.info("fault miss: the fingers slip past the vessel at %s", station)
                else:
                    end_position, result = self.object_position, ObjectStatus.STOPPED_CLOSING
                    effect = self._pick_effect(station)
        elif target < origin and self.held is not None:
            effect = self._release_effect(station)
        speed_mm_s = 20.0 + 130.0 * self.variables["SPE"] / 255.0
        duration = abs(end_position - origin) / 255.0 * STROKE_MM / speed_mm_s
        self.motion = Motion(now, now + duration, origin, end_position, result, effect)

    def _stop(self, now: float) -> None:
        if self.motion is not None:
            self._rest = self.motion.position(now)
            if now < self.motion.end:
                self.motion.effect = None  # interrupted before the fingers got there
        self.motion = None

    # -- the world -------------------------------------------------------------------------
    def _pick_effect(self, station: str) -> Callable[[], None]:
        def pick() -> None:
            self.held = self.world.pick(station)
            log.info("gripper lifted %s from %s", getattr(self.held, "name", None), station)

        return pick

    def _release_effect(self, station: str | None) -> Callable[[], None]:
        def release() -> None:
            vessel, self.held = self.held, None
            if vessel is None:
                return
            if station is not None and self.world.place(station, vessel):
                log.info("gripper set %s down at %s", vessel.name, station)
            else:
                self.dropped.append(vessel)
                where = f"{station} occupied" if station else "in the air"
                log.warning("gripper dropped %s (%s)", vessel.name, where)

        return release

    def settle(self, now: float) -> None:
        motion = self.motion
        if motion is not None and now >= motion.end and not motion.applied:
            motion.applied = True  # before acting: the world settles (and calls us back) on pick/place
            if motion.effect is not None:
                motion.effect()
