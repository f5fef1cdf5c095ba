"""Keys as they change under a running service, and refusals in numbers: a key removed from the allow-list by
editing the file stops hearing events at once however busy the service is, and a flood of connections with
unknown keys fills the audit log with a summary, not one line each."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from test_daemon import lab_file, service_process

from sdl.access.keys import KeyFileError, KeyRing, generate, read_public
from sdl.access.owner import owner_entry, owner_name, owner_token
from sdl.access.refusals import Refusal, RefusalThrottle
from sdl.access.tokens import TokenFile
from sdl.api import models as m
from sdl.api.models import ApiError
from sdl.cli import main
from sdl.client import Client, Credentials
from sdl.store import Store
from sdl.testing import LabServiceProcess, wait_for

ROLES = {"boss": "admin", "ana": "viewer", "leaver": "viewer"}


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    ring = KeyRing(directory / "keys.yaml")
    for name, role in ROLES.items():
        public, _ = generate(directory, name)
        ring.add(name, read_public(public), role)
    return directory


@pytest.fixture
def lab(tmp_path: Path, keys: Path) -> Iterator[LabServiceProcess]:
    service = service_process(
        lab_file(tmp_path), tmp_path / "data", "--curve", "--keys", str(keys / "keys.yaml")
    )
    service.start()
    yield service
    if service.process is not None and service.process.poll() is None:
        assert service.stop() == 0, service.log_text()
    service.assert_nothing_left()


def credentials(lab: LabServiceProcess, keys: Path, name: str) -> Credentials:
    found = Credentials.load(keys / f"{name}.key_secret", lab.data_dir / "keys" / "server.key")
    assert found is not None
    return found


def client(lab: LabServiceProcess, keys: Path, name: str) -> Client:
    return Client(lab.address, credentials=credentials(lab, keys, name), timeout=30)


def test_a_key_removed_by_editing_the_allow_list_hears_nothing_more_while_others_are_busy(
    lab: LabServiceProcess, keys: Path
) -> None:
    """Any request refreshes the allow-list; whichever notices the edit first, the removed key's event
    subscription is dropped before anything else is published."""
    context = zmq.Context()
    busy_stop = threading.Event()
    busy_calls = [0]

    def busy() -> None:
        with client(lab, keys, "ana") as ana:
            while not busy_stop.is_set():
                ana.call(m.Status())
                busy_calls[0] += 1

    busy_thread = threading.Thread(target=busy, name="busy-viewer")
    leaver = context.socket(zmq.SUB)
    leaver.setsockopt(zmq.LINGER, 0)
    leaver.setsockopt(zmq.SUBSCRIBE, b"")
    credentials(lab, keys, "leaver").apply(leaver)
    try:
        with client(lab, keys, "boss") as boss, client(lab, keys, "leaver") as leaver_api:
            leaver.connect(boss.events_address())
            assert leaver_api.call(m.WhoAmI()).name == "leaver"  # connected before its removal

            def heard_by_the_leaver() -> bool:
                boss.call(m.EStop(reason="before"))
                boss.call(m.ClearEStop())
                return leaver.poll(500) > 0  # the subscription may still be connecting: publish again

            wait_for(heard_by_the_leaver, 60, "the leaver to hear events")
            busy_thread.start()
            wait_for(lambda: busy_calls[0] >= 20, 60, "the other client to be busy")

            assert main(["keys", "remove", "leaver", "--keys", str(keys / "keys.yaml")]) == 0

            def removal_applied() -> bool:
                try:
                    leaver_api.call(m.WhoAmI())
                except ApiError as exc:
                    return "removed from the allow-list" in str(exc)
                return False

            wait_for(removal_applied, 60, "the service to apply the removal")
            while leaver.poll(0):  # what it heard before the removal was applied
                leaver.recv_multipart()
            calls_before = busy_calls[0]
            since = boss.call(m.EventsSince(seq=0, limit=1)).last
            for _ in range(5):
                boss.call(m.EStop(reason="after"))
                boss.call(m.ClearEStop())
            after = [
                e for e in boss.call(m.EventsSince(seq=since, limit=100)).events if e.topic == "lab.estop"
            ]
            assert len(after) == 10
            wait_for(lambda: busy_calls[0] > calls_before + 20, 60, "the other client still busy")
            heard = []
            while leaver.poll(1000):
                heard.append(json.loads(leaver.recv_multipart()[1]))
            assert [e for e in heard if e["seq"] > since] == [], "the removed key still hears events"
    finally:
        busy_stop.set()
        if busy_thread.is_alive():
            busy_thread.join(timeout=60)
        leaver.close(linger=0)
        context.term()


def test_a_hundred_unknown_keys_make_one_refusal_and_a_summary_in_the_audit_log(
    lab: LabServiceProcess, keys: Path
) -> None:
    """Refusals are throttled per source address, not per key: a key costs nothing to make."""
    server_key = read_public(lab.data_dir / "keys" / "server.key").encode()
    for _ in range(100):
        public, secret = zmq.curve_keypair()
        stranger = Credentials(public, secret, server_key)
        with Client(lab.address, credentials=stranger, timeout=30) as him, pytest.raises(ApiError) as refused:
            him.call(m.Status())
        assert "not on its allow-list" in str(refused.value)
    assert lab.stop() == 0, lab.log_text()
    with Store(lab.data_dir, read_only=True) as store:
        refusals = [e for e in store.audit_log(action="connect.api") if "unknown key" in e.result]
    assert len(refusals) == 2, [(e.who, e.result) for e in refusals]
    first, summary = refusals
    assert first.result == "refused: unknown key" and first.origin == "127.0.0.1"
    assert summary.origin == "127.0.0.1"
    assert summary.result.startswith("refused: unknown key (99 more from 127.0.0.1"), summary.result


def test_every_change_of_the_allow_list_reaches_the_listeners_once_whoever_noticed_it(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys.yaml")
    public = {name: read_public(generate(tmp_path, name)[0]) for name in ("a", "b")}
    for name, key in public.items():
        ring.add(name, key, "viewer")
    heard: list[frozenset[str]] = []
    ring.on_change(heard.append)
    KeyRing(tmp_path / "keys.yaml").remove("a")  # another process edits the file (`sdl keys remove`)
    assert ring.by_public_key(public["b"]) is not None  # a lookup notices the change first...
    assert not ring.refresh()  # ... and the watcher finds nothing new, yet the listeners were told
    assert heard == [frozenset({public["a"]})]
    ring.add("c", read_public(generate(tmp_path, "c")[0]), "operator")  # through this ring: told too
    assert heard == [frozenset({public["a"]}), frozenset()]


def test_refusals_are_throttled_per_source_and_summarised_when_the_window_closes() -> None:
    written: list[Refusal] = []
    now = [0.0]
    throttle = RefusalThrottle(written.append, every=60, clock=lambda: now[0])
    for n in range(5):
        throttle.refused(Refusal(f"key {n}", "connect.api", "refused: unknown key", "10.0.0.7"))
    throttle.refused(Refusal("key x", "connect.api", "refused: unknown key", "10.0.0.8"))  # another source
    throttle.refused(Refusal("no key", "connect.api", "refused: no CurveZMQ key", "10.0.0.7"))  # another why
    assert [(r.who, r.origin) for r in written] == [
        ("key 0", "10.0.0.7"),
        ("key x", "10.0.0.8"),
        ("no key", "10.0.0.7"),
    ]
    now[0] = 30.0
    throttle.flush()
    assert len(written) == 3  # the window is still open
    now[0] = 61.0
    throttle.flush()
    [summary] = written[3:]
    assert (summary.who, summary.action, summary.origin) == ("(summary)", "connect.api", "10.0.0.7")
    assert (
        summary.result
        == "refused: unknown key (4 more from 10.0.0.7 in the next 60 s, not listed one by one)"
    )
    throttle.refused(Refusal("key 9", "connect.api", "refused: unknown key", "10.0.0.7"))  # a new window
    assert written[-1].who == "key 9"
    throttle.refused(Refusal("key 10", "connect.api", "refused: unknown key", "10.0.0.7"))
    now[0] = 62.0
    throttle.flush(everything=True)  # at a stop: nothing counted is lost
    assert written[-1].result.startswith("refused: unknown key (1 more from 10.0.0.7 in the next 1 s")


def test_the_allow_list_and_the_tokens_file_are_their_owners_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = KeyRing(tmp_path / "keys.yaml")
    public, secret = generate(tmp_path, "ana")
    assert secret.stat().st_mode & 0o777 == 0o600
    ring.add("ana", read_public(public), "viewer")
    tokens = TokenFile(tmp_path / "tokens.yaml")
    tokens.issue("ana-laptop", secret)
    for path in (ring.path, tokens.path):
        assert path.stat().st_mode & 0o777 == 0o600, path

    ring.path.chmod(0o644)  # as an older version wrote it: used, with a warning
    assert KeyRing(ring.path).entries()["ana"].role.value == "viewer"
    assert "keys.yaml: the allow-list is readable by other accounts (mode 644)" in caplog.text
    ring.path.chmod(0o664)  # others may change it: they could make themselves admin
    with pytest.raises(KeyFileError, match="may be changed by other accounts"):
        KeyRing(ring.path).entries()
    assert main(["daemon", "--lab", str(lab_file(tmp_path)), "--data-dir", str(tmp_path / "data"),
                 "--keys", str(ring.path)]) == 2  # fmt: skip
    assert "may be changed by other accounts" in capsys.readouterr().err
    tokens.path.chmod(0o646)
    with pytest.raises(KeyFileError, match="may be changed by other accounts"):
        TokenFile(tokens.path).lookup("sdl_" + "x" * 43)


def test_the_owners_key_and_token_are_made_once_for_the_owner_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    entry = owner_entry(data)
    assert (entry.name, entry.role.value) == (owner_name(), "admin")
    assert owner_entry(data) == entry  # kept, not made again
    token = owner_token(data)
    assert token.startswith("sdl_") and owner_token(data) == token
    assert (data / "keys").stat().st_mode & 0o777 == 0o700
    for name in ("owner.key_secret", "owner.token"):
        assert (data / "keys" / name).stat().st_mode & 0o777 == 0o600, name
    found = Credentials.load(data_dir=data, server_key=read_public(data / "keys" / "owner.key"))
    assert found is not None and found.public.decode() == entry.public_key
    ring = KeyRing(data / "keys.yaml", owner=entry)
    assert ring.by_public_key(entry.public_key) == entry and len(ring) == 0  # admitted, never listed
