"""Does the demo campaign ride through faults? `sdl run` on the simulated bench with injected faults.

Runs ``experiments/color_matching/campaign.yaml`` through ``sdl run`` (a subprocess, as a user
runs it) on copies of its lab file with a fault spec on every instrument, over several fault
seeds, next to a clean run measured in the same process. The stop rule is removed so every run
spends its full budget of 30. Prints, per condition and seed: real results, wall time against
the clean run, and the driver fault events (retries, reconnects, recoveries, give-ups) that
``sdl run -v`` logged.

    nice python benchmarks/faults.py                  # clean + 3 conditions x 3 seeds, ~10 minutes
    python benchmarks/faults.py --seeds 1 --conditions link-1pct
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGN = ROOT / "experiments" / "color_matching" / "campaign.yaml"
LAB = ROOT / "experiments" / "color_matching" / "lab.yaml"
#: The `sdl` command of the environment running this script.
SDL = str(Path(sys.executable).with_name("sdl"))


def link_faults(p: float) -> str:
    return ",".join(f"{name}%{p:g}" for name in ("drop", "garble", "partial", "silent"))


#: condition -> instrument -> fault spec
CONDITIONS: dict[str, dict[str, str]] = {
    "clean": {},
    "link-1pct": {name: link_faults(0.01) for name in ("dye_pumps", "water_pump", "arm", "spectrometer")},
    "link-5pct": {name: link_faults(0.05) for name in ("dye_pumps", "water_pump", "arm", "spectrometer")},
    "instrument-5pct": {
        "dye_pumps": "stall%0.05,reset%0.05",
        "water_pump": "plunger-overload%0.05,valve-overload%0.05",
        "arm": "protective-stop%0.05,miss%0.05",
        "spectrometer": "not-ready%0.05,saturate%0.05",
    },
    # The same without pump power cycles, the one fault above that no driver can absorb mid-dispense.
    "instrument-5pct-no-reset": {
        "dye_pumps": "stall%0.05",
        "water_pump": "plunger-overload%0.05,valve-overload%0.05",
        "arm": "protective-stop%0.05,miss%0.05",
        "spectrometer": "not-ready%0.05,saturate%0.05",
    },
}
LOCAL_REPLY_TIMEOUT_S = 0.1
TIMEOUT_OPTIONS = {"dye_pumps": "reply_timeout", "water_pump": "timeout", "arm": "reply_timeout",
                   "spectrometer": "timeout"}  # fmt: skip
#: The error type in a recorded failure: "dye_pumps_blue: PumpReset: dye_pumps: pump 02 ..." -> PumpReset.
FAILURE_TYPE = re.compile(r"^[^:]*:\s*([A-Z][A-Za-z]+):")
EVENT = re.compile(r"\bdrivers\.retry\b")
EVENT_KIND = re.compile(r": (retry|reconnect|recovered|gave_up) \(")


@dataclass
class Run:
    condition: str
    seed: int
    results: int
    budget: int
    wall_s: float
    events: Counter[str]
    status: str
    #: Failed experiments (the recipe was tried and the optimizer learns it) by the error type their
    #: failure names (e.g. PlungerOverload).
    failures: Counter[str]
    #: Experiments lost to an instrument fault (status "faulted": the recipe was not tried, no budget
    #: spent, the optimizer learns nothing), by error type.
    faulted: Counter[str]


def prepare(workdir: Path, condition: str, seed: int, budget: int) -> Path:
    """A campaign and a lab file in ``workdir``: the demo's, with faults, a seed and no early stop."""
    lab = yaml.safe_load(LAB.read_text())
    lab["faults_seed"] = seed
    for instrument, spec in CONDITIONS[condition].items():
        lab["instruments"][instrument]["faults"] = spec
    (workdir / "lab.yaml").write_text(yaml.safe_dump(lab, sort_keys=False))
    campaign = yaml.safe_load(CAMPAIGN.read_text())
    campaign["budget"].update(max_experiments=budget)
    campaign["budget"].pop("stop_when", None)
    campaign["lab"]["simulated"] = "lab.yaml"
    # The arm's documented recovery from a protective stop (wait out the 5 s rule, unlock, repeat
    # the move) is opt-in: the demo opts in, as an unattended lab would.
    campaign["lab"]["instruments"]["arm"]["options"]["auto_unlock"] = True
    # Reply timeouts scale with the instrument's latency: a simulator on this machine answers in
    # milliseconds, so a tenth of a second tells a lost reply from a slow one (the drivers' 0.5 s
    # defaults suit a serial line or a terminal server).
    for name, option in TIMEOUT_OPTIONS.items():
        campaign["lab"]["instruments"][name]["options"][option] = LOCAL_REPLY_TIMEOUT_S
    path = workdir / "campaign.yaml"
    path.write_text(yaml.safe_dump(campaign, sort_keys=False, allow_unicode=True))
    return path


