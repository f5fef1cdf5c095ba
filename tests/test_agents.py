"""Workcells on another PC: `sdl agent` runs their workers there, over a link that delivers every message
exactly once and in order whatever the network does, and partitions lose nothing and repeat nothing.

The system tests run the service, the agent and the simulated lab as processes, with the agent reaching the
service through a proxy that holds or severs the connection at random moments (`sdl.partition`)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from campaign_files import SLOW_BOWL, bowl
from pydantic import ValidationError
from test_daemon_recovery import assert_finished_exactly, colour_campaign, done_ids
from test_metrics import get, samples

from sdl.access.keys import KeyRing, generate, read_public
from sdl.access.roles import Role
from sdl.api import models as m
from sdl.daemon import link
from sdl.partition import Partition
from sdl.spec.lab import Workers
from sdl.spec.status import ExperimentStatus
from sdl.store import Store, bind_store
from sdl.testing import LabServiceProcess, alive, wait_for

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
BENCH = ROOT / "experiments" / "two_stations"
#: Enough that the campaign outlasts the partitions: station B runs on meanwhile.
BUDGET = 40
#: The service's heartbeat timeout in the partition test: a partition longer than this is noticed.
TIMEOUT = 4


# -- the link ---------------------------------------------------------------------------------------------


def test_the_link_delivers_each_message_once_and_in_order_through_loss_copies_and_resends() -> None:
    """A lossy, duplicating network between two channels: whatever is dropped is sent again (as the
    agent and the hub do after a reconnect or a quiet while), and the receiver delivers each item once,
    in the order sent."""
    rng = random.Random(7)
    sender, receiver = link.Channel("s:1"), link.Channel("s:1")
    delivered: list[int] = []
    for n in range(1, 301):
        frame = sender.carry(link.Spawned(workcell="a", pid=n))
        wire = [frame] * rng.choice([0, 1, 1, 2])  # lost, once, or twice
        if rng.random() < 0.2:  # a resend of the whole outbox, as after a reconnect
            wire += sender.outbox()
        rng.shuffle(wire)
        for f in wire:
            if receiver.accept(f):
                delivered.append(f.item.pid)
        if rng.random() < 0.5:  # a beat comes back now and then
            sender.acknowledged(receiver.received)
    while sender.unacked:  # the link stays up at the end: resends until all is acknowledged
        for f in sender.outbox():
            if receiver.accept(f):
                delivered.append(f.item.pid)
        sender.acknowledged(receiver.received)
    assert delivered == list(range(1, 301))


def test_a_frame_is_bounded_before_it_is_parsed() -> None:
    with pytest.raises(ValueError, match="at most"):
        link.decode(b"{" + b" " * link.MAX_FRAME + b"}")
    with pytest.raises(ValueError):
        link.decode(b'{"type": "carry", "session": "x", "seq": 1, "item": {"kind": "nope"}}')


def test_the_agent_role_opens_only_the_agents_door() -> None:
    assert Role.AGENT.allows(Role.AGENT)
    for client in (Role.VIEWER, Role.OPERATOR, Role.ADMIN):
        assert not Role.AGENT.allows(client) and not client.allows(Role.AGENT)
    assert Role.ADMIN.allows(Role.VIEWER) and not Role.VIEWER.allows(Role.OPERATOR)


def test_the_grace_must_outlast_the_agents_own_limit() -> None:
    with pytest.raises(ValidationError, match=r"longer than agent_limit \(30 s\)"):
        Workers(agent_limit=30, agent_grace="20 s")
    assert Workers(agent_limit="1m", agent_grace="2m").agent_grace == 120


# -- agents as processes ---------------------------------------------------------------------------------


def allow_agents(tmp_path: Path, *names: str) -> Path:
    """Key pairs for the agents ``names`` (NAME.key_secret in ``tmp_path``), each allowed with the role agent
    in the lab's data directory, ``tmp_path / "data"`` (returned)."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    ring = KeyRing(data / "keys.yaml")
    for name in names:
        ring.add(name, read_public(generate(tmp_path, name)[0]), "agent")
    return data


def remote_lab(tmp_path: Path, **workers: float) -> Path:
    """The two-station bench with station_a's worker on agent pc-b, and the agent's key allowed."""
    spec = yaml.safe_load((BENCH / "lab.yaml").read_text())
    spec["simulated"] = str(BENCH / "bench.yaml")
    spec["workcells"]["station_a"]["agent"] = "pc-b"
    spec["workers"] = workers
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    allow_agents(tmp_path, "pc-b")
    return path


