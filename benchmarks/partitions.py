"""Twenty partitions of 5-60 s at random moments, two agents, PostgreSQL: what is lost, what runs twice, how
the experiments caught in a partition end.

    python benchmarks/partitions.py            # about 35 minutes
    python benchmarks/partitions.py --cuts 4   # a shorter run, no README

The two-station colour bench at 20x, each station's worker under an agent of its own (pc-b, pc-c), each agent
with a data directory of its own over one throwaway PostgreSQL database (tests/postgres_server.py), reaching
the service through a proxy this script controls (`sdl.partition`). After an experiment starts on a station,
the script cuts that station's link at a random moment of it (held or severed, alternately) for a random
5-60 s, one partition at a time. The lab's workers section: heartbeat timeout 10 s, agent_limit 30 s,
agent_grace 45 s, so partitions on both sides of the agent's limit occur. Then the campaign runs to its
budget, and the record is checked as the twenty kill -9s are (tests/test_daemon_recovery.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(ROOT / "tests"), str(ROOT)]

from _report import update_readme  # noqa: E402
from postgres_server import PostgresServer, why_not  # noqa: E402
from test_agents import AgentProcess  # noqa: E402
from test_daemon_recovery import colour_campaign, done_ids  # noqa: E402

from sdl.access.keys import KeyRing, generate, read_public  # noqa: E402
from sdl.api import models as m  # noqa: E402
from sdl.partition import Partition  # noqa: E402
from sdl.spec.status import ExperimentStatus  # noqa: E402
from sdl.store import Store, bind_store  # noqa: E402
from sdl.testing import LabServiceProcess, wait_for  # noqa: E402

MARK = ("<!-- partitions-results:start -->", "<!-- partitions-results:end -->")
BENCH = ROOT / "experiments" / "two_stations"
STATIONS = {"station_a": "pc-b", "station_b": "pc-c"}
SYRINGE_UL = 60000


def lab(tmp: Path) -> Path:
    """The bench with 60 mL syringes (a 10 mL one runs dry after about 30 experiments: the campaign would wait
    for a person to refill it), each station under an agent of its own."""
    bench = yaml.safe_load((BENCH / "bench.yaml").read_text())
    spec = yaml.safe_load((BENCH / "lab.yaml").read_text())
    syringes = [p for i in ("pumps_a", "pumps_b") for p in bench["instruments"][i]["pumps"]]
    syringes += [
        p for i in ("pumps_a", "pumps_b") for p in spec["instruments"][i]["options"]["pumps"].values()
    ]
    for pump in syringes:
        pump.update(diameter_mm=26.59, syringe_volume_ul=SYRINGE_UL)
    for stocks in spec["inventory"].values():
        for stock in stocks.values():
            stock.update(amount=SYRINGE_UL, capacity=SYRINGE_UL)
    (tmp / "bench.yaml").write_text(yaml.safe_dump(bench, sort_keys=False))
    spec["simulated"] = str(tmp / "bench.yaml")
    spec["speed"] = 20
    for station, agent in STATIONS.items():
        spec["workcells"][station]["agent"] = agent
    spec["workers"] = {"heartbeat_timeout": 10, "agent_limit": 30, "agent_grace": 45}
    path = tmp / "lab.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cuts", type=int, default=20)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20261208)
    args = parser.parse_args()
    if (reason := why_not()) is not None:
        parser.error(f"cannot start a PostgreSQL server: {reason}")
    rng = random.Random(args.seed)
    server = PostgresServer(durable=True)
    rows: list[dict[str, object]] = []
    tmp = Path(tempfile.mkdtemp(prefix="sdl-partitions-"))  # kept if the run fails: its logs say why
    print(f"working in {tmp}", file=sys.stderr)
    url = server.database()
    data = tmp / "data"
    bind_store(data, url)
    ring = KeyRing(data / "keys.yaml")
    for agent in STATIONS.values():
        public, _ = generate(tmp, agent)
        ring.add(agent, read_public(public), "agent")
    service = LabServiceProcess(lab(tmp), data, pythonpath=[ROOT / "tests", ROOT]).start()
    port = int(json.loads((data / "daemon.json").read_text())["agents"].rpartition(":")[2])
    proxies = {station: Partition(("127.0.0.1", port)).start() for station in STATIONS}
    agents: dict[str, AgentProcess] = {}
    for station, agent in STATIONS.items():
        home = tmp / agent
        bind_store(home, url)
        server_key = str(data / "keys" / "server.key")
        agents[station] = AgentProcess(tmp, proxies[station].address, agent, "--server-key", server_key,
                                       key=tmp / f"{agent}.key_secret", data=home)  # fmt: skip
    try:
        wait_for(lambda: {w.state for w in service.call(m.Status()).workcells} == {"idle"}, 180, "stations")
        with service.client() as client:
            campaign_id = client.submit(colour_campaign(tmp, args.budget)).campaign_id
        completed: set[int] = set()
        for cut in range(args.cuts):
            station = rng.choice(sorted(STATIONS))
            agent = agents[station]
            seen = len(started_in(agent.text(), station))
            wait_for(lambda agent=agent, station=station, seen=seen: (
                len(started_in(agent.text(), station)) > seen or not _running(data, campaign_id)
            ), 600, f"cut {cut + 1}: an experiment on {station}")  # fmt: skip
            if not _running(data, campaign_id):
                break
            time.sleep(rng.uniform(0, 8))  # a random moment of the experiment (about 10 s at 20x)
            completed |= done_ids(data, campaign_id)
            seconds = rng.uniform(5, 60)
            mode = "hold" if cut % 2 else "sever"
            getattr(proxies[station], mode)()
            time.sleep(seconds)  # the partition's length
            proxies[station].restore()
            rows.append({"station": station, "mode": mode, "seconds": seconds})
            print(f"cut {cut + 1}: {station} {mode} {seconds:.1f} s", file=sys.stderr)
        wait_for(lambda: not _running(data, campaign_id), 3600, "the campaign to finish")
        with Store(data, read_only=True) as store:
            record = store.campaign(campaign_id)
            history = store.experiments(campaign_id)
            journals = {e.id: len(store.journal(e.id)) for e in history}
    finally:
        for proxy in proxies.values():
            proxy.restore()
        codes = {station: agent.stop() for station, agent in agents.items()}
        service.stop()
        log = service.log_text(whole=True)
        texts = {station: agent.text() for station, agent in agents.items()}
        for proxy in proxies.values():
            proxy.close()
        server.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    done = [e for e in history if e.status is ExperimentStatus.DONE]
    recipes = [tuple(sorted(e.recipe.items())) for e in done]
    interrupted = [e for e in history if e.status is ExperimentStatus.INTERRUPTED]
    twice = sum(len(v) - len(set(v)) for v in (started_in(texts[s], s) for s in STATIONS))
    ran_on = {int(n) for n in re.findall(r"experiment id (\d+) runs on there", log)}
    outlived = sum(1 for e in done if e.id in ran_on)
    lengths = [float(r["seconds"]) for r in rows]
    held = sum(r["mode"] == "hold" for r in rows)
    lost = len(completed - {e.id for e in done})
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), "
        f"Python {platform.python_version()}; seed {args.seed}; PostgreSQL on loopback, fsync on.",
        "",
        "| partitions | held / severed | length s: median (min-max) | campaign | done | done lost "
        "| recipes run twice | experiments started twice | interrupted (with journal lines) "
        "| outlived a noticed partition | agents' exit codes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {len(rows)} | {held} / {len(rows) - held} "
        f"| {statistics.median(lengths):.1f} ({min(lengths):.1f}-{max(lengths):.1f}) "
        f"| {record.status.value}, {len(history)} experiments | {len(done)} | {lost} "
        f"| {len(recipes) - len(set(recipes))} | {twice} "
        f"| {len(interrupted)} ({sum(journals[e.id] > 0 for e in interrupted)}) | {outlived} "
        f"| {', '.join(str(c) for c in codes.values())} |",
    ]
    text = "\n".join(lines)
    print(text)
    if len(rows) == 20:  # the documented run: twenty partitions, all made
        update_readme(HERE / "README.md", text, MARK)
    return 0


def started_in(text: str, station: str) -> list[int]:
    return [int(n) for n in re.findall(rf"experiment color-matching #(\d+) started on {station}", text)]


def _running(data: Path, campaign_id: str) -> bool:
    with Store(data, read_only=True) as store:
        return store.campaign(campaign_id).status.value == "running"


if __name__ == "__main__":
    raise SystemExit(main())
