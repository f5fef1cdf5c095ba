"""A hostile client against the lab service: a raw 0MQ socket, not our client, while a campaign runs.

Every malformed, huge and numeric-edge message gets a typed error or the close docs/api.md documents
("Limits"); the service's memory comes back to within 20 % of what it was before the client came; and the
campaign beside it ends with exactly the results of the same campaign undisturbed (one workcell, the same
seed, run in the foreground). The e-stop's latency under such a load is measured in benchmarks/daemon.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import zmq
from test_daemon import campaign_file, experiments, lab_file, service_process
from test_subscriber_limits import dropped
from zmq.utils.monitor import recv_monitor_message

from sdl.api import models as m
from sdl.api.client import Credentials
from sdl.loop.foreground import run_campaign
from sdl.loop.lifecycle import start_campaign
from sdl.spec.loading import load_campaign
from sdl.store import Store
from sdl.testing import LabServiceProcess, wait_for

MB = 1 << 20
HUGE_INT = b"9" * 5000
TOO_BIG = b"10000000000000000000"  # 10^19: more than SQLite's integers hold

#: Single-frame requests (after a DEALER's empty delimiter) and the error each must get. None of them is a
#: valid request: a valid one that changes the lab would change the campaign's results.
TYPED: list[tuple[bytes, str]] = [
    (b"", "bad_request"),
    (b"not json", "bad_request"),
    (b"\xff\xfe\x00{", "bad_request"),
    (b"[1, 2]", "bad_request"),
    (b'{"params": {}}', "bad_request"),
    (b"[" * 100_000 + b"]" * 100_000, "bad_request"),
    (b'{"method": "status", "id": ' + HUGE_INT + b"}", "bad_request"),
    (b'{"method": "status", "id": NaN}', "bad_request"),
    (b'{"method": "status", "id": Infinity}', "bad_request"),
    (b'{"method": "status", "id": -Infinity}', "bad_request"),
    (b'{"method": "status", "id": 1e999}', "bad_request"),
    (b'{"method": "status", "id": {"nested": [1]}}', "bad_request"),
    (b'{"method": "status", "id": "' + b"i" * 1000 + b'"}', "bad_request"),
    (b'{"method": "status", "user": "' + b"u" * 1000 + b'"}', "bad_request"),
    (b'{"method": "' + b"m" * 100_000 + b'"}', "unknown_method"),
    (b'{"method": "status", "params": []}', "invalid_params"),
    (b'{"method": "experiment.show", "params": {"experiment_id": ' + TOO_BIG + b"}}", "invalid_params"),
    (b'{"method": "experiment.show", "params": {"experiment_id": -1}}', "invalid_params"),
    (b'{"method": "events.since", "params": {"seq": ' + TOO_BIG + b"}}", "invalid_params"),
    (b'{"method": "audit.list", "params": {"after_id": ' + TOO_BIG + b"}}", "invalid_params"),
    (b'{"method": "experiments.list", "params": {"campaign_id": "c", "limit": 1e999}}', "invalid_params"),
    (b'{"method": "campaign.budget", "params": {"campaign_id": "c", "max_experiments": ' + TOO_BIG + b"}}",
     "invalid_params"),
    (b'{"method": "campaign.abort", "params": {"campaign_id": "' + b"c" * 10_000 + b'"}}', "invalid_params"),
    (b'{"method": "lab.estop", "params": {"reason": "' + b"r" * 2000 + b'"}}', "invalid_params"),
    (b'{"method": "status", "params": {' + b", ".join(b'"k%d": 0' % i for i in range(60_000)) + b"}}",
     "invalid_params"),
    (b'{"method": "status", "pad": "' + b"x" * (2 * MB) + b'"}', "too_large"),
]  # fmt: skip
MULTIPART: list[tuple[list[bytes], str]] = [
    ([b""] * 10 + [b'{"method": "status"}'], "too_large"),
    ([b"e" * 300, b'{"method": "status"}'], "too_large"),
    ([b"x" * (15 * MB)] * 40 + [b'{"method": "status"}'], "too_large"),  # 600 MB in one message
    ([b""] * 100_000 + [b'{"method": "status"}'], "too_large"),
]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class Raw:
    """A raw DEALER: what it sends goes out as given."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], address: str, data_dir: Path) -> None:
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        credentials = Credentials.load(data_dir=data_dir)  # the owner's key: hostile, but allowed in
        assert credentials is not None
        credentials.apply(self.socket)
        self.monitor = self.socket.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.socket.connect(address)
        self.events: list[int] = []
        wait_for(lambda: self.seen(zmq.EVENT_CONNECTED), 30, "a connection")

    def seen(self, event: int) -> bool:
        while self.monitor.poll(50):
            self.events.append(recv_monitor_message(self.monitor)["event"])
        return event in self.events

    def ask(self, frames: list[bytes]) -> tuple[list[bytes], dict]:
        self.socket.send_multipart(frames)
        return self.reply()

    def reply(self) -> tuple[list[bytes], dict]:
        assert self.socket.poll(60_000), "no reply"
        reply = self.socket.recv_multipart()
        return reply, json.loads(reply[-1], parse_constant=_not_json)

    def close(self) -> None:
        self.socket.disable_monitor()
        self.monitor.close(linger=0)
        self.socket.close(linger=0)


