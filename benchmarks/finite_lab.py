"""A finite lab kept running by a person: 300 experiments on the two-station bench, whose syringes hold 10 mL,
whose feeder holds one rack of vials and whose waste takes 60, with a scripted operator who answers every
task the lab service opens through the CLI.

The simulated bench runs in this process (``simulators.testing.run_lab``), the lab service as a subprocess
(`sdl daemon`). The operator polls ``sdl tasks`` every second; for each open task it does with the bench's
hands what a person would (a new syringe from a new bottle, a new rack, the waste emptied) and then ``sdl task
done ID [--amount ... --lot ...]``. At the end the record is held against the bench's own accounting.

Reports: experiments by status, those lost to an empty syringe or feeder (fault kind ``empty``) and those
misreported as a motor stall or a missed grip, tasks by stock, how long each task was open, and
whether every stock's figure in the record matches the bench (syringes within 1 uL, feeder and waste exactly).

    python benchmarks/finite_lab.py                      # 300 experiments, ~20 min on two cores
    python benchmarks/finite_lab.py --budget 60 --no-readme
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and its drivers.py would shadow the `drivers` package
# the simulators import.
HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != HERE), str(HERE)]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import io  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from datetime import datetime  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402
from _report import update_readme  # noqa: E402

from sdl.api import models as m  # noqa: E402
from sdl.cli import main as sdl  # noqa: E402
from sdl.spec.campaign import fill  # noqa: E402
from sdl.spec.status import ExperimentStatus  # noqa: E402
from sdl.store import Store  # noqa: E402
from sdl.testing import LabServiceProcess, wait_for  # noqa: E402
from simulators.hands import HandsClient  # noqa: E402
from simulators.testing import run_lab  # noqa: E402

ROOT = HERE.parent
STATIONS = ROOT / "experiments" / "two_stations"
MARK = ("<!-- finite-lab-results:start -->", "<!-- finite-lab-results:end -->")
SYRINGE_UL = 10_000.0
RACK = 48
WASTE = 60  # vials the waste container holds
DYES = ("yellow", "red", "blue")
FIRST_LOT = "sim-world-7"


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def bench(speed: float) -> dict[str, Any]:
    config = yaml.safe_load((STATIONS / "bench.yaml").read_text())
    config["speed"] = speed
    config["world"]["stations"]["feeder"].update(count=RACK, lot="V-1")
    config["world"]["stations"]["waste"].update(capacity_vials=WASTE)
    for dye in DYES:  # the bottles the syringes were first filled from, as the lab file records them
        config["world"]["stocks"][dye]["lot"] = FIRST_LOT
    return config


def lab_file(directory: Path, sim: Any) -> Path:
    lab = yaml.safe_load((STATIONS / "lab.yaml").read_text())
    lab.pop("simulated")
    lab.pop("speed")
    for spec in lab["instruments"].values():
        spec["address"] = fill(spec["address"], sim.urls)
    lab["inventory"] = copy.deepcopy(lab["inventory"])
    lab["inventory"]["arm"] = {
        "feeder": {"amount": RACK, "capacity": RACK, "unit": "vials", "lot": "V-1"},
        "waste": {"kind": "waste", "amount": 0, "capacity": WASTE, "unit": "vials"},
    }
    path = directory / "lab.yaml"
    path.write_text(yaml.safe_dump(lab, sort_keys=False))
    return path


def campaign_file(directory: Path, budget: int) -> Path:
    spec = yaml.safe_load((STATIONS / "campaign.yaml").read_text())
    spec["budget"] = {"max_experiments": budget, "max_wall_time": "6h"}  # no stop rule: the whole budget
    path = directory / "finite.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class Operator(threading.Thread):
    """A person at the bench: reads `sdl tasks`, acts with the hands, says `sdl task done`."""

    def __init__(self, data: Path, hands: HandsClient) -> None:
        super().__init__(daemon=True)
        self.data, self.hands = data, hands
        self.done = threading.Event()
        self.lots: Counter[str] = Counter()
        self.handled: list[int] = []
        self.errors: list[str] = []

    def cli(self, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = sdl(["--data-dir", str(self.data), *argv])
        return code, out.getvalue()

    def run(self) -> None:
        while not self.done.wait(1.0):
            code, out = self.cli("tasks")
            if code != 0:
                self.errors.append(out)
                continue
            for line in out.splitlines():
                cells = [c.strip() for c in line.split("│")[1:-1]]
                if cells and cells[0].isdigit() and int(cells[0]) not in self.handled:
                    self.serve(int(cells[0]), cells[2])

    def serve(self, task_id: int, title: str) -> None:
        verb, _, stock = title.partition(" ")
        instrument, _, consumable = stock.partition(".")
        if verb == "empty":  # the waste container: emptied, and the record told it holds nothing
            self.hands.empty_waste(consumable)
            code, out = self.cli("task", "done", str(task_id))
            if code != 0:
                self.errors.append(out)
            self.handled.append(task_id)
            return
        self.lots[stock] += 1
        lot = f"{consumable[:1].upper()}-{self.lots[stock] + 1}"
        if instrument == "arm":
            self.hands.load_feeder(consumable, RACK, lot=lot)
            amount = RACK
        else:  # a new syringe from the new bottle: lots are never mixed in one syringe
            self.hands.replace_syringe(f"{instrument}:{consumable}", SYRINGE_UL, lot=lot)
            amount = int(SYRINGE_UL)
        code, out = self.cli("task", "done", str(task_id), "--amount", str(amount), "--lot", lot)
        if code != 0:
            self.errors.append(out)
        self.handled.append(task_id)


def run(budget: int, speed: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, run_lab(bench(speed)) as sim:
        directory = Path(tmp)
        hands = HandsClient(sim.url("bench.hands"))
        data = directory / "data"
        started = time.monotonic()
        with LabServiceProcess(lab_file(directory, sim), data, pythonpath=[ROOT]).start() as service:
            operator = Operator(data, hands)
            operator.start()
            with service.client() as client:
                campaign_id = client.submit(campaign_file(directory, budget)).campaign_id
            summary = wait_for(
                lambda: (
                    (c := service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign).status != "running"
                    and c
                ),
                6 * 3600,
                "the campaign to end",
            )
            operator.done.set()
            operator.join(timeout=30)
            tasks = service.call(m.ListTasks(all=True, limit=10000)).tasks
            stocks = service.call(m.ListInventory()).stocks
        seconds = time.monotonic() - started
        truth = hands.state()
        vials = hands.vials()
        with Store(data, read_only=True) as store:
            experiments = store.experiments(campaign_id)
            changes = store.stock_changes(limit=1_000_000)
    return {
        "summary": summary,
        "seconds": seconds,
        "experiments": experiments,
        "tasks": tasks,
        "stocks": stocks,
        "truth": truth,
        "errors": operator.errors,
        "lots": lots_agree(changes, vials),
    }


def lots_agree(changes: list[Any], vials: list[dict[str, Any]]) -> tuple[int, int]:
    """Experiments whose recorded lots (each dye's, and the vial's) are those the bench's vial received, of
    those that took a vial. The arm's picks, in order, pair each experiment with its vial."""
    picks = [
        c.experiment_id
        for c in changes
        if (c.instrument, c.consumable, c.change) == ("arm", "feeder", "consume")
    ]
    by_experiment: dict[int, set[tuple[str, str | None]]] = {}
    for c in changes:
        if c.change == "consume" and c.experiment_id is not None and c.consumable != "waste":
            name = "vial" if c.consumable == "feeder" else c.consumable
            by_experiment.setdefault(c.experiment_id, set()).add((name, c.lot))
    agree = 0
    for experiment_id, vial in zip(picks, vials, strict=False):
        received = {
            (origin.partition("@")[0], origin.partition("@")[2] or None)
            for origin, volume in vial["sources"].items()
            if origin.partition("@")[0] in DYES and volume > 0.05
        } | {("vial", vial["lot"])}
        agree += received == by_experiment.get(experiment_id, set())
    return agree, len(picks)


