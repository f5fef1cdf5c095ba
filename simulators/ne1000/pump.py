"""One simulated New Era syringe pump: its settings, its state machine and its plunger.

The plunger moves lazily: ``settle(now)`` advances it from the last settled time, moving liquid
from the syringe to the outlet (infusing) or back (withdrawing), and stops it when the volume is
delivered, the plunger reaches the end of travel (a stall, as on the real pump), an injected stall
point is reached, or the safe-mode communications timeout runs out.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from drivers.newera import codec
from drivers.newera.codec import Reply, Request
from simulators.faults import FaultPlan
from simulators.world import LiquidHolder, Stock, Vessel, World

log = logging.getLogger(__name__)

_RATE = re.compile(r"^(?P<number>[0-9.]+)(?P<units>UM|MM|UH|MH)?$")


@dataclass
class Motion:
    direction: str  # INF | WDR
    rate_ul_min: float
    remaining_ul: float | None  # None: continuous (VOL 0) or purge
    stall_in_ul: float | None = None  # an injected stall after this much more travel
    purge: bool = False


class PumpError(Exception):
    """A command error to answer with (``?``, ``?NA``, ``?OOR``)."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


class SimulatedPump:
    def __init__(self, world: World, spec: dict[str, Any], *, name: str):
        self.world = world
        self.name = name
        self.address = int(spec["address"])
        self.model = codec.pump_model(str(spec.get("model", "NE1000")))
        self.syringe_volume_ul = float(spec["syringe_volume_ul"])
        self.power_up_diameter_mm = float(spec["diameter_mm"])
        self.power_up_rate_ul_min = float(spec.get("rate_ul_min", 1000.0))
        self.outlet: LiquidHolder = world.holder(str(spec["outlet"]))
        reagent = str(spec["reagent"])
        self.reagent: LiquidHolder = world.holder(reagent if ":" in reagent else f"stock:{reagent}")
        self.syringe = Vessel(f"{name}-syringe", capacity_ul=self.syringe_volume_ul)
        fill = float(spec.get("fill_ul", self.syringe_volume_ul))
        self.syringe.put(self.reagent.take(fill))
        self.plunger_ul = fill  # volume in front of the plunger (liquid, and air if it ran dry)
        #: The bench's accounting: liquid out of the outlet, plunger travel, and what people took away.
        self.delivered_ul = 0.0
        self.travel_ul = 0.0
        self.removed_ul = 0.0
        # Communications survive a power cycle (the manual: safe mode stays on until disabled).
        self.safe_timeout_s = 0
        self.timer_armed = False
        self.last_packet = world.now()
        self.power_up()

    # -- power ---------------------------------------------------------------------------------------
    def power_up(self) -> None:
        """Settings back to their power-up values, motion stopped, the reset alarm pending."""
        self.diameter_mm = self.power_up_diameter_mm
        low, high = self.model.rate_limits_ul_min(self.diameter_mm)
        units, text, _ = codec.best_units(
            min(max(self.power_up_rate_ul_min, low), high), codec.RATE_UNITS_UL_MIN
        )
        self.rate_value, self.rate_units = float(text), units
        self.volume_value, self.volume_units = 0.0, codec.default_volume_units(self.diameter_mm)
        self.direction = "INF"
        self.infused_ul = self.withdrawn_ul = 0.0
        self.motion: Motion | None = None
        self.paused: Motion | None = None
        self.alarm: str | None = "R"
        self.timer_armed = False
        self.settled_at = self.world.now()

    # -- physics ------------------------------------------------------------------------------------
    @property
    def rate_ul_min(self) -> float:
        return self.rate_value * codec.RATE_UNITS_UL_MIN[self.rate_units]

    @property
    def volume_ul(self) -> float:
        return self.volume_value * codec.VOLUME_UNITS_UL[self.volume_units]

    def status_char(self) -> str:
        if self.motion is not None:
            return "X" if self.motion.purge else ("I" if self.motion.direction == "INF" else "W")
        return "P" if self.paused is not None else "S"

    def settle(self, now: float) -> None:
        motion = self.motion
        timeout_at = (
            self.last_packet + self.safe_timeout_s if self.timer_armed and self.safe_timeout_s else math.inf
        )
        if motion is None:
            self.settled_at = now
            if timeout_at <= now:
                self._timeout()
            return
        per_s = motion.rate_ul_min / 60.0
        travel = self.plunger_ul if motion.direction == "INF" else self.syringe_volume_ul - self.plunger_ul
        events = [(self.settled_at + travel / per_s, "S"), (timeout_at, "T")]
        if motion.remaining_ul is not None:
            events.append((self.settled_at + motion.remaining_ul / per_s, ""))
        if motion.stall_in_ul is not None:
            events.append((self.settled_at + motion.stall_in_ul / per_s, "S"))
        end, why = min(events, key=lambda event: event[0])
        until = min(now, end)
        self._flow(max(0.0, (until - self.settled_at) * per_s), (self.settled_at, until))
        self.settled_at = until
        if end <= now:
            self.motion = None
            self.paused = None
            if why == "T":
                self._timeout()
            elif why == "S":
                log.info("%s: motor stalled", self.name)
                self.alarm = "S"

    def _timeout(self) -> None:
        log.info("%s: safe-mode communications timeout", self.name)
        self.motion = self.paused = None
        self.alarm = "T"
        self.timer_armed = False  # restarts only with the next valid packet

    def _flow(self, volume: float, span: tuple[float, float] | None = None) -> None:
        motion = self.motion
        if motion is None or volume <= 0:
            return
        if motion.remaining_ul is not None:
            motion.remaining_ul = max(0.0, motion.remaining_ul - volume)
        if motion.stall_in_ul is not None:
            motion.stall_in_ul = max(0.0, motion.stall_in_ul - volume)
        if motion.direction == "INF":
            portion = self.syringe.take(volume)
            portion.span = span  # a flow reactor spreads it over the time it took
            self.plunger_ul = max(0.0, self.plunger_ul - volume)
            if portion.volume_ul > 0:
                self.outlet.put(portion)
            self.delivered_ul += portion.volume_ul
            self.travel_ul += volume
            self.infused_ul += volume
        else:
            self.syringe.put(self.outlet.take(volume))
            self.plunger_ul = min(self.syringe_volume_ul, self.plunger_ul + volume)
            self.withdrawn_ul += volume

    # -- a person's hands -----------------------------------------------------------------------------
    def refill(self, volume_ul: float, *, lot: str | None = None, replace: bool = False) -> dict[str, Any]:
        """Take the syringe off, fill it to ``volume_ul`` from its reagent, put it back.

        With ``replace`` a new, empty syringe is filled instead (what the old one held goes away); else
        the liquid left in it stays and is topped up. ``lot`` names the bottle it was filled from (the
        stock's lot from now on). A stock that runs short fills the rest with air, as it would.
        """
        if self.motion is not None:
            moving = "infusing" if self.motion.direction == "INF" else "withdrawing"
            raise ValueError(f"{self.name} is {moving}: stop it before taking the syringe off")
        if not 0 <= volume_ul <= self.syringe_volume_ul:
            raise ValueError(
                f"{self.name}: volume_ul must be 0..{self.syringe_volume_ul:g}, not {volume_ul:g}"
            )
        if lot is not None:
            if not isinstance(self.reagent, Stock):
                raise ValueError(f"{self.name} draws from {self.reagent.name}, which has no lot")
            self.reagent.lot = lot
        if replace:
            self.removed_ul += self.syringe.volume_ul
            self.syringe = Vessel(f"{self.name}-syringe", capacity_ul=self.syringe_volume_ul)
            self.plunger_ul = 0.0
        elif volume_ul < self.plunger_ul - 1e-9:
            raise ValueError(f"{self.name}: the syringe holds {self.plunger_ul:g} µL already; "
                             "replace it to start afresh")  # fmt: skip
        self.syringe.put(self.reagent.take(volume_ul - self.plunger_ul))
        self.plunger_ul = volume_ul
        self.paused = None  # the program the pump was paused in cannot go on with another syringe
        return self.describe()

    def describe(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "reagent": self.reagent.name,
            "capacity_ul": self.syringe_volume_ul,
            "plunger_ul": self.plunger_ul,
            "liquid_ul": self.syringe.volume_ul,
            "sources": {o: v for o, v in self.syringe.sources.items() if v > 1e-12},
            "delivered_ul": self.delivered_ul,
            "travel_ul": self.travel_ul,
            "removed_ul": self.removed_ul,
            "state": self.status_char() if self.alarm is None else f"A?{self.alarm}",
        }

    # -- protocol -----------------------------------------------------------------------------------
    def handle(self, request: Request, now: float, faults: FaultPlan) -> Reply:
        """Answer one request addressed to this pump (the caller settled the world to ``now``)."""
        self.last_packet = now
        self.timer_armed = self.safe_timeout_s > 0
        if faults.fires("reset"):
            log.info("%s: fault reset (power cycle)", self.name)
            self.power_up()
            self.timer_armed = self.safe_timeout_s > 0
        if self.alarm is None:
            data, error = "", None
            try:
                data = self._execute(request, now, faults)
            except PumpError as exc:
                error = exc.code
            self.settle(now)  # a move that cannot start (empty syringe) stalls at once
            if self.alarm is None:
                return Reply(self.address, self.status_char(), None, error, data)
        alarm, self.alarm = self.alarm, None  # sending the alarm acknowledges it
        return Reply(self.address, None, alarm)

    def _execute(self, request: Request, now: float, faults: FaultPlan) -> str:
        handler = (
            getattr(self, f"_cmd_{request.command.lower()}", None) if request.command.isalpha() else None
        )
        if request.command == "":
            return ""
        if handler is None:
            raise PumpError("")
        return handler(request.argument, faults)

    def _moving(self) -> bool:
        return self.motion is not None

    def _number(self, text: str) -> float:
        try:
            return codec.parse_number(text)
        except codec.CodecError:
            raise PumpError("OOR") from None

    def _cmd_ver(self, argument: str, faults: FaultPlan) -> str:
        return self.model.version_string()

    def _cmd_dia(self, argument: str, faults: FaultPlan) -> str:
        if not argument:
            return codec.format_number(self.diameter_mm, trailing_point=True)
        value = self._number(argument)
        if self._moving():
            raise PumpError("NA")
        if not self.model.min_diameter_mm <= value <= self.model.max_diameter_mm:
            raise PumpError("OOR")
        self.diameter_mm = value
        self.volume_units = codec.default_volume_units(value)
        return ""

    def _cmd_rat(self, argument: str, faults: FaultPlan) -> str:
        if not argument:
            return codec.format_number(self.rate_value, trailing_point=True) + self.rate_units
        match = _RATE.match(argument)
        if match is None:
            raise PumpError("OOR")
        units = match["units"] or self.rate_units
        if self._moving() and units != self.rate_units:
            raise PumpError("NA")  # rate units cannot change while pumping
        value = self._number(match["number"])
        low, high = self.model.rate_limits_ul_min(self.diameter_mm)
        if not low <= value * codec.RATE_UNITS_UL_MIN[units] <= high:
            raise PumpError("OOR")
        self.rate_value, self.rate_units = value, units
        if self.motion is not None and not self.motion.purge:
            self.motion.rate_ul_min = self.rate_ul_min  # takes effect at once (settled to now)
        return ""

    def _cmd_vol(self, argument: str, faults: FaultPlan) -> str:
        if not argument:
            return codec.format_number(self.volume_value, trailing_point=True) + self.volume_units
        if self._moving():
            raise PumpError("NA")
        if argument in codec.VOLUME_UNITS_UL:
            self.volume_units = argument
        else:
            self.volume_value = self._number(argument)
        return ""

    def _cmd_dir(self, argument: str, faults: FaultPlan) -> str:
        if not argument:
            return self.direction
        if argument not in ("INF", "WDR", "REV", "STK"):
            raise PumpError("OOR")
        if self._moving() and (self.volume_value or argument == "STK"):
            raise PumpError("NA")  # direction changes while pumping only when pumping continuously
        if argument == "REV":
            self.direction = "WDR" if self.direction == "INF" else "INF"
        elif argument != "STK":  # sticky direction keeps the current one here (no TTL input)
            self.direction = argument
        if self.motion is not None and not self.motion.purge:
            self.motion.direction = self.direction
        return ""

    def _cmd_run(self, argument: str, faults: FaultPlan) -> str:
        if self._moving():
            return ""
        if self.paused is not None:
            self.motion, self.paused = self.paused, None
            return ""
        low, high = self.model.rate_limits_ul_min(self.diameter_mm)
        if not low <= self.rate_ul_min <= high:
            raise PumpError("OOR")
        target = self.volume_ul or None
        self.motion = Motion(self.direction, self.rate_ul_min, target)
        if faults.fires("stall"):
            travel = self.plunger_ul if self.direction == "INF" else self.syringe_volume_ul - self.plunger_ul
            self.motion.stall_in_ul = min(target or travel, travel) / 2.0
            log.info("%s: fault stall after %.4g µL", self.name, self.motion.stall_in_ul)
        return ""

    def _cmd_pur(self, argument: str, faults: FaultPlan) -> str:
        if self._moving():
            raise PumpError("NA")
        self.paused = None
        self.motion = Motion(
            self.direction, self.model.rate_limits_ul_min(self.diameter_mm)[1], None, purge=True
        )
        return ""

    def _cmd_stp(self, argument: str, faults: FaultPlan) -> str:
        if self.motion is not None:
            # The first STP pauses the program (RUN resumes it); a purge simply ends.
            self.paused = None if self.motion.purge else self.motion
            self.motion = None
        else:
            self.paused = None
        return ""

    def _cmd_dis(self, argument: str, faults: FaultPlan) -> str:
        scale = codec.VOLUME_UNITS_UL[self.volume_units]
        # The display has four digits; past 9999 units it saturates rather than overflowing.
        infused, withdrawn = (min(v / scale, 9999.0) for v in (self.infused_ul, self.withdrawn_ul))
        return codec.format_dispensed(infused, withdrawn, self.volume_units)

    def _cmd_cld(self, argument: str, faults: FaultPlan) -> str:
        if argument == "INF":
            self.infused_ul = 0.0
        elif argument == "WDR":
            self.withdrawn_ul = 0.0
        else:
            raise PumpError("OOR")
        return ""

    def _cmd_saf(self, argument: str, faults: FaultPlan) -> str:
        if not argument:
            return str(self.safe_timeout_s)
        if not argument.isdigit() or not 0 <= int(argument) <= 255:
            raise PumpError("OOR")
        self.safe_timeout_s = int(argument)
        self.timer_armed = self.safe_timeout_s > 0
        return ""
