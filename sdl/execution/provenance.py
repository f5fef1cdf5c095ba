"""Where an experiment's result came from, captured automatically for every experiment.

An experiment's provenance is one JSON object stored beside it (``sdl export`` carries it):

* ``software``: sdl's version, Python's, and the versions of the packages a result depends on;
* ``campaign``: the sha256 of the campaign file as submitted, the git commit of its folder when it is a
  git work tree (and whether it had uncommitted changes), and who submitted it;
* ``lab``: the sha256 of the lab description (the campaign's ``lab:`` or the lab service's lab file) and of
  the simulated lab file when there is one;
* ``instruments``: for each instrument the experiment used, its driver, the driver's version, the address
  and the identity the instrument reported over its own protocol (model, serial number, firmware) — read by
  the device's ``identity()`` once per connection (see docs/drivers.md);
* ``host`` and ``workcell``: where it ran.

The optimizer's decision, the transitions' timestamps and the outcome (failure reason and fault kind) are
already columns of the record; the exports put them beside this object.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The packages whose versions can change a result or how it was recorded.
KEY_PACKAGES = (
    "bluesky", "ophyd", "event-model", "numpy", "scipy", "scikit-learn", "scikit-optimize", "pydantic",
    "pyserial", "pyzmq", "pint",
)  # fmt: skip
PROVENANCE_VERSION = 1


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@cache
def software() -> dict[str, Any]:
    """sdl's, Python's and the key packages' versions (they do not change while a process runs)."""
    return {
        "sdl": _version("sdl"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
        "packages": {name: _version(name) for name in KEY_PACKAGES},
    }


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def git_state(folder: Path | str | None) -> dict[str, Any] | None:
    """The commit checked out in ``folder`` and whether its work tree differs (None: not in git)."""
    if folder is None or not Path(folder).is_dir():
        return None

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return {"commit": commit, "dirty": bool(status), "folder": str(folder)}


def campaign_provenance(
    source_text: str | None, base_dir: str | Path | None, submitted_by: str | None
) -> dict[str, Any]:
    return {
        "file_sha256": sha256_text(source_text) if source_text is not None else None,
        "git": git_state(base_dir),
        "submitted_by": submitted_by,
    }


def lab_provenance(spec: Any, simulated: Path | None = None, name: str | None = None) -> dict[str, Any]:
    """The lab description's hash (its validated content, so layout and comments do not count) and the
    simulated lab file's, when there is one."""
    dumped = spec.model_dump(mode="json") if hasattr(spec, "model_dump") else spec
    return {
        "name": name,
        "sha256": sha256_text(json.dumps(dumped, sort_keys=True, separators=(",", ":"))),
        "simulated_file": str(simulated) if simulated is not None else None,
        "simulated_file_sha256": sha256_file(simulated) if simulated is not None else None,
    }


@cache
def driver_version(driver: str) -> str | None:
    """The version of the distribution that provides a driver (an entry-point name or 'module:factory')."""
    for entry in metadata.entry_points(group="sdl.drivers"):
        if driver in (entry.name, entry.value):
            return entry.dist.version if entry.dist is not None else None
    if ":" not in driver:
        return None
    module = driver.split(":", 1)[0]
    module_object = sys.modules.get(module)
    declared = getattr(module_object, "__version__", None)
    if isinstance(declared, str):
        return declared
    top = module.split(".", 1)[0]
    for distribution in _packages_distributions().get(top, []):
        found = _version(distribution)
        if found is not None:
            return found
    return None


@cache
def _packages_distributions() -> Mapping[str, list[str]]:
    # Scans every installed distribution's file list (about a second on a loaded machine): once per process.
    return metadata.packages_distributions()


def experiment_provenance(
    *,
    campaign: Mapping[str, Any],
    lab: Mapping[str, Any],
    instruments: Mapping[str, Any],
    workcell: str | None = None,
) -> dict[str, Any]:
    return {
        "version": PROVENANCE_VERSION,
        "software": software(),
        "campaign": dict(campaign),
        "lab": dict(lab),
        "instruments": dict(instruments),
        "host": socket.gethostname(),
        "workcell": workcell,
    }


class ProvenanceSource:
    """The provenance of the experiments one process runs for one campaign: the campaign's and the lab's
    parts are fixed, the instruments' are read from ``instruments`` (an
    :class:`sdl.execution.instruments.Instruments`) each time, since an on-demand instrument is identified
    only once a plan has leased it."""

    def __init__(
        self,
        campaign: Mapping[str, Any],
        lab: Mapping[str, Any],
        instruments: Any = None,
        workcell: str | None = None,
    ) -> None:
        self.campaign = dict(campaign)
        self.lab = dict(lab)
        self.instruments = instruments
        self.workcell = workcell

    def of(self, names: Any = None) -> dict[str, Any]:
        """Provenance naming the instruments ``names`` (default: every instrument known here)."""
        described: dict[str, Any] = {}
        if self.instruments is not None:
            described = self.instruments.describe(self.instruments.specs if names is None else names)
        return experiment_provenance(
            campaign=self.campaign, lab=self.lab, instruments=described, workcell=self.workcell
        )
