"""Does the demo campaign ride through faults? `sdl run` on the simulated bench with injected faults.

Runs ``experiments/color_matching/campaign.yaml`` through ``sdl run`` (a subprocess, as a user
runs it) on copies of its lab file with a fault spec on every instrument, over several fault
seeds, next to a clean run measured in the same process. The stop rule is removed so every run
spends its full budget of 30. Prints, per condition, seed and way of setting reply timeouts: real
results, wall time against the clean run with the same timeouts, and the driver fault events
(retries, reconnects, recoveries, give-ups) that ``sdl run -v`` logged.

Reply timeouts, three ways (``--timeouts``): ``adaptive`` — the drivers' defaults, which learn the
link's round trips; ``fixed-defaults`` — the same defaults held fixed (``min_reply_timeout`` set to
the reply timeout: how every driver waited before); ``hand-tuned`` — fixed at 0.1 s by hand.

    nice python benchmarks/faults.py                  # 3 timeouts x (clean + 2 conditions x 3 seeds), ~55 min
    python benchmarks/faults.py --seeds 1 --conditions link-1pct --timeouts adaptive
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and its drivers.py would shadow the
# `drivers` package whose default timeouts are read below.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import yaml  # noqa: E402

import drivers.cavro  # noqa: E402
import drivers.newera  # noqa: E402
import drivers.ocean  # noqa: E402
import drivers.ur  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGN = ROOT / "experiments" / "color_matching" / "campaign.yaml"
LAB = ROOT / "experiments" / "color_matching" / "lab.yaml"
#: The `sdl` command of the environment running this script.
SDL = str(Path(sys.executable).with_name("sdl"))


INSTRUMENTS = ("dye_pumps", "water_pump", "arm", "spectrometer")

#: condition -> instrument -> fault spec ("link%P": drop, garble, partial and silent, each at P)
CONDITIONS: dict[str, dict[str, str]] = {
    "clean": {},
    "link-1pct": {name: "link%0.01" for name in INSTRUMENTS},
    "link-5pct": {name: "link%0.05" for name in INSTRUMENTS},
    # Every fault each simulator has, at 5 % each (python -m simulators faults KIND).
    "instrument-5pct": {name: "instrument%0.05" for name in INSTRUMENTS},
    # The same without pump power cycles, the one fault above that no driver can absorb mid-dispense.
    "instrument-5pct-no-reset": {
        "dye_pumps": "stall%0.05",
        "water_pump": "instrument%0.05",
        "arm": "instrument%0.05",
        "spectrometer": "instrument%0.05",
    },
}
#: Each instrument's reply-timeout option and its driver's default.
TIMEOUT_OPTIONS = {
    "dye_pumps": ("reply_timeout", drivers.newera.Options.model_fields["reply_timeout"].default),
    "water_pump": ("timeout", drivers.cavro.Options.model_fields["timeout"].default),
    "arm": ("reply_timeout", drivers.ur.Options.model_fields["reply_timeout"].default),
    "spectrometer": ("timeout", drivers.ocean.Options.model_fields["timeout"].default),
}
HAND_TUNED_S = 0.1


def timeout_options(way: str, floor: float | None) -> dict[str, dict[str, float]]:
    """instrument -> driver options that set its reply timeouts ``way``."""
    if way == "adaptive":
        return {name: {"min_reply_timeout": floor} for name in TIMEOUT_OPTIONS} if floor else {}
    if way == "fixed-defaults":
        return {name: {"min_reply_timeout": default} for name, (_, default) in TIMEOUT_OPTIONS.items()}
    if way == "hand-tuned":
        # A simulator on this machine answers in milliseconds: a tenth of a second tells a lost reply
        # from a slow one (what this benchmark set by hand before timeouts learned the link).
        return {name: {option: HAND_TUNED_S, "min_reply_timeout": HAND_TUNED_S}
                for name, (option, _) in TIMEOUT_OPTIONS.items()}  # fmt: skip
    raise ValueError(way)


TIMEOUTS = ("adaptive", "fixed-defaults", "hand-tuned")
#: The error type in a recorded failure: "dye_pumps_blue: PumpReset: dye_pumps: pump 02 ..." -> PumpReset.
FAILURE_TYPE = re.compile(r"^[^:]*:\s*([A-Z][A-Za-z]+):")
EVENT = re.compile(r"\bdrivers\.retry\b")
EVENT_KIND = re.compile(r": (retry|reconnect|recovered|gave_up) \(")


@dataclass
class Run:
    condition: str
    seed: int
    timeouts: str
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


def prepare(
    workdir: Path, condition: str, seed: int, budget: int, timeouts: dict[str, dict[str, float]]
) -> Path:
    """A campaign and a lab file in ``workdir``: the demo's, with faults, a seed, the reply timeouts
    and no early stop."""
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
    for name, options in timeouts.items():
        campaign["lab"]["instruments"][name]["options"].update(options)
    path = workdir / "campaign.yaml"
    path.write_text(yaml.safe_dump(campaign, sort_keys=False, allow_unicode=True))
    return path


def run_once(condition: str, seed: int, budget: int, timeouts: str, floor: float | None = None) -> Run:
    with tempfile.TemporaryDirectory(prefix=f"sdl-faults-{condition}-") as tmp:
        workdir = Path(tmp)
        campaign = prepare(workdir, condition, seed, budget, timeout_options(timeouts, floor))
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
                    if row.get("status") != "faulted":
                        # A recipe failure under faults is worth reading in full: was it the recipe's?
                        print(f"  failed ({condition}, seed {seed}, {timeouts}): {row['failure'][:300]}",
                              file=sys.stderr, flush=True)  # fmt: skip
        status = "exit 0" if done.returncode == 0 else f"exit {done.returncode}"
        if done.returncode != 0:
            stopped = re.search(r"stopped: (.*)", done.stderr)
            status += f" ({re.sub(r' [(]last: .*', '', stopped.group(1))[:90]})" if stopped else ""
        return Run(condition, seed, timeouts, results, budget, wall, events, status, failures, faulted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3, help="fault seeds per condition (default 3)")
    parser.add_argument("--first-seed", type=int, default=1, help="the first fault seed (default 1)")
    parser.add_argument("--budget", type=int, default=30, help="experiments per run (default 30)")
    parser.add_argument(
        "--conditions",
        nargs="+",
        default=["link-1pct", "link-5pct"],
        choices=[c for c in CONDITIONS if c != "clean"],
    )
    parser.add_argument("--timeouts", nargs="+", default=list(TIMEOUTS), choices=TIMEOUTS)
    parser.add_argument(
        "--min-reply-timeout", type=float, default=None,
        help="floor of the adaptive timeouts, for choosing it on development seeds (default: the drivers')",
    )  # fmt: skip
    args = parser.parse_args(argv)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    runs: list[Run] = []
    clean: dict[str, Run] = {}
    for way in args.timeouts:
        clean[way] = run = run_once("clean", 0, args.budget, way, args.min_reply_timeout)
        runs.append(run)
        print(f"clean, {way}: {run.results}/{run.budget} in {run.wall_s:.1f} s ({run.status})", flush=True)
    for condition in args.conditions:
        for seed in seeds:
            for way in args.timeouts:
                run = run_once(condition, seed, args.budget, way, args.min_reply_timeout)
                runs.append(run)
                print(f"{condition} seed {seed}, {way}: {run.results}/{run.budget} in {run.wall_s:.1f} s",
                      flush=True)  # fmt: skip
    print()
    print(
        "| condition (faults per reply or opportunity, every instrument) | fault seed | reply timeouts "
        "| real results | wall time | vs clean (same timeouts) | retries | reconnects | recovered | gave up "
        "| failed experiments | instrument-faulted experiments (not spent) | sdl run |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        ratio = run.wall_s / clean[run.timeouts].wall_s
        seed = run.seed if run.condition != "clean" else "–"
        print(
            f"| {run.condition} | {seed} | {run.timeouts} | {run.results}/{run.budget} | "
            f"{run.wall_s:.1f} s | {ratio:.2f}× | {run.events['retry']} | {run.events['reconnect']} | "
            f"{run.events['recovered']} | {run.events['gave_up']} | "
            f"{', '.join(f'{n} {k}' for k, n in run.failures.most_common()) or '–'} | "
            f"{', '.join(f'{n} {k}' for k, n in run.faulted.most_common()) or '–'} | {run.status} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
