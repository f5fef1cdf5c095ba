"""Who may reach the lab: CurveZMQ keys and roles through the real API of `sdl daemon --curve` (a subprocess),
every refusal typed and in the audit log, and `sdl keys` / `sdl audit` as a user runs them."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
import zmq
from test_daemon import campaign_file, lab_file, running_files, service_process

from sdl.access.keys import KeyRing, generate, read_public
from sdl.api import models as m
from sdl.api.models import ApiError
from sdl.cli import main
from sdl.client import Client, Credentials
from sdl.store import Store
from sdl.testing import LabServiceProcess, wait_for

ROLES = {"boss": "admin", "oleg": "operator", "ana": "viewer", "temp": "operator"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    ring = KeyRing(directory / "keys.yaml")
    for name, role in ROLES.items():
        public, _ = generate(directory, name)
        ring.add(name, read_public(public), role)
    generate(directory, "stranger")  # a valid key pair nobody allowed
    return directory


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, keys: Path) -> Iterator[LabServiceProcess]:
    tmp = tmp_path_factory.mktemp("lab")
    service = service_process(lab_file(tmp), tmp / "data", "--curve", "--keys", str(keys / "keys.yaml"))
    service.start()
    yield service
    if service.process is not None and service.process.poll() is None:
        assert service.stop() == 0, service.log_text()
    service.assert_nothing_left()


def client(lab: LabServiceProcess, keys: Path, name: str | None) -> Client:
    server_key = lab.data_dir / "keys" / "server.key"
    credentials = None if name is None else Credentials.load(keys / f"{name}.key_secret", server_key)
    return Client(lab.address, credentials=credentials, timeout=20)


def audit(lab: LabServiceProcess, keys: Path, **filters: object) -> list[m.AuditEntry]:
    with client(lab, keys, "boss") as boss:
        return boss.call(m.ListAudit(**filters)).entries


def test_no_key_is_refused_with_a_typed_error_and_audited(lab: LabServiceProcess, keys: Path) -> None:
    with client(lab, keys, None) as nobody, pytest.raises(ApiError) as refused:
        nobody.call(m.Status())
    assert refused.value.error.type == "unauthenticated"
    assert "no key" in str(refused.value) and "--key" in str(refused.value)
    entries = wait_for(
        lambda: audit(lab, keys, action="connect.api", who="no key"), what="the refusal audited"
    )
    assert entries[-1].result.startswith("refused: no CurveZMQ key")


def test_an_unknown_key_is_refused_with_a_typed_error_and_audited(lab: LabServiceProcess, keys: Path) -> None:
    stranger = read_public(keys / "stranger.key")
    with client(lab, keys, "stranger") as him, pytest.raises(ApiError) as refused:
        him.call(m.Status())
    assert refused.value.error.type == "unauthenticated"
    assert "not on its allow-list" in str(refused.value)
    entries = audit(lab, keys, who=f"key {stranger[:8]}…")
    assert [(e.action, e.result, e.origin) for e in entries] == [
        ("connect.api", "refused: unknown key", "127.0.0.1")
    ]


def test_a_viewer_may_watch_but_not_abort(lab: LabServiceProcess, keys: Path, tmp_path: Path) -> None:
    with client(lab, keys, "oleg") as oleg:
        campaign_id = oleg.submit(campaign_file(tmp_path, "watched", budget=2)).campaign_id
    with client(lab, keys, "ana") as ana:
        assert ana.call(m.WhoAmI()) == m.Identity(
            name="ana", role=m.Role.VIEWER, origin="127.0.0.1", curve=True
        )
        assert ana.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.submitted_by == "oleg"
        with pytest.raises(ApiError) as refused:
            ana.call(m.AbortCampaign(campaign_id=campaign_id))
    assert refused.value.error.type == "forbidden"
    assert str(refused.value) == "viewer 'ana' may not campaign.abort; needs operator"
    [entry] = audit(lab, keys, who="ana")
    assert (entry.action, entry.target, entry.origin) == ("campaign.abort", campaign_id, "127.0.0.1")
    assert entry.result == "refused: viewer 'ana' may not campaign.abort; needs operator"


def test_a_key_removed_while_connected_is_refused_from_its_next_request(
    lab: LabServiceProcess, keys: Path
) -> None:
    with client(lab, keys, "temp") as temp:
        assert temp.call(m.WhoAmI()).role is m.Role.OPERATOR
        assert main(["keys", "remove", "temp", "--keys", str(keys / "keys.yaml")]) == 0
        with pytest.raises(ApiError) as refused:
            temp.call(m.Status())  # the same connection, opened while the key was allowed
    assert refused.value.error.type == "unauthenticated"
    assert (
        str(refused.value)
        == "key 'temp' was removed from the allow-list; this connection may do nothing more"
    )
    [entry] = audit(lab, keys, who="temp")
    assert entry.action == "status" and entry.result.startswith("refused: key 'temp' was removed")
    # ... and a new connection with it does not get past the handshake
    with client(lab, keys, "temp") as temp, pytest.raises(ApiError, match="not on its allow-list"):
        temp.call(m.Status())


def test_an_operators_abort_works_and_is_audited_with_the_operators_name(
    lab: LabServiceProcess, keys: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    path = campaign_file(
        tmp_path, "aborted", budget=6, function="daemon_procedures:gated", options={"gate": str(gate)}
    )
    with client(lab, keys, "oleg") as oleg:
        campaign_id = oleg.submit(path).campaign_id
        wait_for(lambda: running_files(gate) == 2, what="two experiments running")
        assert oleg.call(m.AbortCampaign(campaign_id=campaign_id, reason="wrong bottle")).state == "aborting"
        (gate / "open").write_text("")
        summary = wait_for(
            lambda: (
                (c := oleg.call(m.ShowCampaign(campaign_id=campaign_id)).campaign).status != "running" and c
            ),
            what="the campaign to end",
        )
    assert summary.stop_reason == "wrong bottle (oleg)"
    entries = audit(lab, keys, action="campaign.abort", refused=False)
    assert [(e.who, e.target, e.result, e.origin) for e in entries] == [
        ("oleg", campaign_id, "ok", "127.0.0.1")
    ]


def test_an_operator_may_always_e_stop_but_only_an_admin_clears_it(
    lab: LabServiceProcess, keys: Path
) -> None:
    with client(lab, keys, "oleg") as oleg, client(lab, keys, "boss") as boss:
        oleg.call(m.EStop(reason="smoke"))
        assert boss.call(m.Status()).estop.by == "oleg"
        with pytest.raises(ApiError, match=re.escape("operator 'oleg' may not lab.clear_estop; needs admin")):
            oleg.call(m.ClearEStop())
        boss.call(m.ClearEStop())
        assert not boss.call(m.Status()).estop.active


def test_events_need_a_key_too(lab: LabServiceProcess, keys: Path) -> None:
    """A subscriber with an allowed key gets the events; one without a key gets nothing."""
    context = zmq.Context()
    bare = context.socket(zmq.SUB)
    bare.setsockopt(zmq.SUBSCRIBE, b"")
    bare.connect(json.loads((lab.data_dir / "daemon.json").read_text())["events"])
    try:
        with client(lab, keys, "ana") as ana, client(lab, keys, "oleg") as oleg:
            since = ana.call(m.EventsSince(seq=0, limit=1)).last
            stream = ana.events(since, idle_timeout=20)
            oleg.call(m.EStop(reason="for the event"))
            event = next(stream)
            assert (event.topic, event.body["by"]) == ("lab.estop", "oleg")
            with client(lab, keys, "boss") as boss:
                boss.call(m.ClearEStop())
            stream.close()
        assert not bare.poll(200)
    finally:
        bare.close(linger=0)
        context.term()


def test_admins_manage_keys_through_the_api(lab: LabServiceProcess, keys: Path, tmp_path: Path) -> None:
    public, _ = generate(tmp_path, "newbie")
    with client(lab, keys, "boss") as boss, client(lab, keys, "oleg") as oleg:
        with pytest.raises(ApiError, match=re.escape("operator 'oleg' may not keys.add; needs admin")):
            oleg.call(m.AddKey(name="newbie", public_key=read_public(public), key_role=m.Role.VIEWER))
        boss.call(m.AddKey(name="newbie", public_key=read_public(public), key_role=m.Role.VIEWER))
        assert {k.name: k.role.value for k in boss.call(m.ListKeys()).keys}["newbie"] == "viewer"
    with Client(
        lab.address,
        credentials=Credentials.load(tmp_path / "newbie.key_secret", lab.data_dir / "keys" / "server.key"),
    ) as newbie:
        assert newbie.call(m.WhoAmI()).name == "newbie"


# -- the command line, without a service ---------------------------------------------------------------------


def test_the_daemon_refuses_other_interfaces_without_client_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = lab_file(tmp_path)
    base = ["daemon", "--lab", str(lab), "--data-dir", str(tmp_path / "data")]
    for extra in ([], ["--curve"]):  # CurveZMQ is always on; the flag is still accepted
        assert main([*base, "--api", "tcp://0.0.0.0:0", *extra]) == 2
        err = capsys.readouterr().err
        assert "not a loopback address" in err and "allows no client keys" in err


def test_keys_cli_generates_allows_lists_and_removes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    allow = ["--keys", str(tmp_path / "keys.yaml")]
    assert main(["keys", "generate", "ana", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "ana.key_secret").stat().st_mode & 0o777 == 0o600
    assert main(["keys", "generate", "ana", "--dir", str(tmp_path)]) == 2  # never overwrites a key
    assert main(["keys", "add", "ana", str(tmp_path / "ana.key"), "--role", "operator", *allow]) == 0
    data = yaml.safe_load((tmp_path / "keys.yaml").read_text())
    assert data["keys"]["ana"]["role"] == "operator"
    assert data["keys"]["ana"]["public_key"] == read_public(tmp_path / "ana.key")
    capsys.readouterr()
    assert main(["keys", "list", *allow]) == 0
    assert "ana" in capsys.readouterr().out
    assert main(["keys", "add", "bob", "not-a-key", "--role", "viewer", *allow]) == 2
    assert "not a CurveZMQ key file" in capsys.readouterr().err
    assert main(["keys", "remove", "nobody", *allow]) == 2
    assert main(["keys", "remove", "ana", *allow]) == 0
    assert yaml.safe_load((tmp_path / "keys.yaml").read_text())["keys"] == {}


def test_audit_cli_filters_and_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    with Store(data) as store:
        store.audit(
            "oleg", "campaign.pause", "ok", origin="10.0.0.7", target="c1", arguments={"campaign_id": "c1"}
        )
        store.audit("ana", "campaign.abort", "refused: viewer 'ana' may not campaign.abort; needs operator")
        store.audit("boss", "lab.clear_estop", "ok")
    base = ["audit", "--data-dir", str(data)]
    assert main([*base, "--format", "jsonl", "--action", "campaign."]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["who"], e["action"]) for e in lines] == [("oleg", "campaign.pause"), ("ana", "campaign.abort")]
    assert main([*base, "--format", "csv", "--refused"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == "id,at,who,origin,action,target,result,arguments" and len(rows) == 2
    assert "ana" in rows[1]
    assert main([*base, "--format", "csv", "--who", "oleg", "-o", str(tmp_path / "audit.csv")]) == 0
    assert '"{""campaign_id"": ""c1""}"' in (tmp_path / "audit.csv").read_text()
    assert main([*base, "--refused", "--accepted"]) == 2


def test_a_removed_key_stops_hearing_events(lab: LabServiceProcess, keys: Path, tmp_path: Path) -> None:
    """Removing a key drops every event subscriber; the others reconnect and catch up, it cannot."""
    public, secret = generate(tmp_path, "leaver")
    context = zmq.Context()
    with client(lab, keys, "boss") as boss, client(lab, keys, "ana") as ana:
        boss.call(m.AddKey(name="leaver", public_key=read_public(public), key_role=m.Role.VIEWER))
        credentials = Credentials.load(secret, lab.data_dir / "keys" / "server.key")
        assert credentials is not None
        leaver = context.socket(zmq.SUB)
        leaver.setsockopt(zmq.SUBSCRIBE, b"")
        credentials.apply(leaver)
        leaver.connect(boss.events_address())
        try:
            stream = ana.events(ana.call(m.EventsSince(seq=0, limit=1)).last, idle_timeout=20)

            def estop_heard_by_both(reason: str) -> bool:
                boss.call(m.EStop(reason=reason))
                boss.call(m.ClearEStop())
                return leaver.poll(500) > 0  # the subscription may still be connecting: publish again

            wait_for(lambda: estop_heard_by_both("before"), what="the leaver to hear events")
            while leaver.poll(0):
                leaver.recv_multipart()
            boss.call(m.RemoveKey(name="leaver"))
            boss.call(m.EStop(reason="after"))
            boss.call(m.ClearEStop())
            deadline = time.monotonic() + 60  # fail, never hang, if the stream keeps going without it
            heard = None
            for event in stream:
                if event.topic == "lab.estop" and event.body.get("reason") == "after":
                    heard = event
                    break
                assert time.monotonic() < deadline, "the others never heard the event after the removal"
            assert heard is not None and heard.body["by"] == "boss"
            late = []  # an e-stop clear from before the removal may still be in flight: only "after" counts
            while leaver.poll(500):
                late.append(json.loads(leaver.recv_multipart()[1]))
            assert not [e for e in late if e["seq"] >= heard.seq], late
            stream.close()
        finally:
            leaver.close(linger=0)
            context.term()


def test_an_operators_e_stop_is_taken_even_when_the_service_is_busy() -> None:
    """Every request slot is taken: any other request gets `busy`, the e-stop still runs at once."""
    from sdl.access.roles import Caller
    from sdl.api.server import MAX_CONCURRENT, ApiServer

    async def scenario() -> None:
        release = asyncio.Event()
        audited: list[tuple[str, str, str]] = []

        async def slow(request: m.Request, caller: Caller) -> m.Ok:
            await release.wait()
            return m.Ok()

        async def estop(request: m.Request, caller: Caller) -> m.Ok:
            return m.Ok(message=f"stopped by {caller.name}")

        handlers = {name: (estop if name == "lab.estop" else slow) for name in m.METHODS}
        server = ApiServer(
            None,  # type: ignore[arg-type]  # execute() is the path under test, not the socket
            handlers,
            audit=lambda caller, request, result, _: audited.append((caller.name, request.method, result)),
        )
        oleg, ana = Caller("oleg", m.Role.OPERATOR, "10.0.0.7"), Caller("ana", m.Role.VIEWER, "10.0.0.8")
        pending = [
            asyncio.create_task(server.execute(m.ListCampaigns(), oleg)) for _ in range(MAX_CONCURRENT)
        ]
        while not server._slots.locked():
            await asyncio.sleep(0)
        with pytest.raises(ApiError) as busy:
            await server.execute(m.Status(), oleg)
        assert busy.value.error.type == "busy"
        assert await server.execute(m.EStop(reason="smoke"), oleg) == m.Ok(message="stopped by oleg")
        with pytest.raises(ApiError, match=re.escape("viewer 'ana' may not lab.estop; needs operator")):
            await server.execute(m.EStop(reason="prank"), ana)
        release.set()
        await asyncio.gather(*pending)
        assert audited == [
            ("oleg", "lab.estop", "ok"),
            ("ana", "lab.estop", "refused: viewer 'ana' may not lab.estop; needs operator"),
        ]

    asyncio.run(scenario())


def test_sdl_dashboard_acts_on_the_service_with_the_signed_in_key(
    lab: LabServiceProcess, keys: Path, tmp_path: Path
) -> None:
    """`sdl dashboard --connect` as a process of its own, reaching the CurveZMQ service with a viewer's key:
    anonymous visitors are viewers when asked for; a token acts with its own key, so the service itself
    checks its role and audits it by name."""
    from sdl.access.tokens import TokenFile

    tokens = TokenFile(tmp_path / "tokens.yaml")
    token = tokens.issue("oleg-web", keys / "oleg.key_secret")
    viewer_token = tokens.issue("ana-web", keys / "ana.key_secret")
    log_file = tmp_path / "dashboard.log"
    with client(lab, keys, "oleg") as oleg:
        campaign_id = oleg.submit(campaign_file(tmp_path, "from-the-web", budget=500)).campaign_id
    with log_file.open("wb") as log:
        dashboard = subprocess.Popen(
            [sys.executable, "-m", "sdl", "dashboard", "--connect", lab.address, "--http", "127.0.0.1:0",
             "--key", str(keys / "ana.key_secret"), "--server-key", str(lab.data_dir / "keys" / "server.key"),
             "--tokens", str(tmp_path / "tokens.yaml"), "--data-dir", str(tmp_path / "data"),
             "--anonymous-viewers"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        found = wait_for(
            lambda: re.search(r"dashboard on (http://127\.0\.0\.1:\d+)", log_file.read_text()),
            60,
            "the dashboard's address",
        )
        url = found.group(1)

        def pause(token: str | None) -> tuple[int, dict[str, object]]:
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            request = urllib.request.Request(
                f"{url}/api/call/campaign.pause",
                data=json.dumps({"campaign_id": campaign_id}).encode(),
                headers=headers,
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as reply:
                    return reply.status, json.loads(reply.read())
            except urllib.error.HTTPError as refused:
                return refused.code, json.loads(refused.read())

        status, body = pause(None)
        assert status == 403 and body["error"]["type"] == "forbidden", body  # type: ignore[index]
        status, body = pause(viewer_token)
        assert (status, body["error"]["message"]) == (  # type: ignore[index]
            403,
            "viewer 'ana' may not campaign.pause; needs operator",
        )
        status, body = pause(token)
        assert (status, body["result"]["state"]) == (200, "paused"), body  # type: ignore[index]
        with client(lab, keys, "oleg") as oleg:
            assert oleg.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.state == "paused"
            oleg.call(m.AbortCampaign(campaign_id=campaign_id))
        entries = [e for e in audit(lab, keys, action="campaign.pause") if e.target == campaign_id]
        assert [(e.who, e.result) for e in entries] == [
            ("ana", "refused: viewer 'ana' may not campaign.pause; needs operator"),
            ("oleg", "ok"),
        ]
        assert "refused an anonymous visitor from 127.0.0.1: viewer 'anonymous'" in log_file.read_text()

        # the sign-in URL it printed acts with the dashboard's own key
        sign_in = re.search(r"sign in at (http://\S+)", log_file.read_text())
        assert sign_in is not None and sign_in.group(1).startswith(f"{url}/?token=sdl_")
        connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
        try:
            connection.request("GET", sign_in.group(1).removeprefix(url))
            reply = connection.getresponse()
            reply.read()
            cookie = (reply.getheader("set-cookie") or "").split(";", 1)[0]
            assert (reply.status, reply.getheader("location")) == (303, "/") and cookie.startswith(
                "sdl_token="
            )
            connection.request("GET", "/api/session", headers={"Cookie": cookie})
            session = json.loads(connection.getresponse().read())
        finally:
            connection.close()
        assert session == {"name": "ana", "role": "viewer", "signed_in": True}
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=60)


EXPECTED_ROLES = {
    m.Role.OPERATOR: {
        "campaign.submit", "campaign.pause", "campaign.resume", "campaign.stop", "campaign.abort",
        "campaign.budget", "lab.estop", "inventory.restock", "task.acknowledge", "task.done", "task.cancel",
        "approval.approve", "approval.reject",
    },
    m.Role.ADMIN: {
        "instrument.quarantine", "instrument.release", "lab.clear_estop", "keys.list", "keys.add",
        "keys.remove", "daemon.shutdown",
    },
}  # fmt: skip


def test_every_method_declares_its_role_and_the_api_docs_show_it() -> None:
    """The role lives in each request model (never inherited by accident) and docs/api.md shows it twice:
    in the table of methods and on the method's own section."""
    from sdl.api.docs import render

    docs = render()
    for name, request in m.METHODS.items():
        assert "role" in vars(request), f"{request.__name__} must declare its role"
        expected = next((r for r, names in EXPECTED_ROLES.items() if name in names), m.Role.VIEWER)
        assert request.role is expected, name
        assert f"| [`{name}`](#{name.replace('.', '')}) | {expected.value} |" in docs
        assert f"### `{name}`\n\nRole: **{expected.value}**." in docs
