"""A whole simulated lab from one file: the shared world and the instruments that act on it.

speed: 50                    # optional default speed factor (the command line wins)
faults_seed: 3               # optional seed of the fault injection (--faults-seed wins); default 0
world:                       # see simulators.world.World.from_config
  stocks: {red: {concentrations: {red: 4.0e-5}}, water: {}}
  stations: {feeder: {kind: feeder}, dispense: {}, spectrometer: {}, waste: {kind: waste}}
instruments:
  dye_pumps:                 # the instrument's name; its endpoints print as dye_pumps.pump
    kind: ne1000             # ne1000 | cavro | ur | ocean-hdx, or a kind an installed package offers
    faults: "stall@3"        # optional fault spec (simulators.faults)
    ...                      # everything else is the instrument's own configuration

Besides the instruments' endpoints, the lab serves ``bench.hands`` (``simulators.hands``): a person's
hands on the bench and its true state. ``bench`` is therefore not a name an instrument may take.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from simulators.base import ConfigError, Simulator, simulator_class
from simulators.clock import Clock
from simulators.faults import FaultPlan, FaultSpecError
from simulators.hands import BENCH, Bench
from simulators.server import Endpoint, Link, serve
from simulators.world import World

_LAB_KEYS = {"speed", "world", "instruments", "description", "faults_seed"}


def fault_seed(seed: int, instrument: str) -> int:
    """The fault seed of one instrument: from the lab's seed and the instrument's name, so a rerun
    with another seed sees other faults, and reordering the lab file changes nothing."""
    return zlib.crc32(f"{seed}:{instrument}".encode())


@dataclass
class Lab:
    world: World
    simulators: dict[str, Simulator]
    bench: Bench | None = None

    def __post_init__(self) -> None:
        if self.bench is None:
            self.bench = Bench(self.world, self.simulators)


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


def build_lab(
    config: Mapping[str, Any], clock: Clock, *, source: str = "lab", faults_seed: int | None = None
) -> Lab:
    """The world and the simulators of a lab file; ``faults_seed`` overrides the file's ``faults_seed``."""
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
    seed = config.get("faults_seed", 0) if faults_seed is None else faults_seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{source}: faults_seed: expected a whole number >= 0, got {seed!r}")
    simulators = {}
    for name, spec in instruments.items():
        where = f"{source}: instruments.{name}"
        if name == BENCH:
            raise ConfigError(f"{where}: {BENCH!r} names the bench's own endpoint (bench.hands); "
                              "give the instrument another name")  # fmt: skip
        if not isinstance(spec, Mapping) or "kind" not in spec:
            raise ConfigError(f"{where}: needs 'kind'")
        spec = dict(spec)
        try:
            cls = simulator_class(str(spec.pop("kind")))
        except ConfigError as exc:
            raise ConfigError(f"{where}.kind: {exc}") from None
        try:
            faults = FaultPlan.parse(
                spec.pop("faults", None), cls.supported_faults(), seed=fault_seed(seed, name)
            )
        except FaultSpecError as exc:
            raise ConfigError(f"{where}.faults: {exc}") from exc
        try:
            simulators[name] = cls(world, spec, faults, name=name)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    return Lab(world, simulators)


def build_single(
    kind: str,
    clock: Clock,
    *,
    faults: str | None = None,
    config: Mapping[str, Any] | None = None,
    faults_seed: int | None = None,
) -> Lab:
    """One instrument of ``kind`` on its default bench (what ``python -m simulators KIND`` serves)."""
    cls = simulator_class(kind)
    instrument = {"kind": kind, **(cls.default_config() if config is None else dict(config))}
    if faults:
        instrument["faults"] = faults
    lab = {"world": cls.default_world(), "instruments": {kind: instrument}}
    return build_lab(lab, clock, source=kind, faults_seed=faults_seed)


def endpoint_names(lab: Lab) -> list[str]:
    """``instrument.endpoint`` for every endpoint the lab serves, in file order, then ``bench.hands``."""
    return [f"{name}.{endpoint}" for name, simulator in _served(lab) for endpoint in simulator.endpoints]


def _served(lab: Lab) -> list[tuple[str, Simulator]]:
    """The instruments in file order, then the bench (whose hands come last, after every instrument)."""
    return [*lab.simulators.items(), *([(BENCH, lab.bench)] if lab.bench is not None else [])]


async def serve_lab(
    lab: Lab, link: Link = "tcp", *, host: str = "127.0.0.1", port: int = 0, standard_ports: bool = False
) -> list[tuple[str, str, Endpoint]]:
    """Serve every instrument; returns (instrument, endpoint name, endpoint) in file order.

    ``standard_ports`` puts each endpoint on the real instrument's port (one instrument per host)."""
    served: list[tuple[str, str, Endpoint]] = []
    try:
        for name, simulator in _served(lab):
            ports = dict(simulator.standard_ports) if standard_ports else None
            if standard_ports and not ports:
                ports = {endpoint: 0 for endpoint in simulator.endpoints}  # no standard port: any free one
            for endpoint in await serve(
                simulator, link, host=host, port=port + len(served) if port else 0, ports=ports
            ):
                served.append((name, endpoint.name, endpoint))
    except BaseException:
        for *_, endpoint in served:
            await endpoint.aclose()
        raise
    return served
