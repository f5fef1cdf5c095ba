"""A whole simulated lab from one file: the shared world and the instruments that act on it.

speed: 50                    # optional default speed factor (the command line wins)
world:                       # see simulators.world.World.from_config
  stocks: {red: {concentrations: {red: 4.0e-5}}, water: {}}
  stations: {feeder: {kind: feeder}, dispense: {}, spectrometer: {}, waste: {kind: waste}}
instruments:
  dye_pumps:                 # the instrument's name; its endpoints print as dye_pumps.pump
    kind: ne1000             # ne1000 | cavro | ur | ocean-hdx
    faults: "stall@3"        # optional fault spec (simulators.faults)
    ...                      # everything else is the instrument's own configuration
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from simulators.base import ConfigError, Simulator, simulator_class
from simulators.clock import Clock
from simulators.faults import FaultPlan, FaultSpecError
from simulators.server import Endpoint, Link, serve
from simulators.world import World

_LAB_KEYS = {"speed", "world", "instruments", "description"}


@dataclass
class Lab:
    world: World
    simulators: dict[str, Simulator]


def read_lab_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read lab file: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a lab file is a mapping with 'world' and 'instruments'")
    return config


def build_lab(config: Mapping[str, Any], clock: Clock, *, source: str = "lab") -> Lab:
    unknown = set(config) - _LAB_KEYS
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_LAB_KEYS))}"
        )
    try:
        world = World.from_config(config.get("world"), clock)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{source}: world: {exc}") from exc
    instruments = config.get("instruments") or {}
    if not isinstance(instruments, Mapping) or not instruments:
        raise ConfigError(f"{source}: instruments: give at least one instrument as name: {{kind: ...}}")
    simulators = {}
    for index, (name, spec) in enumerate(instruments.items()):
        where = f"{source}: instruments.{name}"
        if not isinstance(spec, Mapping) or "kind" not in spec:
            raise ConfigError(f"{where}: needs 'kind'")
        spec = dict(spec)
        cls = simulator_class(str(spec.pop("kind")))
        try:
            faults = FaultPlan.parse(spec.pop("faults", None), cls.supported_faults(), seed=index + 1)
        except FaultSpecError as exc:
            raise ConfigError(f"{where}.faults: {exc}") from exc
        try:
            simulators[name] = cls(world, spec, faults, name=name)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    return Lab(world, simulators)


def build_single(
    kind: str, clock: Clock, *, faults: str | None = None, config: Mapping[str, Any] | None = None
) -> Lab:
    """One instrument of ``kind`` on its default bench (what ``python -m simulators KIND`` serves)."""
    cls = simulator_class(kind)
    instrument = {"kind": kind, **(cls.default_config() if config is None else dict(config))}
    if faults:
        instrument["faults"] = faults
    return build_lab({"world": cls.default_world(), "instruments": {kind: instrument}}, clock, source=kind)


async def serve_lab(
    lab: Lab, link: Link = "tcp", *, host: str = "127.0.0.1", port: int = 0
) -> list[tuple[str, str, Endpoint]]:
    """Serve every instrument; returns (instrument, endpoint name, endpoint) in file order."""
    served: list[tuple[str, str, Endpoint]] = []
    try:
        for name, simulator in lab.simulators.items():
            for endpoint in await serve(simulator, link, host=host, port=port + len(served) if port else 0):
                served.append((name, endpoint.name, endpoint))
    except BaseException:
        for *_, endpoint in served:
            await endpoint.aclose()
        raise
    return served
