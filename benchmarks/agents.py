"""Workcells under an agent against workcells of the service's own, on SQLite and on PostgreSQL: throughput,
a remote workcell's extra time per experiment, and the API's latency meanwhile.

    python benchmarks/agents.py            # about ten minutes on 2 cores
    python benchmarks/agents.py --quick    # smaller runs, no README

Everything runs on this machine: `sdl daemon` and `sdl agent` as subprocesses, the agent reaching the service
over loopback TCP (CurveZMQ, as between PCs), and for PostgreSQL a throwaway server (tests/postgres_server.py,
fsync on) that the service and the agent each reach through a data directory of their own, as on two PCs.
The workload is the lab-service benchmark's: instant experiments from the random proposer, so what is
measured is the service's, the link's and the store's own cost. A client asks the service for its status 20
times a second throughout. Each configuration runs once per round, round-robin, and the table gives the median
of the rounds; "× local" compares a remote row with the local row of the same store and workcell count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(ROOT / "tests"), str(ROOT)]

from _report import update_readme  # noqa: E402
from daemon import campaign, seconds  # noqa: E402
from postgres_server import PostgresServer, why_not  # noqa: E402

from sdl.access.keys import KeyRing, generate, read_public  # noqa: E402
from sdl.api import models as m  # noqa: E402
from sdl.store import Store, bind_store  # noqa: E402
from sdl.testing import LabServiceProcess, wait_for  # noqa: E402

MARK = ("<!-- agents-results:start -->", "<!-- agents-results:end -->")
WORKCELLS = (1, 4, 8)


def lab(directory: Path, workcells: int, remote: bool) -> Path:
    agent = " {agent: pc-b}" if remote else " {}"
    cells = "".join(f"  w{i + 1}:{agent}\n" for i in range(workcells))
    path = directory / f"lab-{workcells}-{'remote' if remote else 'local'}.yaml"
    path.write_text(f"name: bench\nworkcells:\n{cells}")
    return path


class StatusProbe:
    """Asks for the lab's status 20 times a second on a thread of its own; keeps each reply's time."""

    def __init__(self, daemon: LabServiceProcess) -> None:
        self.daemon = daemon
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatusProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with self.daemon.client() as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                client.call(m.Status())
                self.times.append(time.perf_counter() - started)
                self._stop.wait(max(0.0, 0.05 - (time.perf_counter() - started)))


def one_run(tmp: Path, name: str, workcells: int, remote: bool, url: str | None, n: int) -> dict[str, float]:
    where = tmp / name
    where.mkdir()
    data = where / "data"
    agent_dir = where / "pc-b" if url else data
    if url:
        bind_store(data, url)
        bind_store(agent_dir, url)
    public, secret = generate(where, "pc-b")
    data.mkdir(mode=0o700, exist_ok=True)
    KeyRing(data / "keys.yaml").add("pc-b", read_public(public), "agent")
    daemon = LabServiceProcess(lab(where, workcells, remote), data, pythonpath=[HERE, ROOT]).start()
    agent: subprocess.Popen[bytes] | None = None
    try:
        if remote:
            info = daemon.data_dir / "daemon.json"
            address = json.loads(info.read_text())["agents"]
            command = [sys.executable, "-m", "sdl", "agent", "--name", "pc-b", "--connect", address,
                       "--key", str(secret), "--data-dir", str(agent_dir),
                       "--server-key", str(data / "keys" / "server.key")]  # fmt: skip
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
            with (where / "agent.log").open("ab") as log:
                agent = subprocess.Popen(command, stdout=log, stderr=log, env=env, stdin=subprocess.DEVNULL)
        wait_for(
            lambda: all(w.state == "idle" for w in daemon.call(m.Status()).workcells), 120, "idle workcells"
        )
        path = campaign(where, "instant", n, "instant", {})
        with StatusProbe(daemon) as probe, daemon.client() as client:
            campaign_id = client.submit(path).campaign_id
            wait_for(
                lambda: client.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.status != "running",
                1800,
                "the campaign to end",
            )
        with Store(data, read_only=True) as store:
            records = store.experiments(campaign_id)
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=120)
        daemon.stop()
        daemon.assert_nothing_left()
    first = min(seconds(e.proposed_at) for e in records)
    last = max(seconds(e.finished_at) for e in records if e.finished_at)
    on_cell = [
        seconds(e.finished_at) - seconds(e.started_at) for e in records if e.started_at and e.finished_at
    ]
    latencies = sorted(probe.times)
    return {
        "rate": len(records) / (last - first),
        "on_cell_ms": statistics.median(on_cell) * 1e3,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
    }


def table(
    results: dict[tuple[str, int, bool], list[dict[str, float]]], n: int, rounds: int, load: float
) -> str:
    def med(key: tuple[str, int, bool], field: str) -> float:
        return statistics.median(r[field] for r in results[key])

    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), "
        f"Python {platform.python_version()}; {n} instant experiments per run, random proposer; "
        f"median of {rounds} round(s); load average {load:.1f} when the run started (other work on the "
        "machine slows both placements alike: each round runs them back to back).",
        "",
        "| store | workcells | where | experiments/s | × local | running → recorded, ms per experiment "
        "(median) | + remote ms | status p50 ms | status p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for backend in ("sqlite", "postgresql"):
        for cells in WORKCELLS:
            for remote in (False, True):
                key = (backend, cells, remote)
                if key not in results:
                    continue
                local = (backend, cells, False)
                rate, on_cell = med(key, "rate"), med(key, "on_cell_ms")
                ratio = f"×{rate / med(local, 'rate'):.2f}" if remote else ""
                extra = f"{on_cell - med(local, 'on_cell_ms'):+.1f}" if remote else ""
                lines.append(
                    f"| {backend} | {cells} | {'agent' if remote else 'service'} | {rate:.1f} | {ratio} | "
                    f"{on_cell:.1f} | {extra} | {med(key, 'p50_ms'):.1f} | {med(key, 'p99_ms'):.1f} |"
                )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs; leaves the README alone")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    n, rounds = (60, 1) if args.quick else (300, args.rounds)
    if (reason := why_not()) is not None:
        parser.error(f"cannot start a PostgreSQL server: {reason}")
    server = PostgresServer(durable=True)
    results: dict[tuple[str, int, bool], list[dict[str, float]]] = {}
    load = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="sdl-agents-bench-") as tmp:
            for r in range(rounds):
                for backend in ("sqlite", "postgresql"):
                    for cells in WORKCELLS:
                        for remote in (False, True):
                            url = server.database() if backend == "postgresql" else None
                            name = f"{backend}-{cells}-{'remote' if remote else 'local'}-{r}"
                            row: dict[str, Any] = one_run(Path(tmp), name, cells, remote, url, n)
                            results.setdefault((backend, cells, remote), []).append(row)
                            print(f"round {r + 1}/{rounds} {name}: {row}", file=sys.stderr)
    finally:
        server.stop()
    text = table(results, n, rounds, load)
    print(text)
    if not args.quick:
        update_readme(HERE / "README.md", text, MARK)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