def compute_lab(tmp_path: Path, cells: dict[str, str], workers: str = "{}") -> Path:
    """A lab of workcells without instruments, each under the agent ``cells`` names, the agents allowed."""
    path = tmp_path / "lab.yaml"
    lines = "".join(f"  {cell}: {{agent: {agent}}}\n" for cell, agent in cells.items())
    path.write_text(f"name: compute\nworkers: {workers}\nworkcells:\n{lines}")
    allow_agents(tmp_path, *sorted(set(cells.values())))
    return path


class AgentProcess:
    def __init__(
        self,
        tmp_path: Path,
        connect: str,
        name: str = "pc-b",
        *extra: str,
        key: Path | None = None,
        data: Path | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        """``key``: pc-b's by default; ``data``: the service's data directory by default; ``wrap``: a
        command prefix (`ip netns exec NS`)."""
        self.log = tmp_path / f"agent-{name}.log"
        key, data = key or tmp_path / "pc-b.key_secret", data or tmp_path / "data"
        command = [*wrap, sys.executable, "-m", "sdl", "agent", "--name", name, "--connect", connect,
                   "--key", str(key), "--data-dir", str(data), *extra]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=out, env=env, stdin=subprocess.DEVNULL
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)


def workcell_state(service: LabServiceProcess, name: str) -> str:
    return next(w.state for w in service.call(m.Status()).workcells if w.name == name)


def remote_started(agent: AgentProcess) -> list[int]:
    """The experiments the agent's worker started, by their number in the campaign, as its log says."""
    return [
        int(n) for n in re.findall(r"experiment color-matching #(\d+) started on station_a", agent.text())
    ]


@pytest.mark.slow
def test_partitions_at_random_moments_lose_nothing_and_repeat_nothing(tmp_path: Path) -> None:
    """Station A's worker runs under an agent that reaches the service through a proxy. The proxy holds
    or severs the link at random moments for 1-14 s, mid-experiment too: what the worker says meanwhile
    waits in the agent's outbox, and what the service says in its; an experiment outlives a short
    partition and its outcome is delivered once the link is back; past the agent's limit the agent aborts
    it (recorded with its journal) and the service, after its grace, starts a new worker there."""
    rng = random.Random(20261208)
    lab = remote_lab(tmp_path, heartbeat_timeout=TIMEOUT, agent_limit=10, agent_grace=14)
    data = tmp_path / "data"
    metrics = ("--metrics", "127.0.0.1:0")
    service = LabServiceProcess(lab, data, *metrics, pythonpath=[TESTS, ROOT]).start()
    port = int(agents_address(service).rpartition(":")[2])
    proxy = Partition(("127.0.0.1", port)).start()
    agent = AgentProcess(tmp_path, proxy.address, "pc-b", *metrics)
    try:
        wait_for(lambda: workcell_state(service, "station_a") == "idle", 120, "the remote workcell")
        with service.client() as client:
            campaign_id = client.submit(colour_campaign(tmp_path, BUDGET)).campaign_id
        completed: set[int] = set()
        # Short (the service does not notice), medium (unreachable, but within the agent's limit: the
        # experiment runs on), long (past the agent's limit, back before the service's grace), longer (past
        # both).
        lengths = [rng.uniform(low, high) for low, high in [(1, 3), (5.5, 7.5), (11, 13), (15, 17)] * 2]
        rng.shuffle(lengths)
        for cut, seconds in enumerate(lengths):
            seen = len(remote_started(agent))
            wait_for(lambda seen=seen: len(remote_started(agent)) > seen or not running(data, campaign_id),
                     180, f"partition {cut + 1}: an experiment on the remote workcell")  # fmt: skip
            if not running(data, campaign_id):
                break
            completed |= done_ids(data, campaign_id)
            (proxy.hold if cut % 2 else proxy.sever)()
            restore_at = time.monotonic() + seconds
            if seconds > TIMEOUT:  # long enough for the service to notice
                wait_for(lambda: workcell_state(service, "station_a") == "unreachable", 30,
                         f"partition {cut + 1}: station_a unreachable")  # fmt: skip
            # The partition's length, chosen by the test: not a synchronisation.
            time.sleep(max(0.0, restore_at - time.monotonic()))
            proxy.restore()
        wait_for(lambda: not running(data, campaign_id), 600, "the campaign to finish")
        with Store(data, read_only=True) as store:
            record = store.campaign(campaign_id)
            history = store.experiments(campaign_id)
        assert record.status.value == "completed", record
        assert sum(e.status is ExperimentStatus.DONE for e in history) == BUDGET
        assert_finished_exactly(data, campaign_id, completed)
        started = remote_started(agent)
        assert len(started) == len(set(started)), f"an experiment started twice on station_a: {started}"
        assert proxy.cuts == len(lengths)
        log = service.log_text(whole=True)
        ran_on = {int(n) for n in re.findall(r"experiment id (\d+) runs on there", log)}
        assert any(e.id in ran_on and e.status is ExperimentStatus.DONE for e in history), (
            "no experiment outlived a partition"
        )
        assert "worker lost: its agent pc-b was unreachable" in log
        assert "stopping every worker" in agent.text()
        # Both sides counted the partitions they noticed: the medium and long ones at least.
        token = (data / "keys" / "metrics.token").read_text().strip()
        agent_url = wait_for(lambda: re.search(r"metrics on (http://\S+)", agent.text()), 10, "its url")[1]
        mine = samples(get(agent_url, token)[1])
        assert mine[("sdl_agent_partitions_total", frozenset())] >= 4, mine
        theirs = samples(get(json.loads((data / "daemon.json").read_text())["metrics"], token)[1])
        assert theirs[("sdl_agent_partitions_total", frozenset({("agent", "pc-b")}))] >= 4
    finally:
        proxy.restore()
        code = agent.stop()
        service.stop()
        proxy.close()
    assert code == 0, agent.text()[-3000:]


