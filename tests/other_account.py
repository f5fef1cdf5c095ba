"""Run as another account on the lab's machine (by tests/test_access_accounts.py): try every way to read or
control the lab service whose data directory is ``argv[1]``, and print what happened as one JSON object.

It knows what any account on the machine can know: the data directory's path, and what daemon.json says (the
addresses and the service's public key). It waits for "go" on stdin before it looks at what its event
subscriptions heard, so the test can first make sure events were published."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import sys
from pathlib import Path
from typing import Any

import zmq

from sdl.api import models as m
from sdl.api.models import ApiError
from sdl.cli import main
from sdl.client import Client, Credentials


def read(path: Path) -> str:
    try:
        path.read_bytes()
    except PermissionError:
        return "denied"
    except FileNotFoundError:
        return "missing"
    return "read"


def cli(*args: str) -> dict[str, Any]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([*args, "--data-dir", DATA])
    return {"code": code, "err": err.getvalue()[-400:]}


def call(client: Client, request: m.Request) -> str:
    try:
        client.call(request)
    except ApiError as exc:
        return f"{exc.error.type}: {exc}"
    except Exception as exc:  # reported, not raised: the report is what the test judges
        return f"{type(exc).__name__}: {exc}"
    return "answered"


def web(method: str, path: str, body: object = None, token: str | None = None) -> dict[str, Any]:
    host, port = str(INFO["http"]).removeprefix("http://").rsplit(":", 1)
    headers = {"Host": f"{host}:{port}", "Origin": f"http://{host}:{port}"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        text = response.readline() if path.startswith("/api/events") else response.read()
        return {
            "status": response.status,
            "cookie": response.getheader("set-cookie"),
            "body": text.decode(errors="replace")[:300],
        }
    finally:
        connection.close()


DATA = sys.argv[1]
CAMPAIGN = sys.argv[2]
INFO: dict[str, Any] = json.loads((Path(DATA) / "daemon.json").read_text())


def main_() -> None:
    data = Path(DATA)
    out: dict[str, Any] = {"files": {}}
    for name in ("keys/owner.key_secret", "keys/owner.token", "keys/server.key_secret", "keys.yaml",
                 "tokens.yaml"):  # fmt: skip
        out["files"][name] = read(data / name)

    # the command line, as a user of this account would run it
    out["cli"] = {
        "status": cli("status"),
        "campaigns": cli("watch", CAMPAIGN),
        "audit": cli("audit", "--connect", str(INFO["api"])),
        "estop": cli("estop", "--reason", "from another account"),
        "pause": cli("pause", CAMPAIGN),
    }

    # the Python client: without a key (none readable here), and with a key of its own nobody allowed
    found = Credentials.load(data_dir=data)
    out["credentials_found"] = found is not None
    server = str(INFO.get("server_key") or zmq.curve_keypair()[0].decode()).encode()  # a key as good as any
    public, secret = zmq.curve_keypair()
    out["client"] = {}
    for label, credentials in (("no key", None), ("own key", Credentials(public, secret, server, "mine"))):
        with Client(str(INFO["api"]), credentials=credentials, timeout=15) as client:
            out["client"][label] = {
                "status": call(client, m.Status()),
                "experiments": call(client, m.ListExperiments(campaign_id=CAMPAIGN)),
                "estop": call(client, m.EStop(reason="from another account")),
            }

    # a raw 0MQ request, as any program could send it
    context = zmq.Context()
    raw = context.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(str(INFO["api"]))
    raw.send_multipart(
        [b"", json.dumps({"method": "lab.estop", "id": 1, "params": {"reason": "raw"}}).encode()]
    )
    out["raw_reply"] = bool(raw.poll(3000))

    # the event stream: subscribed with no key and with its own key
    subscribers = {}
    for label, key in (("no key", None), ("own key", (public, secret))):
        subscriber = context.socket(zmq.SUB)
        subscriber.setsockopt(zmq.LINGER, 0)
        subscriber.setsockopt(zmq.SUBSCRIBE, b"")
        if key is not None:
            subscriber.curve_publickey, subscriber.curve_secretkey = key
            subscriber.curve_serverkey = server
        subscriber.connect(str(INFO["events"]))
        subscribers[label] = subscriber

    # the dashboard over HTTP
    pause = {"campaign_id": CAMPAIGN}
    out["web"] = {
        "page": web("GET", "/"),
        "session": web("GET", "/api/session"),
        "status": web("POST", "/api/call/status", {}),
        "experiments": web("POST", "/api/call/experiments.list", pause),
        "audit": web("POST", "/api/call/audit.list", {}),
        "events": web("GET", "/api/events?since=0"),
        "export": web("GET", f"/api/export/{CAMPAIGN}.csv"),
        "pause": web("POST", "/api/call/campaign.pause", pause),
        "estop": web("POST", "/api/call/lab.estop", {"reason": "from another account"}),
        "guessed sign-in": web("GET", "/?token=sdl_" + "A" * 43),
        "guessed bearer": web("POST", "/api/call/status", {}, token="sdl_" + "A" * 43),
    }

    print(json.dumps({"ready": True}), flush=True)
    assert sys.stdin.readline().strip() == "go"
    out["heard"] = {label: 0 for label in subscribers}
    for label, subscriber in subscribers.items():
        while subscriber.poll(1000):
            subscriber.recv_multipart()
            out["heard"][label] += 1
        subscriber.close(linger=0)
    raw.close(linger=0)
    context.term()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main_()
