"""Who the dashboard of `sdl daemon --http` answers, over raw HTTP (the headers a browser would send, and the
ones an attacker's page can make a browser send): DNS rebinding (a Host that is not this dashboard's) is
refused before any handler runs, a cross-site control request is refused, both are audited, and a browser
signed in with a key that leaves the allow-list stops hearing events."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_daemon import ROOT, TESTS, campaign_file, lab_file, running_files

from sdl.access.keys import KeyRing, generate, read_public
from sdl.access.tokens import TokenFile
from sdl.api import models as m
from sdl.cli import main
from sdl.dashboard.hosts import AllowedHosts
from sdl.testing import LabServiceProcess, wait_for

CONFIGURED = "lab.example"


@dataclass
class Web:
    service: LabServiceProcess
    port: int
    tokens: dict[str, str]
    finished: str  # a campaign with its experiments, for reading and exports
    running: str  # a campaign whose experiments wait at a gate, for controls
    gate: Path
    allow_list: Path


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    tmp = tmp_path_factory.mktemp("dashboard-access")
    data = tmp / "data"
    ring, tokens = KeyRing(data / "keys.yaml"), TokenFile(data / "tokens.yaml")
    issued = {}
    for name, role in (("oleg", "operator"), ("leaver", "viewer")):
        public, secret = generate(tmp / "keys", name)
        ring.add(name, read_public(public), role)
        issued[name] = tokens.issue(f"{name}-browser", secret)
    service = LabServiceProcess(
        lab_file(tmp), data, "--http", "127.0.0.1:0", "--allowed-host", CONFIGURED, pythonpath=[TESTS, ROOT]
    )
    gate = tmp / "gate"
    gate.mkdir()
    with service.start():
        try:
            with service.client() as client:
                finished = client.submit(campaign_file(tmp, "done", budget=3)).campaign_id
                wait_for(
                    lambda: client.call(m.ShowCampaign(campaign_id=finished)).campaign.status != "running",
                    120,
                    "the first campaign to finish",
                )
                running = client.submit(
                    campaign_file(tmp, "waiting", budget=50, function="daemon_procedures:gated",
                                  options={"gate": str(gate)})
                ).campaign_id  # fmt: skip
            wait_for(lambda: running_files(gate) >= 1, 120, "an experiment waiting at the gate")
            port = int(json.loads((data / "daemon.json").read_text())["http"].rsplit(":", 1)[1])
            yield Web(service, port, issued, finished, running, gate, data / "keys.yaml")
        finally:
            (gate / "open").write_text("")
            if service.call(m.ShowCampaign(campaign_id=running)).campaign.status == "running":
                service.call(m.AbortCampaign(campaign_id=running))
            assert service.stop() == 0, service.log_text()


@dataclass
class Reply:
    status: int
    body: bytes


def send(
    web: Web,
    method: str,
    path: str,
    *,
    host: str,
    origin: str | None = None,
    token: str | None = None,
    body: object = None,
) -> Reply:
    """One request with exactly these headers (http.client sends the Host given, not its own)."""
    headers = {"Host": host}
    if origin is not None:
        headers["Origin"] = origin
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        if response.getheader("content-type", "").startswith("text/event-stream"):
            return Reply(response.status, response.readline())  # a stream: its first line is enough
        return Reply(response.status, response.read())
    finally:
        connection.close()


def endpoints(web: Web) -> list[tuple[str, str, object]]:
    """Every kind of thing the dashboard serves: the page, its assets, reads, the event stream, the audit
    log, exports, sign-in, and a control."""
    experiment = web.service.call(m.ListExperiments(campaign_id=web.finished)).experiments[0].id
    call = "/api/call/"
    return [
        ("GET", "/", None),
        ("GET", "/static/app.js", None),
        ("GET", "/api/session", None),
        ("POST", call + "status", {}),
        ("POST", call + "campaign.list", {}),
        ("POST", call + "campaign.show", {"campaign_id": web.finished}),
        ("POST", call + "experiments.list", {"campaign_id": web.finished}),
        ("POST", call + "experiment.show", {"experiment_id": experiment}),
        ("POST", call + "lab.instruments", {}),
        ("POST", call + "lab.workcells", {}),
        ("POST", call + "events.since", {"seq": 0}),
        ("POST", call + "audit.list", {}),
        ("GET", "/api/events?since=0", None),
        ("GET", f"/api/export/{web.finished}.csv", None),
        ("GET", f"/api/export/{web.finished}.jsonl", None),
        ("POST", "/api/signin", {"token": web.tokens["oleg"]}),
        ("POST", call + "campaign.pause", {"campaign_id": web.running}),
    ]


def state_of(web: Web) -> str:
    return str(web.service.call(m.ShowCampaign(campaign_id=web.running)).campaign.state)


def test_a_host_that_is_not_this_dashboards_is_refused_before_any_handler_runs(web: Web) -> None:
    """DNS rebinding: the attacker's name resolves to 127.0.0.1, so the browser sends its Host and Origin."""
    rebound = f"rebind.example:{web.port}"
    for token in (None, web.tokens["oleg"]):
        for method, path, body in endpoints(web):
            reply = send(web, method, path, host=rebound, origin=f"http://{rebound}", token=token, body=body)
            assert reply.status == 400, (path, reply)
            assert json.loads(reply.body)["error"]["type"] == "bad_request", (path, reply)
            assert web.finished.encode() not in reply.body
    assert state_of(web) == "running"  # the pause never reached its handler
    for host in ("", "rebind.example", "127.0.0.1.rebind.example", f"{CONFIGURED}.evil:{web.port}"):
        assert send(web, "POST", "/api/call/status", host=host, body={}).status == 400, host
    entries = web.service.call(m.ListAudit(action="web.host")).entries
    assert entries, "the refusals were not audited"
    assert (entries[0].who, entries[0].origin, entries[0].target) == ("web visitor", "web 127.0.0.1", rebound)
    assert entries[0].result.startswith("refused: not a name this dashboard answers to")


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", CONFIGURED + ":443"])
def test_the_bound_address_loopback_names_and_configured_names_are_served(web: Web, host: str) -> None:
    host = host.format(port=web.port)
    token = web.tokens["oleg"]
    for method, path, body in endpoints(web):
        if path.endswith("campaign.pause"):
            continue  # a control, below
        reply = send(web, method, path, host=host, origin=f"http://{host}", token=token, body=body)
        assert reply.status == 200, (path, reply)
    reply = send(web, "GET", f"/api/export/{web.finished}.csv", host=host, token=token)
    assert reply.body.startswith(b"experiment,status,x,y,")