def matches(stocks: list[m.Stock], truth: dict[str, Any]) -> list[tuple[str, float, float, bool]]:
    """Each stock: the record's figure, the bench's, and whether they agree."""
    pumps = {"yellow": "0", "red": "1", "blue": "2"}
    out = []
    for s in stocks:
        if s.kind == "waste":
            real = float(truth["waste"][s.consumable]["vials"])
            out.append((f"{s.instrument}.{s.consumable}", s.amount, real, s.amount == real))
        elif s.instrument == "arm":
            real = float(truth["feeders"][s.consumable]["count"])
            out.append((f"{s.instrument}.{s.consumable}", s.amount, real, s.amount == real))
        else:
            real = truth["instruments"][s.instrument]["syringes"][pumps[s.consumable]]["liquid_ul"]
            out.append((f"{s.instrument}.{s.consumable}", s.amount, real, abs(s.amount - real) <= 1.0))
    return out


def report(result: dict[str, Any], budget: int, speed: float) -> str:
    experiments = result["experiments"]
    counts = Counter(e.status.value for e in experiments)
    empty = [e for e in experiments if e.fault_kind == "empty"]
    stalls = [e for e in experiments if e.status is ExperimentStatus.FAULTED and e.fault_kind != "empty"]
    tasks = result["tasks"]
    waits = [stamp(t.closed_at) - stamp(t.opened_at) for t in tasks if t.closed_at]
    by_stock = Counter(f"{t.instrument}.{t.consumable}" for t in tasks)
    agreed = matches(result["stocks"], result["truth"])
    lines = [
        f"{budget} experiments on the two-station bench at {speed:g}x, 10 mL syringes and a {RACK}-vial "
        f"rack, a scripted operator answering `sdl tasks` through the CLI "
        f"({result['seconds'] / 60:.1f} min wall).",
        "",
        "| outcome | figure |",
        "|---|---|",
        f"| campaign | {result['summary'].status}: {result['summary'].stop_reason} |",
        f"| experiments by status | {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))} |",
        f"| lost to an empty syringe or feeder (fault `empty`) | {len(empty)} |",
        f"| vials that overflowed the waste | {result['truth']['waste']['waste']['overflowed_vials']} |",
        f"| faulted otherwise (a stall or missed grip misreported would be here) | {len(stalls)} |",
        f"| tasks for a person | {len(tasks)} ({', '.join(f'{k} {v}' for k, v in sorted(by_stock.items()))})"
        " |",
        f"| task open until done, median / max | {statistics.median(waits) if waits else 0:.1f} s / "
        f"{max(waits, default=0):.1f} s |",
        f"| operator's CLI errors | {len(result['errors'])} |",
        f"| stocks whose record matches the bench | {sum(a for *_, a in agreed)} of {len(agreed)} |",
        f"| experiments whose recorded lots are those their vial received | {result['lots'][0]} of "
        f"{result['lots'][1]} |",
        "",
        "| stock | record | bench |",
        "|---|---|---|",
        *(f"| {name} | {rec:g} | {real:g} |" for name, rec, real, _ in agreed),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--speed", type=float, default=200.0, help="simulated-time speed factor")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    parser.add_argument("--no-readme", action="store_true", help="print only")
    args = parser.parse_args()
    result = run(args.budget, args.speed)
    body = report(result, args.budget, args.speed)
    print(body)
    if result["errors"]:
        print("\n".join(result["errors"]), file=sys.stderr)
    if not args.no_readme:
        update_readme(args.readme, body, MARK)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
