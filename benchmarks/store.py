"""The store on SQLite against PostgreSQL, same workload, same machine: how fast each records experiments
and reads them back.

    python benchmarks/store.py              # about five minutes on 2 cores
    python benchmarks/store.py --quick      # smaller runs, no README
    python benchmarks/store.py --store postgresql://USER@HOST:PORT/DB   # an existing server (a new, empty DB)

Without --store it starts a throwaway PostgreSQL server (tests/postgres_server.py: Debian's initdb and pg_ctl)
with durable commits (fsync on, as SQLite's synchronous=FULL here), on loopback. Workloads, each repeated
round-robin over the backends so a change in the machine's load falls on both alike (median of the rounds):

* experiment lifecycle: the transactions the lab service and a worker commit for one experiment (proposal,
  lease and 'running' with their events; the outcome; the events announcing it), as benchmarks/daemon.py's
  store baseline;
* journal lines: one committed line each (what a worker writes before every command it sends);
* reading a campaign: every experiment of a 1,000-experiment campaign with its decision (`sdl show`, the
  optimizer's history);
* reading events: pages of 1,000 after a sequence number (a subscriber catching up).

Prints the table and writes its section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(ROOT / "tests"), str(ROOT)]

from _report import update_readme  # noqa: E402
from postgres_server import PostgresServer, why_not  # noqa: E402

from sdl.spec.status import ExperimentStatus  # noqa: E402
from sdl.store import Decision, Finish, Store, bind_store  # noqa: E402

MARK = ("<!-- store-results:start -->", "<!-- store-results:end -->")
DECISION = Decision(model="random", acquisition=None, acquisition_value=None, seconds=0.0)


def lifecycle(store: Store, campaign_id: str, n: int) -> float:
    """Experiments recorded per second through their whole lifecycle."""
    started = time.perf_counter()
    for i in range(n):
        with store.transaction():
            e = store.add_proposal(campaign_id, {"x": i / n, "y": 0.5}, DECISION, workcell="w1")
            store.append_event("experiment.proposed", {"experiment_id": e.id}, campaign_id)
            store.start_experiment(e.id, assignments={}, workcell="w1", instruments=["pump"])
            store.append_event("experiment.started", {"experiment_id": e.id}, campaign_id)
        store.finish_experiment(e.id, Finish(ExperimentStatus.DONE, {"loss": 0.1}, 0.1))
        with store.transaction():
            store.append_event("experiment.done", {"experiment_id": e.id}, campaign_id)
            store.append_event("campaign.progress", {"spent": i}, campaign_id)
    return n / (time.perf_counter() - started)


def journal(store: Store, experiment_id: int, n: int) -> float:
    """Journal lines committed per second, one transaction each."""
    started = time.perf_counter()
    for i in range(n):
        store.journal_entry(experiment_id, "sent", "set", instrument="pump", device="pump", detail=str(i))
    return n / (time.perf_counter() - started)


def read_campaign(store: Store, campaign_id: str, reps: int) -> float:
    """Milliseconds to read every experiment of the campaign."""
    started = time.perf_counter()
    for _ in range(reps):
        store.experiments(campaign_id)
    return (time.perf_counter() - started) / reps * 1000


def read_events(store: Store, reps: int) -> float:
    """Milliseconds to read a page of 1,000 events."""
    started = time.perf_counter()
    for i in range(reps):
        store.events_since(i * 10, limit=1000)
    return (time.perf_counter() - started) / reps * 1000


def measure(data_dir: Path, size: int, reps: int) -> dict[str, float]:
    with Store(data_dir) as store:
        campaign_id = store.create_campaign(name="bench", spec={}, seed=0, max_experiments=size)
        per_s = lifecycle(store, campaign_id, size)
        done = store.experiments(campaign_id)[-1].id
        lines = journal(store, done, size)
        return {
            "lifecycle": per_s,
            "journal": lines,
            "read_campaign": read_campaign(store, campaign_id, reps),
            "read_events": read_events(store, reps),
        }


ROWS: dict[str, tuple[str, str, bool]] = {
    # key: (label, unit, higher is better)
    "lifecycle": ("experiment lifecycle (3 commits)", "experiments/s", True),
    "journal": ("journal lines, one commit each", "lines/s", True),
    "read_campaign": ("read a campaign's experiments", "ms", False),
    "read_events": ("read a page of 1,000 events", "ms", False),
}


def table(results: dict[str, list[dict[str, float]]], size: int, rounds: int, where: str) -> str:
    def cell(backend: str, key: str, unit: str) -> str:
        values = [r[key] for r in results[backend]]
        spread = f" [{min(values):,.1f}–{max(values):,.1f}]" if len(values) > 1 else ""
        return f"{statistics.median(values):,.1f} {unit}{spread}"

    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), "
        f"Python {platform.python_version()}; "
        f"PostgreSQL: {where}; {size} experiments per round; median [min–max] of {rounds} rounds.",
        "",
        "| workload | SQLite | PostgreSQL | PostgreSQL / SQLite (medians) |",
        "|---|---|---|---|",
    ]
    for key, (label, unit, higher) in ROWS.items():
        sqlite = statistics.median(r[key] for r in results["sqlite"])
        pg = statistics.median(r[key] for r in results["postgresql"])
        ratio = pg / sqlite
        lines.append(
            f"| {label} | {cell('sqlite', key, unit)} | {cell('postgresql', key, unit)} | "
            f"×{ratio:.2f} ({'faster' if (ratio > 1) == higher else 'slower'}) |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs; leaves the README alone")
    parser.add_argument(
        "--store", metavar="URL", help="an existing, empty PostgreSQL database instead of a throwaway server"
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    size, reps, rounds = (200, 5, 1) if args.quick else (1000, 20, args.rounds)
    server: PostgresServer | None = None
    if args.store is None:
        if (reason := why_not()) is not None:
            parser.error(f"cannot start a PostgreSQL server: {reason}; give --store URL")
        server = PostgresServer(durable=True)
    where = "a local server on loopback, fsync on" if server else "given with --store"
    results: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgresql": []}
    try:
        with tempfile.TemporaryDirectory(prefix="sdl-store-bench-") as tmp:
            for r in range(rounds):
                for backend in ("sqlite", "postgresql"):
                    data_dir = Path(tmp) / f"{backend}-{r}"
                    if backend == "postgresql":
                        bind_store(data_dir, args.store if server is None else server.database())
                    results[backend].append(measure(data_dir, size, reps))
                    print(f"round {r + 1}/{rounds} {backend}: {results[backend][-1]}", file=sys.stderr)
    finally:
        if server is not None:
            server.stop()
    text = table(results, size, rounds, where)
    print(text)
    if not args.quick:
        update_readme(HERE / "README.md", text, MARK)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
