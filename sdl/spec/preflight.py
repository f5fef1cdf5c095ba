"""Checking a lab's instruments before anything is connected: drivers resolve, every device builds offline
with its options (the driver's own pydantic model says what is wrong), and every address placeholder names an
endpoint the simulated lab really serves.

Used by `sdl validate` for a campaign's ``lab:`` and by `sdl daemon` for a lab file; each problem comes back
as (location under the instruments mapping, message), for the loader to put a file and line on.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sdl.spec.campaign import Instrument, fill
from sdl.spec.devices import Destroyable
from sdl.spec.importpaths import UnresolvedImport, resolve_driver

Problem = tuple[tuple[Any, ...], str]
#: What a placeholder stands for while a device is built offline (never connected to).
OFFLINE_ADDRESS = "socket://127.0.0.1:9"


def check_drivers(instruments: Mapping[str, Instrument], base_dir: Path | None) -> list[Problem]:
    """Each driver resolves, and each device builds offline with its options."""
    problems: list[Problem] = []
    for name, spec in instruments.items():
        try:
            factory = resolve_driver(spec.driver, base_dir)
        except UnresolvedImport as exc:
            problems.append(((name, "driver"), f"driver {spec.driver!r} does not resolve: {exc}"))
            continue
        offline = {f"{i}.{e}": OFFLINE_ADDRESS for i, e in spec.placeholders()}
        try:
            device = factory(name, fill(spec.address, offline), **spec.options)
        except ValidationError as exc:
            for error in exc.errors():
                loc = tuple(error["loc"])
                message = error["msg"].removeprefix("Value error, ")
                if error["type"] == "extra_forbidden":
                    message = f"unknown option {loc[-1]!r}"
                problems.append(((name, "options", *loc), f"{message} (driver {spec.driver})"))
            continue
        except (ValueError, TypeError) as exc:
            problems.append(((name, "options"), f"{spec.driver}: {exc}"))
            continue
        except Exception as exc:  # a driver that does I/O while building breaks the contract: say so
            problems.append(
                ((name,), f"{spec.driver} failed to build the device offline: {type(exc).__name__}: {exc}")
            )
            continue
        if isinstance(device, Destroyable):
            device.destroy()
    return problems


def simulated_endpoints(lab_file: Path) -> set[str]:
    """The ``instrument.endpoint`` names a simulated lab file serves, from ``python -m simulators endpoints``
    (which checks the file too); raises ValueError with the simulators' own message when it is bad."""
    done = subprocess.run(
        [sys.executable, "-m", "simulators", "endpoints", str(lab_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise ValueError(
            (done.stderr or done.stdout).strip().removeprefix("error: ") or f"exit {done.returncode}"
        )
    return {line.strip() for line in done.stdout.splitlines() if "." in line}


def check_placeholders(instruments: Mapping[str, Instrument], lab_file: Path) -> list[Problem]:
    """Every '{instrument.endpoint}' in an address names an endpoint of the simulated lab."""
    try:
        served = simulated_endpoints(lab_file)
    except ValueError as exc:
        return [((), f"the simulated lab {lab_file} is not valid: {exc}")]
    problems: list[Problem] = []
    for name, spec in instruments.items():
        for instrument, endpoint in spec.placeholders():
            if f"{instrument}.{endpoint}" not in served:
                offered = sorted(e for e in served if e.startswith(f"{instrument}."))
                have = (
                    f"{instrument} serves {', '.join(offered)}"
                    if offered
                    else f"it has {', '.join(sorted({e.split('.')[0] for e in served})) or 'no instruments'}"
                )
                problems.append(
                    (
                        (name, "address"),
                        f"'{{{instrument}.{endpoint}}}' is not served by {lab_file.name}: {have}",
                    )
                )
    return problems
