"""Named arm positions taught on the pendant: the only places the driver will move the arm to.

A positions file is YAML, either a bare mapping ``name: [j1, …, j6]`` or::

    units: deg            # rad (default) or deg, as the pendant shows them
    positions:
      home: [0, -90, 90, -90, -90, 0]
      feeder: [...]

Joint angles are base, shoulder, elbow, wrist 1, wrist 2, wrist 3. Every error names the
source, the field and what is allowed, so a typo in a file is found before the arm moves.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import yaml

from drivers.ur.errors import PositionConfigError
from drivers.ur.urscript import JOINTS

Joints = tuple[float, ...]

#: UR joints turn ±360° (the manuals' default joint limits); a site may narrow them.
DEFAULT_JOINT_LIMITS: tuple[tuple[float, float], ...] = ((-2 * math.pi, 2 * math.pi),) * JOINTS
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def validate_joint_limits(raw: Any, source: str = "joint_limits") -> tuple[tuple[float, float], ...]:
    if raw is None:
        return DEFAULT_JOINT_LIMITS
    if not isinstance(raw, Sequence) or len(cast("Sequence[object]", raw)) != JOINTS:
        raise PositionConfigError(f"{source}: give {JOINTS} [low, high] pairs in radians, one per joint")
    limits: list[tuple[float, float]] = []
    for index, pair in enumerate(cast("Sequence[object]", raw)):
        if not isinstance(pair, Sequence) or len(cast("Sequence[object]", pair)) != 2:
            raise PositionConfigError(f"{source}[{index}]: expected [low, high] in radians, got {pair!r}")
        low, high = (_number(x, f"{source}[{index}]") for x in cast("Sequence[object]", pair))
        if not low < high:
            raise PositionConfigError(f"{source}[{index}]: low {low} must be below high {high}")
        limits.append((low, high))
    return tuple(limits)


def validate_positions(
    raw: Any,
    *,
    source: str = "positions",
    units: str = "rad",
    joint_limits: Sequence[tuple[float, float]] = DEFAULT_JOINT_LIMITS,
) -> dict[str, Joints]:
    """Check a mapping of position name → six joint angles; returns radians."""
    if units not in ("rad", "deg"):
        raise PositionConfigError(f"{source}: units must be 'rad' or 'deg', not {units!r}")
    if not isinstance(raw, Mapping) or not raw:
        raise PositionConfigError(f"{source}: expected a mapping of position name to [j1, …, j6]")
    positions: dict[str, Joints] = {}
    for name, joints in cast("Mapping[object, object]", raw).items():
        field = f"{source}.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise PositionConfigError(
                f"{field}: a position name is letters, digits, '_' or '-', starting with a letter"
            )
        angles = cast("Sequence[object]", joints)
        if not isinstance(joints, Sequence) or isinstance(joints, str) or len(angles) != JOINTS:
            raise PositionConfigError(
                f"{field}: expected a list of {JOINTS} joint angles ({units}), got {joints!r}"
            )
        values = tuple(_number(x, field) for x in angles)
        if units == "deg":
            values = tuple(math.radians(x) for x in values)
        check_within_limits(values, joint_limits, field)
        positions[name] = values
    return positions


def check_within_limits(joints: Sequence[float], limits: Sequence[tuple[float, float]], what: str) -> None:
    for index, (value, (low, high)) in enumerate(zip(joints, limits, strict=True)):
        if not low <= value <= high:
            raise PositionConfigError(
                f"{what}: joint {index + 1} at {value:.4f} rad is outside its limits [{low:.4f}, {high:.4f}]"
            )


def load_positions_file(
    path: str | Path, *, joint_limits: Sequence[tuple[float, float]] = DEFAULT_JOINT_LIMITS
) -> dict[str, Joints]:
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PositionConfigError(f"{path}: cannot read positions file: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise PositionConfigError(f"{path}: not valid YAML: {exc}") from exc
    if isinstance(content, Mapping) and "positions" in content:
        content = cast("Mapping[str, Any]", content)
        unknown = set(content) - {"positions", "units", "stations", "description"}
        if unknown:
            raise PositionConfigError(
                f"{path}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                "allowed: positions, units, stations, description"
            )
        return validate_positions(
            content["positions"],
            source=f"{path}: positions",
            units=str(content.get("units", "rad")),
            joint_limits=joint_limits,
        )
    return validate_positions(content, source=str(path), joint_limits=joint_limits)


def _number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PositionConfigError(f"{field}: {value!r} is not a finite number")
    return float(value)


def match_position(
    joints: Sequence[float], positions: Mapping[str, Sequence[float]], tolerance: float
) -> str | None:
    """The taught position ``joints`` is at (every joint within ``tolerance`` rad), if any."""
    for name, taught in positions.items():
        if all(abs(a - b) <= tolerance for a, b in zip(joints, taught, strict=True)):
            return name
    return None
