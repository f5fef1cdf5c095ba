"""Bring up the lab a campaign uses: the simulated lab (if any), then one ophyd device per instrument.

Simulator contract: ``python -m simulators lab FILE --speed S`` prints one line per endpoint,
``<instrument>.<endpoint> <url>``, before anything else, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bluesky.protocols import HasName

from sdl.execution.instruments import Instruments, InstrumentUnavailable
from sdl.spec.campaign import Lab, fill

log = logging.getLogger(__name__)


class LabError(RuntimeError):
    """The lab could not be brought up (simulator did not start, a driver could not connect...)."""


def simulator_command(lab_file: Path, speed: float | None, faults_seed: int | None = None) -> list[str]:
    """``python -m simulators lab FILE``; ``faults_seed`` seeds its fault injection unless the lab file
    sets its own (so a rerun with another seed meets other faults, and the same seed the same ones)."""
    # --exit-with-parent: the simulator runs in its own session, so if sdl is killed outright
    # (kill -9, OOM) nothing else would stop it, and it would hold its ports.
    command = [sys.executable, "-m", "simulators", "lab", str(lab_file), "--exit-with-parent"]
    if speed is not None:
        command += ["--speed", f"{speed:g}"]
    if faults_seed is not None and not _sets_faults_seed(lab_file):
        command += ["--faults-seed", str(abs(faults_seed))]
    return command


def _sets_faults_seed(lab_file: Path) -> bool:
    import yaml

    try:
        data = yaml.safe_load(lab_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and data.get("faults_seed") is not None


class SimulatedLab:
    """The simulator subprocess: started, read for its endpoints, stopped with SIGTERM then SIGKILL."""

    def __init__(self, command: Sequence[str], *, grace: float = 5.0) -> None:
        self.command = list(command)
        self.grace = grace
        self.endpoints: dict[str, str] = {}
        self._process: subprocess.Popen[str] | None = None
        # A file, not a pipe: nobody reads stderr while things go well, and a pipe could fill up.
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None

    def start(self, needed: set[str], timeout: float) -> dict[str, str]:
        """Start the simulator and wait until every ``instrument.endpoint`` in ``needed`` is announced."""
        log.info("starting simulated lab: %s", " ".join(self.command))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # Own session: the operator's Ctrl-C reaches sdl only, which must still talk to the simulated
        # instruments to stop them before the simulator goes away.
        self._process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name="sdl-simulator-stdout", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not needed <= set(self.endpoints):
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=remaining) if remaining > 0 else None
                ended = line is None
            except queue.Empty:
                line, ended = None, False
            if line is None:
                if ended:  # stdout closed: the simulator is exiting
                    try:
                        code = self._process.wait(self.grace)
                        why = f"exited (code {code})"
                    except subprocess.TimeoutExpired:
                        why = "closed its output"
                else:
                    why = f"did not announce them within {timeout:g} s"
                missing = ", ".join(sorted(needed - set(self.endpoints)))
                stderr = self.stderr_text() or "(empty)"
                self.stop()
                raise LabError(
                    f"simulated lab {why} before announcing endpoint(s) {missing}; "
                    f"command: {' '.join(self.command)}; stderr:\n{stderr}"
                )
            parts = line.split()
            if len(parts) == 2 and "." in parts[0]:
                self.endpoints[parts[0]] = parts[1]
                log.debug("simulated endpoint %s at %s", parts[0], parts[1])
        return dict(self.endpoints)

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:  # drain to the end so the simulator never blocks on a full pipe
            self._lines.put(line.strip())
        self._lines.put(None)

    def stderr_text(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()[-4000:].strip()

    def stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.grace)
            except subprocess.TimeoutExpired:
                log.warning("simulated lab ignored SIGTERM for %g s; killing it", self.grace)
                process.kill()
                process.wait()
        if self._reader is not None:
            self._reader.join(timeout=self.grace)
        if process is not None and process.stdout is not None:
            process.stdout.close()
        self._stderr.close()


class LabSession:
    """Context manager holding a campaign's lab for `sdl run`: the simulator (if any), then every
    instrument built and connected; ``devices`` by instrument name, and their ``assignments``."""

    def __init__(
        self,
        lab: Lab,
        base_dir: Path | None = None,
        *,
        command: Sequence[str] | None = None,
        faults_seed: int | None = None,
    ) -> None:
        self.lab = lab
        self.base_dir = base_dir
        self.command = command
        self.faults_seed = faults_seed
        self.devices: dict[str, HasName] = {}
        self.assignments: dict[str, dict[str, Any]] = {}
        self.simulator: SimulatedLab | None = None
        self.instruments: Instruments | None = None

    def __enter__(self) -> LabSession:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        endpoints = self._start_simulator()
        addresses = {name: fill(i.address, endpoints) for name, i in self.lab.instruments.items()}
        self.instruments = Instruments(self.lab.instruments, addresses, base_dir=self.base_dir)
        try:
            self.devices = self.instruments.connect(self.lab.instruments)
        except InstrumentUnavailable as exc:
            spec = self.lab.instruments[exc.instrument]
            cause = exc.__cause__.__cause__ or exc.__cause__ if exc.__cause__ else exc
            raise LabError(
                f"instrument {exc.instrument!r} ({spec.driver}) at {addresses[exc.instrument]}: {cause}"
            ) from exc
        self.assignments = {
            name: {"driver": spec.driver, "address": addresses[name]}
            for name, spec in self.lab.instruments.items()
        }

    def _start_simulator(self) -> dict[str, str]:
        if self.lab.simulated is None:
            return {}
        needed = {f"{i}.{e}" for inst in self.lab.instruments.values() for i, e in inst.placeholders()}
        command = self.command or simulator_command(self.lab.simulated, self.lab.speed, self.faults_seed)
        self.simulator = SimulatedLab(command)
        return self.simulator.start(needed, self.lab.startup_timeout)

    def close(self) -> None:
        if self.instruments is not None:
            self.instruments.close()
            self.instruments = None
        self.devices.clear()
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None
