"""The lab service, measured end to end: throughput and overhead per experiment, workcell utilization,
memory over 10,000 experiments, API latency under load, asynchronous workcells against a sequential
run, and the e-stop's latency under a hostile flood, all through `sdl daemon` as a subprocess and its
public API.

    python benchmarks/daemon.py                 # everything (about half an hour on 2 cores)
    python benchmarks/daemon.py --quick         # smaller runs (about 2 minutes)
    python benchmarks/daemon.py --only memory   # one section: throughput, utilization, memory, latency,
                                                # async, estop

Baselines are measured in the same process: the store's own cost per experiment (the same transactions,
in-process), and `sdl run`'s in-process loop for throughput; the e-stop's own latency on a quiet service for
the e-stop block. Results are written into benchmarks/README.md (the e-stop block by every run that measures
it, `--only estop` included; the others by a run of every section).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(ROOT)]

from _hostile import Flood  # noqa: E402
from _problems import make_problems  # noqa: E402

from sdl.api import models as m  # noqa: E402
from sdl.api.models import ApiError  # noqa: E402
from sdl.loop.foreground import run_campaign  # noqa: E402
from sdl.loop.lifecycle import start_campaign  # noqa: E402
from sdl.spec.loading import load_campaign  # noqa: E402
from sdl.spec.status import ExperimentStatus  # noqa: E402
from sdl.store import Decision, Finish, Store  # noqa: E402
from sdl.testing import LabServiceProcess, wait_for  # noqa: E402

PROBLEMS = make_problems()


def lab(directory: Path, workcells: int) -> Path:
    path = directory / f"lab-{workcells}.yaml"
    cells = "".join(f"  w{i + 1}: {{}}\n" for i in range(workcells))
    path.write_text(f"name: bench-{workcells}\nworkcells:\n{cells}")
    return path


def campaign(
    directory: Path,
    name: str,
    budget: int,
    function: str,
    options: dict[str, Any],
    *,
    optimizer: str = "random",
    space: str = "x",
    seed: int = 0,
) -> Path:
    if space == "x":
        parameters = (
            "  - {name: x, type: real, low: 0, high: 1}\n  - {name: y, type: real, low: 0, high: 1}\n"
        )
        objective = "loss"
    else:
        problem = PROBLEMS[space]
        parameters = "".join(
            f"  - {{name: {p.name}, type: real, low: {p.low}, high: {p.high}}}\n"
            for p in problem.space.parameters
        )
        objective = "value"
    path = directory / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nparameters:\n{parameters}objectives: [{{measurement: {objective}}}]\n"
        f"budget: {{max_experiments: {budget}, max_consecutive_failures: null}}\n"
        f"optimizer: {{kind: {optimizer}, seed: {seed}}}\n"
        f"procedure: {{function: '_daemon_procedures:{function}', options: {json.dumps(options)}}}\n"
    )
    return path


def service(directory: Path, workcells: int, name: str) -> LabServiceProcess:
    return LabServiceProcess(lab(directory, workcells), directory / name, pythonpath=[HERE, ROOT]).start()


def run_to_end(daemon: LabServiceProcess, path: Path, timeout: float = 3600) -> tuple[str, float]:
    with daemon.client() as client:
        started = time.perf_counter()
        campaign_id = client.submit(path).campaign_id
        wait_for(
            lambda: client.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.status != "running",
            timeout,
            "the campaign to end",
        )
        return campaign_id, time.perf_counter() - started


def history(daemon: LabServiceProcess, campaign_id: str) -> list[Any]:
    with Store(daemon.data_dir, read_only=True) as store:
        return store.experiments(campaign_id)


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def proposer_pid(daemon: LabServiceProcess) -> int:
    for pid in daemon.family():
        try:
            if b"sdl.daemon.proposer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- the store's own cost, in-process (the baseline for the split) -------------------------------------------


def store_cost(directory: Path, n: int) -> float:
    """Seconds per experiment of the store transactions the service and a worker make for one experiment:
    the proposal, lease and 'running' with their events; the outcome; the events announcing it."""
    with Store(directory / "store-only") as store:
        campaign_id = store.create_campaign(name="s", spec={}, seed=0, max_experiments=n)
        decision = Decision(model="random", acquisition=None, acquisition_value=None, seconds=0.0)
        started = time.perf_counter()
        for i in range(n):
            with store.transaction():
                e = store.add_proposal(campaign_id, {"x": i / n, "y": 0.5}, decision, workcell="w1")
                store.append_event("experiment.proposed", {"experiment_id": e.id}, campaign_id)
                store.start_experiment(e.id, assignments={}, workcell="w1", instruments=[])
                store.append_event("experiment.started", {"experiment_id": e.id}, campaign_id)
            store.finish_experiment(e.id, Finish(ExperimentStatus.DONE, {"loss": 0.1}, 0.1))
            with store.transaction():
                store.append_event("experiment.done", {"experiment_id": e.id}, campaign_id)
                store.append_event("campaign.progress", {"spent": i}, campaign_id)
        return (time.perf_counter() - started) / n


# -- sections ------------------------------------------------------------------------------------------------


def throughput(directory: Path, n: int) -> dict[str, Any]:
    path = campaign(directory, "instant", n, "instant", {})
    with Store(directory / "foreground") as store:
        campaign_id = start_campaign(store, load_campaign(path))
        started = time.perf_counter()
        run_campaign(store, campaign_id)
        foreground = n / (time.perf_counter() - started)
    store_s = store_cost(directory, n)
    rows = []
    for workcells in (1, 4):
        daemon = service(directory, workcells, f"throughput-{workcells}")
        try:
            campaign_id, _ = run_to_end(daemon, path)
            records = history(daemon, campaign_id)
        finally:
            daemon.stop()
            daemon.assert_nothing_left()
        # The optimizer's own time, as each decision recorded it (reading the history it is given included).
        proposal = statistics.mean(e.decision.seconds for e in records if e.decision)
        first = min(seconds(e.proposed_at) for e in records)
        last = max(seconds(e.finished_at) for e in records if e.finished_at)
        rate = len(records) / (last - first)
        per = 1 / rate
        rows.append(
            {
                "workcells": workcells,
                "rate": rate,
                "per_ms": per * 1e3,
                "proposal_ms": proposal * 1e3,
                "store_ms": store_s * 1e3,
                "dispatch_ms": (per - proposal - store_s) * 1e3,
            }
        )
    return {"n": n, "foreground_rate": foreground, "rows": rows}


def utilization(directory: Path, n: int, median: float) -> dict[str, Any]:
    daemon = service(directory, 4, "utilization")
    try:
        path = campaign(directory, "timed", n, "timed", {"median": median, "sigma": 0.5})
        campaign_id, _ = run_to_end(daemon, path)
        records = history(daemon, campaign_id)
    finally:
        daemon.stop()
        daemon.assert_nothing_left()
    work = sum(seconds(e.finished_at) - seconds(e.started_at) for e in records)
    makespan = max(seconds(e.finished_at) for e in records) - min(seconds(e.started_at) for e in records)
    return {
        "n": n,
        "median": median,
        "work": work,
        "makespan": makespan,
        "bound": work / 4,
        "utilization": work / 4 / makespan,
    }


def memory(directory: Path, n: int) -> dict[str, Any]:
    daemon = service(directory, 4, "memory")
    samples: list[tuple[int, int, int, int]] = []
    try:
        path = campaign(directory, "many", n, "instant", {})
        with daemon.client() as client:
            campaign_id = client.submit(path).campaign_id
            step = max(n // 10, 1)
            target = step
            while True:
                summary = client.call(m.ShowCampaign(campaign_id=campaign_id)).campaign
                if summary.spent >= target or summary.status != "running":
                    proposer = proposer_pid(daemon)
                    workers = sum(rss_kib(p) for p in daemon.family() - {daemon.pid, proposer})
                    samples.append((summary.spent, rss_kib(daemon.pid), rss_kib(proposer), workers))
                    target += step
                if summary.status != "running":
                    break
                time.sleep(0.2)
        store_bytes = (daemon.data_dir / "sdl.sqlite3").stat().st_size
    finally:
        daemon.stop()
        daemon.assert_nothing_left()
    first, last = samples[1] if len(samples) > 2 else samples[0], samples[-1]
    spent = max(last[0] - first[0], 1)
    return {
        "n": n,
        "samples": samples,
        "slope_kib": (last[1] - first[1]) / spent,
        "proposer_slope_kib": (last[2] - first[2]) / spent,
        "store_bytes": store_bytes,
    }


def latency(
    directory: Path, rate: float, duration: float, median: float, optimizer: str = "random"
) -> dict[str, Any]:
    daemon = service(directory, 2, f"latency-{median:g}-{optimizer}")
    times: list[float] = []
    try:
        path = campaign(
            directory, "busy", 100_000, "timed", {"median": median, "sigma": 0.5}, optimizer=optimizer
        )
        with daemon.client() as client:
            campaign_id = client.submit(path).campaign_id
            wait_for(lambda: client.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.spent > 5)
            requests = [
                m.Status(),
                m.ListCampaigns(),
                m.ListExperiments(campaign_id=campaign_id, limit=50),
                m.EventsSince(seq=0, limit=50),
                m.ShowCampaign(campaign_id=campaign_id),
            ]
            start = time.perf_counter()
            for i in range(int(rate * duration)):
                due = start + i / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                t = time.perf_counter()
                client.call(requests[i % len(requests)])
                times.append(time.perf_counter() - t)
            done = client.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.spent
            client.call(m.AbortCampaign(campaign_id=campaign_id))
    finally:
        daemon.stop()
        daemon.assert_nothing_left()
    times.sort()
    return {
        "rate": rate,
        "median": median,
        "optimizer": optimizer,
        "duration": duration,
        "n": len(times),
        "p50_ms": times[len(times) // 2] * 1e3,
        "p99_ms": times[int(len(times) * 0.99)] * 1e3,
        "max_ms": times[-1] * 1e3,
        "experiments": done,
    }


def asynchronous(directory: Path, problems: list[str], seeds: int, median: float) -> list[dict[str, Any]]:
    """One workcell against four, the same campaign: when does the 4-workcell run reach the sequential run's
    final regret, in experiments and in wall time?"""
    out = []
    for name in problems:
        problem = PROBLEMS[name]
        for seed in range(seeds):
            result: dict[str, Any] = {"problem": name, "seed": seed, "median": median}
            for workcells, budget in ((1, problem.budget), (4, int(problem.budget * 1.5))):
                daemon = service(directory, workcells, f"async-{name}-{seed}-{workcells}")
                try:
                    path = campaign(
                        directory,
                        f"{name}-{seed}-{workcells}",
                        budget,
                        "problem",
                        {"name": name, "median": median, "sigma": 0.5},
                        optimizer="bayesian",
                        space=name,
                        seed=seed,
                    )
                    campaign_id, _ = run_to_end(daemon, path)
                    records = [e for e in history(daemon, campaign_id) if e.status is ExperimentStatus.DONE]
                finally:
                    daemon.stop()
                    daemon.assert_nothing_left()
                records.sort(key=lambda e: e.finished_at)
                t0 = min(seconds(e.started_at) for e in records)
                best, curve = float("inf"), []
                for e in records:
                    best = min(best, e.objective)
                    curve.append((best - problem.optimum, seconds(e.finished_at) - t0))
                result[workcells] = curve
            target = result[1][-1][0]
            reached = next(((i + 1, t) for i, (r, t) in enumerate(result[4]) if r <= target), None)
            result["experiments_ratio"] = reached[0] / problem.budget if reached else None
            result["time_ratio"] = reached[1] / result[1][-1][1] if reached else None
            out.append(result)
            print(f"  {name} seed {seed}: {result['experiments_ratio']}, {result['time_ratio']}", flush=True)
    return out


#: The e-stop block's loads: nothing, each hostile kind alone (benchmarks/_hostile.py), all of them at once.
FLOODS = [[], ["oversized"], ["multipart"], ["frames"], ["parse"], ["garbage"], ["subscribers"],
          ["oversized", "multipart", "frames", "parse", "garbage", "subscribers"]]  # fmt: skip


def taken(client: Any, request: m.Request) -> bool:
    """Whether the request was taken (not answered `busy`: a flood may hold every request slot)."""
    try:
        client.call(request)
    except ApiError as exc:
        if exc.error.type != "busy":
            raise
        return False
    return True


def estop(directory: Path, rounds: int) -> list[dict[str, Any]]:
    """The e-stop's latency (an operator's `lab.estop` through our client, to its reply), and a viewer's
    `status`, on a two-workcell lab with its workers up, quiet and under each hostile flood."""
    daemon = service(directory, 2, "estop")
    rows = []
    rng = random.Random(0)
    owner = daemon.credentials()  # the floods get a key the service allows: without one they are refused
    keys = {"SDL_FLOOD_PUBLIC": owner.public.decode(), "SDL_FLOOD_SECRET": owner.secret.decode(),
            "SDL_FLOOD_SERVER": owner.server.decode()}  # fmt: skip
    try:
        with daemon.client(timeout=60) as client:
            events = client.call(m.Status()).events_address
            for kinds in FLOODS:
                stops: list[float] = []
                views: list[float] = []
                busy = 0
                with Flood(kinds, daemon.address, events, keys) as flood:  # under way when it enters
                    for i in range(rounds):
                        time.sleep(rng.uniform(0.05, 0.25))  # not in step with the flood
                        t = time.perf_counter()
                        client.call(m.EStop(reason=f"benchmark {i}"))
                        stops.append(time.perf_counter() - t)
                        wait_for(lambda: taken(client, m.ClearEStop()), 60, "the e-stop to clear")
                        t = time.perf_counter()
                        try:
                            client.call(m.Status())
                            views.append(time.perf_counter() - t)
                        except ApiError as exc:
                            if exc.error.type != "busy":
                                raise
                            busy += 1
                stops.sort()
                views.sort()
                rows.append(
                    {
                        "flood": " + ".join(kinds) or "none (quiet)",
                        "n": len(stops),
                        "p50_ms": stops[len(stops) // 2] * 1e3,
                        "p95_ms": stops[int(len(stops) * 0.95)] * 1e3,
                        "max_ms": stops[-1] * 1e3,
                        "status_p50_ms": views[len(views) // 2] * 1e3 if views else None,
                        "status_max_ms": views[-1] * 1e3 if views else None,
                        "busy": busy,
                        "rate": flood.rate,
                        "rss_mib": rss_kib(daemon.pid) / 1024,
                    }
                )
                print(f"  {rows[-1]}", flush=True)
    finally:
        daemon.stop()
        daemon.assert_nothing_left()
    return rows


# -- report --------------------------------------------------------------------------------------------------


def median_iqr(values: list[float]) -> str:
    if not values:
        return "–"
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"{statistics.median(values):.2f} [{q[0]:.2f}, {q[2]:.2f}]"


def machine() -> str:
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def estop_report(rows: list[dict[str, Any]], command: str, rounds: int, load: float) -> str:
    quiet = rows[0]["p50_ms"]
    lines = [
        f"Machine: {machine()}; load average {load:.1f} when the block started (other work on it)",
        "",
        f"Command: `{command}`",
        "",
        f"### E-stop latency under a hostile flood ({rounds} e-stops per row, two idle workcells)",
        "",
        "| flood | e-stop p50 ms | p95 ms | max ms | p50 × quiet | viewer's status p50 ms | max ms "
        "| status busy | flood replies/s | service RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        status = "– | –"
        if r["status_p50_ms"] is not None:
            status = f"{r['status_p50_ms']:.1f} | {r['status_max_ms']:.1f}"
        lines.append(
            f"| {r['flood']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['max_ms']:.1f} | "
            f"{r['p50_ms'] / quiet:.1f} | {status} | {r['busy']}/{r['n']} | {r['rate']:.0f} | "
            f"{r['rss_mib']:.0f} |"
        )
    lines.append("")
    return "\n".join(lines)


def report(results: dict[str, Any], command: str) -> str:
    lines = [
        f"Machine: {machine()}",
        "",
        f"Command: `{command}`",
        "",
    ]
    if "throughput" in results:
        t = results["throughput"]
        lines += [
            f"### Throughput and overhead ({t['n']} instant experiments, random proposer)",
            "",
            "| runner | experiments/s | ms per experiment | of which: proposal | store | dispatch etc. |",
            "|---|---|---|---|---|---|",
            f"| `sdl run`, in-process (baseline) | {t['foreground_rate']:.0f} | "
            f"{1e3 / t['foreground_rate']:.1f} | | | |",
        ]
        for r in t["rows"]:
            lines.append(
                f"| `sdl daemon`, {r['workcells']} workcell(s) | {r['rate']:.0f} | {r['per_ms']:.1f} | "
                f"{r['proposal_ms']:.2f} | {r['store_ms']:.2f} | {r['dispatch_ms']:.2f} |"
            )
        lines += [
            "",
            "Store: the same three transactions in-process (proposal, lease and 'running' with their events; "
            "the outcome; its events), each flushed to disk (synchronous=FULL).",
            "",
        ]
    if "utilization" in results:
        u = results["utilization"]
        lines += [
            f"### Utilization, 4 workcells, log-normal durations (median {u['median']} s, σ 0.5), {u['n']} "
            "experiments",
            "",
            "| total work s | bound (work / 4) s | makespan s | utilization |",
            "|---|---|---|---|",
            f"| {u['work']:.1f} | {u['bound']:.1f} | {u['makespan']:.1f} | {u['utilization']:.1%} |",
            "",
        ]
    if "memory" in results:
        mem = results["memory"]
        lines += [
            f"### Memory over {mem['n']} instant experiments (4 workcells)",
            "",
            "| experiments | service RSS MiB | proposer RSS MiB | workers RSS MiB (sum) |",
            "|---|---|---|---|",
        ]
        for spent, *kib in mem["samples"]:
            lines.append(f"| {spent} | " + " | ".join(f"{k / 1024:.1f}" for k in kib) + " |")
        lines += [
            "",
            f"Service growth: {mem['slope_kib']:.3f} KiB per experiment; proposer (the optimizer's process) "
            f"{mem['proposer_slope_kib']:.3f} KiB per experiment; store "
            f"{mem['store_bytes'] / mem['n']:.0f} bytes per experiment on disk.",
            "",
        ]
    if "latency" in results:
        paces = results["latency"]
        lines += [
            f"### API latency at {paces[0]['rate']:.0f} requests/s while a campaign runs (2 workcells)",
            "",
            "| experiments, median duration | optimizer | requests | p50 ms | p99 ms | max ms "
            "| experiments/s |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {lat['median']:g} s | {lat.get('optimizer', 'random')} | {lat['n']} | {lat['p50_ms']:.2f} | "
            f"{lat['p99_ms']:.2f} | "
            f"{lat['max_ms']:.1f} | {lat['experiments'] / lat['duration']:.1f} |"
            for lat in paces
        ]
        lines.append("")
    if "async" in results:
        lines += [
            "### Four workcells against one, through the real scheduler (log-normal durations, median "
            f"{results['async'][0]['median']} s, σ 0.5)",
            "",
            "| problem | seeds | experiments to reach the sequential final regret (× budget) "
            "| wall time (× sequential) | reached |",
            "|---|---|---|---|---|",
        ]
        by: dict[str, list[dict[str, Any]]] = {}
        for r in results["async"]:
            by.setdefault(r["problem"], []).append(r)
        for name, runs in by.items():
            ex = [r["experiments_ratio"] for r in runs if r["experiments_ratio"] is not None]
            tt = [r["time_ratio"] for r in runs if r["time_ratio"] is not None]
            lines.append(
                f"| {name} | {len(runs)} | {median_iqr(ex)} | {median_iqr(tt)} | {len(ex)}/{len(runs)} |"
            )
        lines.append("")
    return "\n".join(lines)


ESTOP_TEXT = """\
### E-stop under a hostile flood (`benchmarks/daemon.py --only estop`)