def run_once(condition: str, seed: int, budget: int) -> Run:
    with tempfile.TemporaryDirectory(prefix=f"sdl-faults-{condition}-") as tmp:
        workdir = Path(tmp)
        campaign = prepare(workdir, condition, seed, budget)
        data = workdir / "data"
        started = time.monotonic()
        done = subprocess.run(
            [SDL, "run", str(campaign), "--data-dir", str(data), "-v"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        wall = time.monotonic() - started
        events = Counter(
            match.group(1)
            for line in done.stderr.splitlines()
            if EVENT.search(line) and (match := EVENT_KIND.search(line))
        )
        listed = subprocess.run(
            [SDL, "campaigns", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        ids = re.findall(r"^\W*(color-matching-[0-9a-f]+)", listed.stdout, re.MULTILINE)
        results = 0
        failures: Counter[str] = Counter()
        faulted: Counter[str] = Counter()
        if ids:
            exported = subprocess.run(
                [SDL, "export", ids[-1], "--data-dir", str(data)],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            rows = list(csv.DictReader(io.StringIO(exported.stdout)))
            results = sum(1 for row in rows if row.get("status") in ("done", "completed", "succeeded"))
            for row in rows:
                if row.get("failure"):
                    # "dye_pumps_blue: PumpReset: dye_pumps: pump 02 (status): ..." -> PumpReset
                    named = FAILURE_TYPE.search(row["failure"])
                    kind = named.group(1) if named else row["failure"][:40]
                    (faulted if row.get("status") == "faulted" else failures)[kind] += 1
        status = "exit 0" if done.returncode == 0 else f"exit {done.returncode}"
        if done.returncode != 0:
            stopped = re.search(r"stopped: (.*)", done.stderr)
            status += f" ({re.sub(r' [(]last: .*', '', stopped.group(1))[:90]})" if stopped else ""
        return Run(condition, seed, results, budget, wall, events, status, failures, faulted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3, help="fault seeds per condition (default 3)")
    parser.add_argument("--budget", type=int, default=30, help="experiments per run (default 30)")
    parser.add_argument(
        "--conditions",
        nargs="+",
        default=["link-1pct", "link-5pct", "instrument-5pct"],
        choices=[c for c in CONDITIONS if c != "clean"],
    )
    args = parser.parse_args(argv)
    clean = run_once("clean", 0, args.budget)
    runs = [clean]
    print(f"clean: {clean.results}/{clean.budget} in {clean.wall_s:.1f} s ({clean.status})", flush=True)
    for condition in args.conditions:
        for seed in range(1, args.seeds + 1):
            run = run_once(condition, seed, args.budget)
            runs.append(run)
            print(f"{condition} seed {seed}: {run.results}/{run.budget} in {run.wall_s:.1f} s", flush=True)
    print()
    print(
        "| condition (faults per reply or opportunity, every instrument) | fault seed | real results "
        "| wall time "
        "| vs clean | retries | reconnects | recovered | gave up | failed experiments "
        "| instrument-faulted experiments (not spent) | sdl run |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        ratio = run.wall_s / clean.wall_s
        seed = run.seed if run.condition != "clean" else "–"
        print(
            f"| {run.condition} | {seed} | {run.results}/{run.budget} | "
            f"{run.wall_s:.1f} s | {ratio:.2f}× | {run.events['retry']} | {run.events['reconnect']} | "
            f"{run.events['recovered']} | {run.events['gave_up']} | "
            f"{', '.join(f'{n} {k}' for k, n in run.failures.most_common()) or '–'} | "
            f"{', '.join(f'{n} {k}' for k, n in run.faulted.most_common()) or '–'} | {run.status} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