def agents_address(service: LabServiceProcess) -> str:
    return json.loads((service.data_dir / "daemon.json").read_text())["agents"]


def running(data: Path, campaign_id: str) -> bool:
    with Store(data, read_only=True) as store:
        return store.campaign(campaign_id).status.value == "running"


@pytest.mark.slow
def test_an_agent_the_allow_list_does_not_name_is_refused(tmp_path: Path) -> None:
    lab = remote_lab(tmp_path)
    service = LabServiceProcess(lab, tmp_path / "data", pythonpath=[TESTS, ROOT]).start()
    try:
        agent = AgentProcess(tmp_path, agents_address(service), name="pc-c")  # pc-b's key, another name
        assert agent.process.wait(timeout=60) == 1
        assert "the key's name on the allow-list must be the agent's name" in agent.text()
        assert "said it is agent 'pc-c'; refused" in service.log_text()
        assert workcell_state(service, "station_a") == "unreachable"
        assert not any(alive(pid) for pid in service.family() if pid == agent.process.pid)
    finally:
        service.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_the_agent_follows_a_standby_that_took_the_lab_over(tmp_path: Path) -> None:
    """kill -9 of the serving service mid-campaign: the agent's worker stops by itself once the record
    names the standby, the agent finds the standby at its second address and starts the worker it asks
    for, and the campaign finishes exactly."""
    lab = remote_lab(tmp_path, heartbeat_timeout=TIMEOUT, agent_limit=10, agent_grace=14)
    data = tmp_path / "data"
    ports = [free_port(), free_port()]
    first, second = (
        LabServiceProcess(
            lab, data, "--agents", f"tcp://127.0.0.1:{port}", *extra, pythonpath=[TESTS, ROOT], name=name
        )
        for port, name, extra in ((ports[0], "first", ()), (ports[1], "second", ("--standby",)))
    )
    first.start()
    second.start(wait=False)
    connect = [f"tcp://127.0.0.1:{port}" for port in ports]
    agent = AgentProcess(tmp_path, connect[0], "pc-b", "--connect", connect[1])
    try:
        wait_for(lambda: workcell_state(first, "station_a") == "idle", 120, "the remote workcell")
        with first.client() as client:
            campaign_id = client.submit(colour_campaign(tmp_path, 16)).campaign_id
        wait_for(lambda: len(remote_started(agent)) >= 2, 180, "experiments on the remote workcell")
        completed = done_ids(data, campaign_id)
        first.kill9()
        before = len(remote_started(agent))
        wait_for(second.serving, 60, f"the standby to take over (log: {second.log})")
        # Station B would finish the campaign alone meanwhile: it waits until station A is back.
        second.call(m.PauseCampaign(campaign_id=campaign_id))
        wait_for(lambda: workcell_state(second, "station_a") == "idle", 120,
                 "the remote workcell, under the standby")  # fmt: skip
        second.call(m.ResumeCampaign(campaign_id=campaign_id))
        wait_for(lambda: not running(data, campaign_id), 600, "the campaign to finish")
        assert len(remote_started(agent)) > before, "station A ran nothing under the standby"
        with Store(data, read_only=True) as store:
            record = store.campaign(campaign_id)
        assert record.status.value == "completed", record
        assert_finished_exactly(data, campaign_id, completed)
        started = remote_started(agent)
        assert len(started) == len(set(started)), started
        assert "a new lab service session" in agent.text()
    finally:
        code = agent.stop()
        for service in (first, second):
            if service.process is not None and service.process.poll() is None:
                service.stop()
        for service in (first, second):
            service.assert_nothing_left(60)
    assert code == 0, agent.text()[-3000:]