An operator's `lab.estop`, timed through our client from request to reply, then cleared; a viewer's `status`
after each. The client sends the e-stop to the service's e-stop socket (daemon.json's `estop`: a socket
and a 0MQ context of its own, `sdl/api/estop.py`), the status to the API socket. First on a quiet service,
then while other processes flood the API socket with raw 0MQ under a key the service allows (it admits no
client without one; `benchmarks/_hostile.py`): 15 MB requests 24 at a time (what the probe of issue 21
sent), messages of 8 × 15 MB frames, messages of 20,000 empty frames, requests of almost 1 MiB that must be
parsed to be refused (64 at a time over 8 connections: every request slot), malformed and numeric-edge
requests 64 at a time, and event subscribers that are cut and come back; then all of them at once. Every
flood runs on the same two cores as the service. "status busy": the viewer's requests answered `busy` while
the flood held every request slot (the e-stop never is). The block below is rewritten by every run that
measures it.

"""


def update_readme(text: str, start: str = "<!-- daemon-results:start -->", heading: str = "") -> None:
    readme = HERE / "README.md"
    end = start.replace(":start", ":end")
    content = readme.read_text()
    block = f"{start}\n{text}\n{end}"
    if start in content:
        before, rest = content.split(start, 1)
        content = before + block + rest.split(end, 1)[1]
    elif heading:
        content = content.rstrip() + "\n\n" + heading + block + "\n"
    else:
        content = (
            content.rstrip()
            + "\n\n## Lab service (`benchmarks/daemon.py`)\n\n"
            + textwrap.dedent(
                """\
            ```
            python benchmarks/daemon.py            # everything, about half an hour on 2 cores
            python benchmarks/daemon.py --quick    # smaller runs
            ```

            Everything goes through `sdl daemon` as a subprocess and its API. Per-experiment overhead is the
            service's time per experiment at full speed (instant procedures); "proposal" is the optimizer's
            own time as each decision recorded it (the random proposer reads the whole history to skip
            recipes already tried, so it grows with the record), "store" the same transactions measured
            in-process, the rest is dispatch (messages to and from the worker, events, scheduling). Of a
            running campaign the service keeps only a tally, the experiments still in flight or retryable,
            and the optimizer's input packed as numbers (8 bytes a number; tracemalloc: about 60 bytes per
            experiment here). Proposals are computed in the service's proposer process (decision 0004), which
            keeps each campaign's optimizer; a proposal's working set (the history read back as observations)
            grows with the record there, and the allocator keeps the pages it had. API latency is measured at
            two paces: 0.05 s experiments keep the service as busy as 25-40 experiments a second make it, a
            stress far beyond any lab; 0.5 s is still a fast lab, measured with the random proposer and with
            the default Bayesian optimizer (its proposals computed beside the requests).
            The block below is rewritten by every run.

            """
            )
            + block
            + "\n"
        )
    readme.write_text(content)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    everything = ("throughput", "utilization", "memory", "latency", "async", "estop")
    parser.add_argument("--only", choices=everything, nargs="*")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    sections = set(args.only or everything)
    quick = args.quick
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sdl-bench-") as tmp:
        directory = Path(tmp)
        if "throughput" in sections:
            print("throughput...", flush=True)
            results["throughput"] = throughput(directory, 200 if quick else 1000)
        if "utilization" in sections:
            print("utilization...", flush=True)
            results["utilization"] = utilization(directory, 60 if quick else 200, 0.2 if quick else 0.4)
        if "memory" in sections:
            print("memory...", flush=True)
            results["memory"] = memory(directory, 1000 if quick else 10_000)
        if "latency" in sections:
            print("latency...", flush=True)
            # 0.05 s experiments keep the service as busy as 30-40 experiments a second make it (a stress
            # far beyond any lab); 0.5 s is still a fast lab, and with the default (Bayesian) optimizer a
            # proposal's computation runs beside the requests too.
            results["latency"] = [
                latency(directory, 100.0, 5.0 if quick else 30.0, median, optimizer)
                for median, optimizer in ((0.05, "random"), (0.5, "random"), (0.5, "bayesian"))
            ]
        if "async" in sections:
            print("async...", flush=True)
            results["async"] = asynchronous(
                directory,
                ["branin"] if quick else ["branin", "hartmann6"],
                2 if quick else 5,
                # A real experiment takes minutes and a proposal tens of milliseconds; a 1 s median keeps
                # that proportion roughly (as the optimizer benchmark's async runs do) at bearable wall time.
                0.1 if quick else 1.0,
            )
        if "estop" in sections:
            print("estop...", flush=True)
            rounds = 10 if quick else 40
            load = os.getloadavg()[0]
            rows = estop(directory, rounds)
    command = "python benchmarks/daemon.py" + (" --quick" if quick else "")
    if "estop" in sections:
        only = " --only estop" if args.only else ""
        text = estop_report(rows, command + only, rounds, load)
        print(text)
        if not args.no_readme:
            update_readme(text, "<!-- daemon-estop:start -->", ESTOP_TEXT)
    if sections - {"estop"}:
        text = report(results, command)
        print(text)
        if not args.no_readme and not args.only:
            update_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