def test_controls_from_the_dashboards_own_origin_work_and_cross_site_ones_are_refused_and_audited(
    web: Web,
) -> None:
    host = f"127.0.0.1:{web.port}"
    pause = {"campaign_id": web.running}
    token = web.tokens["oleg"]
    evil = "http://evil.example"
    reply = send(web, "POST", "/api/call/campaign.pause", host=host, origin=evil, token=token, body=pause)
    assert reply.status == 403 and json.loads(reply.body)["error"]["type"] == "forbidden", reply
    assert state_of(web) == "running"
    [entry] = web.service.call(m.ListAudit(action="campaign.pause", refused=True)).entries
    assert (entry.who, entry.origin, entry.target) == ("web visitor", "web 127.0.0.1", evil)
    assert entry.result == "refused: a cross-site request (its Origin is not this dashboard)"

    reply = send(web, "POST", "/api/call/campaign.pause", host=host, origin=f"http://{host}", token=token,
                 body=pause)  # fmt: skip
    assert reply.status == 200, reply
    assert state_of(web) == "paused"
    reply = send(web, "POST", "/api/call/campaign.resume", host=host, token=token, body=pause)
    assert reply.status == 200 and state_of(web) == "running", reply


def test_a_browser_whose_key_leaves_the_allow_list_stops_hearing_events(web: Web) -> None:
    host = f"127.0.0.1:{web.port}"
    since = web.service.call(m.EventsSince(seq=0, limit=1)).last
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=60)
    try:
        connection.request(
            "GET", f"/api/events?since={since}",
            headers={"Host": host, "Authorization": f"Bearer {web.tokens['leaver']}"},
        )  # fmt: skip
        stream = connection.getresponse()
        assert stream.status == 200

        def next_event() -> dict[str, object] | None:
            """The next event on the stream, None when the stream ends."""
            while True:
                line = stream.readline()
                if not line:
                    return None
                if line.startswith(b"data: "):
                    event: dict[str, object] = json.loads(line[6:])
                    return event

        web.service.call(m.EStop(reason="heard"))
        web.service.call(m.ClearEStop())
        heard = next_event()
        assert heard is not None and heard["topic"] == "lab.estop"
        assert main(["keys", "remove", "leaver", "--keys", str(web.allow_list)]) == 0
        removed_at = web.service.call(m.EventsSince(seq=0, limit=1)).last
        web.service.call(m.EStop(reason="not for the leaver"))
        web.service.call(m.ClearEStop())
        while (event := next_event()) is not None:  # the stream ends at its next event
            assert int(str(event["seq"])) <= removed_at, f"the removed key heard {event}"
    finally:
        connection.close()


def test_which_hosts_a_dashboard_answers_to() -> None:
    loopback = AllowedHosts.of("127.0.0.1", ["lab.example.org"])
    for host in ("127.0.0.1:8080", "127.0.0.2", "localhost:8080", "LocalHost.", "[::1]:8080",
                 "lab.example.org", "LAB.example.org:443"):  # fmt: skip
        assert loopback.accepts(host), host
    for host in (None, "", ":8080", "rebind.example:8080", "localhost.rebind.example", "10.0.0.7:8080",
                 "lab.example.org.evil", "example.org", "x" * 300):  # fmt: skip
        assert not loopback.accepts(host), host
    wildcard = AllowedHosts.of("0.0.0.0", ["lab.example.org"])
    assert wildcard.accepts("10.0.0.7:8443") and wildcard.accepts("[fe80::1]:8443")
    assert wildcard.accepts("lab.example.org") and not wildcard.accepts("localhost")
    assert not wildcard.accepts("rebind.example:8443")
    bound = AllowedHosts.of("10.0.0.7")
    assert bound.accepts("10.0.0.7:8443") and not bound.accepts("10.0.0.8:8443")
    assert not bound.accepts("127.0.0.1:8443") and not bound.accepts("localhost")
    named = AllowedHosts.of("lab-pc.example")  # --http lab-pc.example:8443: that name is configured
    assert named.accepts("lab-pc.example:8443") and not named.accepts("other.example")