@pytest.mark.slow
def test_an_agent_with_a_data_directory_of_its_own_over_postgresql(tmp_path: Path, postgres) -> None:
    """As on two PCs: the agent's data directory names the lab's PostgreSQL database, where its worker
    writes the journal, documents and outcome of every experiment on its workcell."""
    lab = remote_lab(tmp_path)
    service_dir, agent_dir = tmp_path / "data", tmp_path / "pc-b"
    url = postgres.database()
    for data in (service_dir, agent_dir):
        bind_store(data, url)
    service = LabServiceProcess(lab, service_dir, pythonpath=[TESTS, ROOT]).start()
    command = [sys.executable, "-m", "sdl", "agent", "--name", "pc-b", "--connect", agents_address(service),
               "--key", str(tmp_path / "pc-b.key_secret"), "--data-dir", str(agent_dir),
               "--server-key", str(service_dir / "keys" / "server.key")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}
    log = tmp_path / "agent.log"
    with log.open("ab") as out:
        agent = subprocess.Popen(command, stdout=out, stderr=out, env=env, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: workcell_state(service, "station_a") == "idle", 120, "the remote workcell")
        with service.client() as client:
            campaign_id = client.submit(colour_campaign(tmp_path, 12)).campaign_id
        wait_for(lambda: not running(service_dir, campaign_id), 600, "the campaign to finish")
        assert_finished_exactly(service_dir, campaign_id, set())
        with Store(agent_dir, read_only=True) as store:
            remote = [e for e in store.experiments(campaign_id) if e.workcell == "station_a"]
        assert remote and all(e.status is ExperimentStatus.DONE for e in remote), remote
    finally:
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=120)
        service.stop()
        service.assert_nothing_left(60)
    assert code == 0, log.read_text()[-3000:]


@pytest.mark.slow
def test_one_agent_serves_four_workcells(tmp_path: Path) -> None:
    """Four workcells under one agent: every one of them runs experiments, and their messages (four workers'
    heartbeats and outcomes through one link) all reach the service."""
    lab = compute_lab(tmp_path, {f"w{i}": "pc-b" for i in range(1, 5)})
    data, spec = tmp_path / "data", bowl(tmp_path, 24, SLOW_BOWL % 0.2)
    service = LabServiceProcess(lab, data, pythonpath=[TESTS, ROOT]).start()
    agent = AgentProcess(tmp_path, agents_address(service))
    try:
        wait_for(
            lambda: {w.state for w in service.call(m.Status()).workcells} == {"idle"}, 120, "four workcells"
        )
        with service.client() as client:
            campaign_id = client.submit(spec).campaign_id
        wait_for(lambda: not running(data, campaign_id), 300, "the campaign to finish")
        with Store(data, read_only=True) as store:
            history = store.experiments(campaign_id)
        assert [e.status for e in history] == [ExperimentStatus.DONE] * 24
        assert {e.workcell for e in history} == {"w1", "w2", "w3", "w4"}
        (seen,) = service.call(m.Status()).agents
        assert (seen.name, seen.reachable, seen.workcells) == ("pc-b", True, ["w1", "w2", "w3", "w4"])
        assert {w.agent for w in service.call(m.Status()).workcells} == {"pc-b"}
    finally:
        code = agent.stop()
        service.stop()
        service.assert_nothing_left(60)
    assert code == 0, agent.text()[-3000:]


