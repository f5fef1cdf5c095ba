"""Failover: `kill -9` of the lab service while a standby (`sdl daemon --standby`) waits, ten times in one
campaign on the two-station bench, for a standby on the same machine and for one on another host.

"Another host" is a UTS namespace with a host name of its own (`unshare --uts`, root): its claims name that
host, so it cannot see the service's process die and must wait for the claim's heartbeat to go stale (the
default 10 s), as a standby on a second PC does. The killed service comes back as the next standby.

Each takeover is timed from the SIGKILL to the standby answering `Status` through the API (it serves the lab),
and to the next experiment running. At the end the campaign's record is checked as the recovery tests check
it: nothing done was lost, no recipe ran twice, every experiment final, nothing left leased.

    python benchmarks/failover.py                 # both kinds, 10 takeovers each, ~8 min on two cores
    python benchmarks/failover.py --kinds same --takeovers 3 --no-readme
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and its drivers.py would shadow the `drivers` package
# the simulators import.
HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != HERE), str(HERE)]

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402
from _report import update_readme  # noqa: E402

from sdl.api import models as m  # noqa: E402
from sdl.api.client import Client  # noqa: E402
from sdl.spec.status import ExperimentStatus  # noqa: E402
from sdl.store import STALE_AFTER_S, Store  # noqa: E402
from sdl.testing import LabServiceProcess, wait_for  # noqa: E402

ROOT = HERE.parent
LAB = ROOT / "experiments" / "two_stations" / "lab.yaml"
MARK = ("<!-- failover-results:start -->", "<!-- failover-results:end -->")
OTHER_HOST = ["unshare", "--uts", "sh", "-c", 'hostname standby-host && exec "$@"', "sh"]


def campaign(directory: Path, budget: int) -> Path:
    spec = yaml.safe_load((ROOT / "experiments" / "color_matching" / "campaign.yaml").read_text())
    spec["budget"] = {"max_experiments": budget, "max_consecutive_failures": None}
    spec.pop("lab")
    spec["requires"] = {"devices": ["dye_pumps", "water_pump", "arm", "spectrometer"]}
    path = directory / "colour.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def slower_lab(directory: Path, speed: float) -> Path:
    """The two-station lab at ``speed``x real time: experiments long enough for ten takeovers in one
    campaign."""
    lab = yaml.safe_load(LAB.read_text())
    lab["speed"] = speed
    lab["simulated"] = str(LAB.parent / lab["simulated"])
    path = directory / "lab.yaml"
    path.write_text(yaml.safe_dump(lab, sort_keys=False))
    return path


def answers(service: LabServiceProcess) -> bool:
    try:
        if not service.serving():
            return False
        with Client(service.address, data_dir=service.data_dir, timeout=1.0) as client:
            return client.call(m.Status()).pid == service.pid
    except Exception:
        return False


def running_since(data_dir: Path, campaign_id: str, since: float) -> bool:
    with Store(data_dir, read_only=True) as store:
        return any(
            e.started_at is not None and _unix(e.started_at) > since for e in store.experiments(campaign_id)
        )


def _unix(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def standing_by(data_dir: Path, pid: int) -> bool:
    with Store(data_dir, read_only=True) as store:
        return any(s["pid"] == pid for s in store.standbys(stale_after=STALE_AFTER_S))


def run(kind: str, takeovers: int, budget: int, speed: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="sdl-failover-") as tmp:
        directory = Path(tmp)
        lab, data = slower_lab(directory, speed), directory / "data"
        wrap = OTHER_HOST if kind == "another host" else []
        env = {"PYTHONPATH": str(ROOT)}
        pair = [
            LabServiceProcess(lab, data, env=env, name="one"),
            LabServiceProcess(lab, data, "--standby", env=env, name="two", wrap=wrap),
        ]
        serving, waiting = pair
        serving.start()
        waiting.start(wait=False)
        wait_for(lambda: standing_by(data, waiting.pid), 90, "the standby")
        with serving.client() as client:
            campaign_id = client.submit(campaign(directory, budget)).campaign_id
        serve_s: list[float] = []
        run_s: list[float] = []
        done_before: set[int] = set()
        try:
            for n in range(takeovers):
                wait_for(lambda: running_since(data, campaign_id, 0), 120, "an experiment running")
                time.sleep(rng.uniform(0.0, 3.0))  # a random moment of the experiment in flight
                with Store(data, read_only=True) as store:
                    done_before |= {
                        e.id for e in store.experiments(campaign_id) if e.status is ExperimentStatus.DONE
                    }
                killed_at, wall = time.monotonic(), time.time()
                serving.kill9()
                wait_for(lambda w=waiting: answers(w), 120, f"takeover {n + 1}")
                serve_s.append(time.monotonic() - killed_at)
                wait_for(lambda t=wall: running_since(data, campaign_id, t), 120, "the next experiment")
                run_s.append(time.monotonic() - killed_at)
                print(f"{kind}: takeover {n + 1}: serving after {serve_s[-1]:.1f} s, running after "
                      f"{run_s[-1]:.1f} s", flush=True)  # fmt: skip
                serving, waiting = waiting, serving
                waiting.extra = ("--standby",)
                waiting.wrap = wrap if waiting is pair[1] else []
                waiting.start(wait=False)
                wait_for(lambda w=waiting: standing_by(data, w.pid), 90, "the next standby")
            summary = wait_for(
                lambda: (
                    (c := serving.call(m.ShowCampaign(campaign_id=campaign_id)).campaign).status != "running"
                    and c
                ),
                1800,
                "the campaign to finish",
            )
            serving.stop()
            waiting.stop()
        finally:
            for process in pair:
                if process.process is not None and process.process.poll() is None:
                    process.kill9()
        with Store(data, read_only=True) as store:
            history = store.experiments(campaign_id)
            done = [e for e in history if e.status is ExperimentStatus.DONE]
            recipes = [tuple(sorted(e.recipe.items())) for e in done]
            return {
                "kind": kind,
                "serve": serve_s,
                "run": run_s,
                "status": summary.status,
                "spent": summary.spent,
                "budget": budget,
                "lost": len(done_before - {e.id for e in done}),
                "twice": len(recipes) - len(set(recipes)),
                "final": all(e.status.is_final for e in history),
                "interrupted": sum(e.status is ExperimentStatus.INTERRUPTED for e in history),
                "leased": len(store.leases()),
            }


def table(results: list[dict[str, Any]], command: str) -> str:
    rows = [
        "| standby | takeovers | serving after kill -9: median (max) | next experiment running: median (max) "
        "| campaign | done lost | ran twice | interrupted (on record) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['kind']} | {len(r['serve'])} "
            f"| {statistics.median(r['serve']):.1f} s ({max(r['serve']):.1f} s) "
            f"| {statistics.median(r['run']):.1f} s ({max(r['run']):.1f} s) "
            f"| {r['status']}, {r['spent']}/{r['budget']} | {r['lost']} | {r['twice']} | {r['interrupted']} |"
        )
    where = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return (
        "\n".join(rows)
        + f"\n\nClaim stale limit {STALE_AFTER_S:g} s. Machine: {where}.\n\nCommand: `{command}`"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kinds", default="same,other", help="same (machine), other (host): comma-separated")
    parser.add_argument("--takeovers", type=int, default=10)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument(
        "--speed", type=float, default=20.0, help="the bench's speed-up (the lab file's: 200)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    kinds = {"same": "same machine", "other": "another host"}
    chosen = [kinds[k] for k in args.kinds.split(",")]
    if "another host" in chosen and (os.geteuid() != 0 or shutil.which("unshare") is None):
        parser.error("a standby on another host name needs root and unshare (util-linux)")
    results = [run(kind, args.takeovers, args.budget, args.speed, args.seed) for kind in chosen]
    text = table(results, "python benchmarks/failover.py " + " ".join(sys.argv[1:]))
    print(text)
    if not args.no_readme:
        update_readme(HERE / "README.md", text, MARK)
    return 0


if __name__ == "__main__":
    sys.exit(main())