def _not_json(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


def typed(reply: dict, expected: str) -> None:
    assert reply["ok"] is False and m.Error.model_validate(reply["error"]).type == expected, reply
    if expected == "invalid_params":  # not one line for each of 100,000 unknown parameters
        assert len(reply["error"]["details"]) <= 20


def attack(context: zmq.Context[zmq.Socket[bytes]], service: LabServiceProcess) -> None:
    raw = Raw(context, service.address, service.data_dir)
    try:
        for payload, expected in TYPED:
            _frames, reply = raw.ask([b"", payload])
            typed(reply, expected)
        # 15 MB that are not JSON past their first bytes: refused unparsed, the id read from those bytes
        _frames, reply = raw.ask([b"", b'{"method": "status", "id": 15, "pad": "' + b"x" * (15 * MB)])
        typed(reply, "too_large")
        assert reply["id"] == 15
        for frames, expected in MULTIPART:
            answer, reply = raw.ask(frames)
            typed(reply, expected)
            assert len(answer) == 2 and len(answer[-1]) < 1024  # the frames sent are not echoed
        pipelined = 24
        pad = b"x" * (15 * MB)
        for i in range(pipelined):  # as the probe did: 24 requests of 15 MB in flight at once
            raw.socket.send_multipart([b"", b'{"method": "status", "id": %d, "pad": "' % i + pad])
        replies = [raw.reply()[1] for _ in range(pipelined)]
        for reply in replies:
            typed(reply, "too_large")
        assert sorted(r["id"] for r in replies) == list(range(pipelined))
        assert raw.ask([b"", b'{"method": "status", "id": "after"}'])[1]["ok"] is True
    finally:
        raw.close()

    # The documented closes: a frame over the transport limit, and subscribers that would cost too much.
    closed = Raw(context, service.address, service.data_dir)
    try:
        closed.socket.send_multipart([b"", b"x" * (17 * MB)])
        wait_for(lambda: closed.seen(zmq.EVENT_DISCONNECTED), 60, "the connection to close")
    finally:
        closed.close()
    events = service.call(m.Status()).events_address
    rng = random.Random(3)
    credentials = Credentials.load(data_dir=service.data_dir)
    assert dropped(context, events, [rng.randbytes(64 << 10) for _ in range(200)], credentials)
    assert dropped(context, events, [rng.randbytes(60) for _ in range(100)], credentials)


@pytest.mark.slow
def test_a_hostile_client_gets_typed_errors_or_closes_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = campaign_file(
        tmp_path, budget=40, function="daemon_procedures:slow_bowl", options={"seconds": 0.25}
    )
    with Store(tmp_path / "reference") as store:
        reference_id = start_campaign(store, load_campaign(path))
        run_campaign(store, reference_id)
        reference = [(e.recipe, e.objective) for e in store.experiments(reference_id)]

    service = service_process(lab_file(tmp_path, workcells=1), tmp_path / "data").start()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        with service.client() as client:
            campaign_id = client.submit(path).campaign_id

            def summary() -> m.CampaignSummary:
                return client.call(m.ShowCampaign(campaign_id=campaign_id)).campaign

            wait_for(lambda: summary().spent >= 2, 120, "the campaign to be under way")
            for _ in range(20):  # the service's own steady state before the client comes
                client.call(m.EventsSince(seq=0, limit=100))
            baseline = rss_kib(service.pid)
            assert summary().status == "running"  # the attack runs beside it

            attack(context, service)

            peak = int(Path(f"/proc/{service.pid}/status").read_text().split("VmHWM:")[1].split()[0])
            back = wait_for(
                lambda: (kib := rss_kib(service.pid)) <= baseline * 1.2 and kib,
                120,
                f"the service's memory to come back to {baseline} KiB (+20 %) from a peak of {peak} KiB",
            )
            done = wait_for(lambda: (c := summary()).status != "running" and c, 300, "the campaign to end")
        assert done.status == "completed", done
        ran = [(e.recipe, e.loss) for e in experiments(service, campaign_id)]
        assert ran == reference  # untouched by everything the client sent
        print(f"service RSS: {baseline} KiB before, peak {peak} KiB, {back} KiB after")
    finally:
        context.term()
        assert service.stop() == 0, service.log_text()
        service.assert_nothing_left()