# -- agents on other hosts: network namespaces joined by veth pairs ---------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def hosts() -> Iterator[Any]:
    """``hosts(i)`` makes a network namespace joined to this one by a veth pair of its own: (the namespace,
    the interface on this side, this side's address). Each is removed at the end."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2's ip")
    made: list[tuple[str, str]] = []
    tag = os.getpid() % 10000

    def make(index: int) -> tuple[str, str, str]:
        name, here, there = f"sdl-{tag}-{index}", f"sdh{tag}{index}", f"sda{tag}{index}"
        net = f"10.{200 + index}.{tag % 250}"
        _ip("netns", "add", name)
        made.append((name, here))
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", name)
        _ip("addr", "add", f"{net}.1/30", "dev", here)
        _ip("link", "set", here, "up")
        for args in (("addr", "add", f"{net}.2/30", "dev", there), ("link", "set", there, "up"),
                     ("link", "set", "lo", "up")):  # fmt: skip
            _ip("netns", "exec", name, "ip", *args)
        return name, here, f"{net}.1"

    yield make
    for name, here in made:
        subprocess.run(["ip", "link", "del", here], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@pytest.mark.slow
def test_agents_on_hosts_of_their_own_through_a_link_that_goes_down(tmp_path: Path, hosts: Any) -> None:
    """Two agents, each in a network namespace of its own whose only way out is a veth pair (nothing can go
    over loopback), serve two workcells each. One pair's link is taken down mid-campaign and brought back:
    its workcells are unreachable meanwhile and carry on after, and the campaign completes, all done."""
    agents = {"pc-b": hosts(1), "pc-c": hosts(2)}
    cells = {"w1": "pc-b", "w2": "pc-b", "w3": "pc-c", "w4": "pc-c"}
    lab = compute_lab(tmp_path, cells, "{heartbeat_timeout: 4, agent_limit: 20, agent_grace: 30}")
    data, spec = tmp_path / "data", bowl(tmp_path, 40, SLOW_BOWL % 0.3)
    port = free_port()
    service = LabServiceProcess(
        lab, data, "--agents", f"tcp://0.0.0.0:{port}", pythonpath=[TESTS, ROOT]
    ).start()
    running_agents = [
        AgentProcess(
            tmp_path,
            f"tcp://{address}:{port}",
            name,
            key=tmp_path / f"{name}.key_secret",
            wrap=["ip", "netns", "exec", namespace],
        )
        for name, (namespace, _, address) in agents.items()
    ]
    try:
        wait_for(
            lambda: {w.state for w in service.call(m.Status()).workcells} == {"idle"}, 120, "four workcells"
        )
        with service.client() as client:
            campaign_id = client.submit(spec).campaign_id
        wait_for(lambda: len(done_ids(data, campaign_id)) >= 8, 120, "eight experiments done")
        _, link, _ = agents["pc-b"]
        _ip("link", "set", link, "down")  # pc-b's cable pulled
        wait_for(lambda: workcell_state(service, "w1") == "unreachable", 30, "w1 unreachable")
        # pc-c's workcells would spend the budget alone meanwhile: the campaign waits for pc-b's to be back.
        service.call(m.PauseCampaign(campaign_id=campaign_id))
        wait_for(lambda: "agent pc-b (vm): silent for" in service.log_text(), 30, "the service to count it")
        shown = {a.name: a for a in service.call(m.Status()).agents}
        assert not shown["pc-b"].reachable and shown["pc-b"].silent_s >= 4 and shown["pc-c"].reachable
        assert "agent pc-b (w1, w2): UNREACHABLE for" in status_text(data)
        before = {e.id for e in experiments(data, campaign_id) if e.workcell in ("w1", "w2")}
        _ip("link", "set", link, "up")
        wait_for(lambda: {workcell_state(service, w) for w in cells} == {"idle"}, 60, "pc-b's workcells back")
        service.call(m.ResumeCampaign(campaign_id=campaign_id))
        wait_for(lambda: not running(data, campaign_id), 300, "the campaign to finish")
        history = experiments(data, campaign_id)
        assert [e.status for e in history] == [ExperimentStatus.DONE] * 40
        after = {e.id for e in history if e.workcell in ("w1", "w2")} - before
        assert after, "pc-b's workcells ran nothing once its link was back"
        assert {e.workcell for e in history} == set(cells)
        log = service.log_text(whole=True)
        assert "agent pc-b (vm): heard again" in log
        # What ran on pc-b's workcells through the partition finished there, and its outcome came through.
        assert re.findall(r"experiment id (\d+) runs on there", log)
    finally:
        codes = [agent.stop() for agent in running_agents]
        service.stop()
        service.assert_nothing_left(60)
    assert codes == [0, 0], [agent.text()[-2000:] for agent in running_agents]


def status_text(data: Path) -> str:
    """What `sdl status` prints for the lab in ``data``."""
    command = [sys.executable, "-m", "sdl", "status", "--data-dir", str(data)]
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    return done.stdout + done.stderr


def experiments(data: Path, campaign_id: str) -> list[Any]:
    with Store(data, read_only=True) as store:
        return store.experiments(campaign_id)


@pytest.mark.slow
def test_an_agent_whose_service_died_stops_its_workers_and_serves_the_restarted_one(tmp_path: Path) -> None:
    """kill -9 of the service, with no standby: past its limit the agent aborts the plan in flight (recorded
    interrupted by its worker, with the reason) and stops the worker, trying its endpoints in turn
    meanwhile; the service started again finds the agent back, and the campaign completes."""
    lab = compute_lab(tmp_path, {"w1": "pc-b"}, "{heartbeat_timeout: 2, agent_limit: 8, agent_grace: 10}")
    plan = "{plan: 'daemon_procedures:waiting_plan', extractor: 'daemon_procedures:plan_loss', "
    plan += "options: {seconds: 12}}"
    data, spec = tmp_path / "data", bowl(tmp_path, 3, plan)
    address = f"tcp://127.0.0.1:{free_port()}"
    flags = ("--agents", address)
    service = LabServiceProcess(lab, data, *flags, pythonpath=[TESTS, ROOT]).start()
    elsewhere = f"tcp://127.0.0.1:{free_port()}"  # nothing there: a standby that never came
    agent = AgentProcess(tmp_path, address, "pc-b", "--connect", elsewhere)
    try:
        wait_for(lambda: workcell_state(service, "w1") == "idle", 120, "the remote workcell")
        with service.client() as client:
            campaign_id = client.submit(spec).campaign_id
        wait_for(lambda: workcell_state(service, "w1") == "busy", 60, "an experiment on w1")
        service.kill9()
        # It tries the other address first (6 s), and keeps its limit (8 s) while it waits there.
        wait_for(lambda: f"at {elsewhere}" in agent.text(), 60, "the agent to try its other address")
        wait_for(lambda: "stopping every worker" in agent.text(), 60, "the agent to stop its worker")
        wait_for(lambda: re.search(r"worker \d+ exited", agent.text()), 60, "the worker to exit")
        with Store(data, read_only=True) as store:
            interrupted = [
                e for e in store.experiments(campaign_id) if e.status is ExperimentStatus.INTERRUPTED
            ]
        assert len(interrupted) == 1 and "the agent lost the lab service" in (interrupted[0].failure or "")
        service.start()  # the same address: the agent, trying both in turn, finds it
        wait_for(lambda: not running(data, campaign_id), 300, "the campaign to finish")
        assert_finished_exactly(data, campaign_id, set())
    finally:
        code = agent.stop()
        service.stop()
        service.assert_nothing_left(60)
    assert code == 0, agent.text()[-3000:]


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        ([], "--connect: give the lab service's agents address"),
        (["--connect", "lab-pc:60718"], "--connect lab-pc:60718: expected tcp://HOST:PORT"),
        (["--connect", "tcp://127.0.0.1:60718"], "--key: give this agent's secret key file"),
        (["--connect", "tcp://127.0.0.1:60718", "--key", "/nonexistent.key_secret", "--server-key", "/x.key"],
         "--key/--server-key:"),
        (["--connect", "tcp://127.0.0.1:60718", "--metrics", "9465"], "--metrics 9465: expected HOST:PORT"),
    ],
)  # fmt: skip
def test_sdl_agent_names_what_is_wrong_with_its_command_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    says: str,
) -> None:
    from sdl.cli import main

    monkeypatch.delenv("SDL_KEY", raising=False)
    assert main(["agent", "--name", "pc-b", "--data-dir", str(tmp_path / "none"), *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err, err
