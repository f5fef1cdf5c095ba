"""Run in a pytest of its own by tests/test_interrupted_run.py, which interrupts it: a test that starts a lab
service (which starts a worker and a proposer), writes their process ids to $SDL_FAMILY_FILE, and waits to be
interrupted. Not collected by the suite (its name does not start with test_)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from sdl.api import models as m
from sdl.testing import LabServiceProcess, wait_for


def test_waits_to_be_interrupted(tmp_path: Path) -> None:
    # A run started in the background by a shell without job control inherits SIGINT ignored, and Python
    # then keeps it ignored; this run is about what Ctrl-C does, so it takes Python's own handler back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: compute\nworkcells:\n  w1: {}\n")
    with LabServiceProcess(lab, tmp_path / "data").start() as service:
        wait_for(
            lambda: [w.state for w in service.call(m.ListWorkcells()).workcells] == ["idle"],
            what="the worker to start",
        )
        family = Path(os.environ["SDL_FAMILY_FILE"])
        written = family.with_suffix(".part")
        written.write_text(json.dumps(sorted(service.family())))
        os.replace(written, family)
        while True:
            signal.pause()
