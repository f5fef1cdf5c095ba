"""Another account on the lab's machine can neither read nor control the lab: not through the 0MQ API, the
event stream, the command line, the Python client or the web dashboard, on loopback, where the owner needs
no setup at all.

The test makes a throwaway account (``useradd``, as root), runs tests/other_account.py as that account
(``setpriv``), and checks what it reports. It needs root; outside CI it is skipped with the reason when not
root, and under CI it fails instead."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_daemon import ROOT, TESTS, campaign_file, lab_file

from sdl.access.keys import KeyRing, generate, read_public
from sdl.access.tokens import TokenFile
from sdl.api import models as m
from sdl.testing import LabServiceProcess, wait_for


@dataclass
class Account:
    name: str
    uid: int
    gid: int
    python: str
    home: Path

    def command(self, *args: str) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", self.python, *args]

    @property
    def env(self) -> dict[str, str]:
        paths = [str(ROOT), str(TESTS), *site.getsitepackages()]
        return {"PATH": "/usr/bin:/bin", "HOME": str(self.home), "PYTHONPATH": os.pathsep.join(paths)}


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI runs this test as root")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def shared() -> Iterator[Path]:
    """A directory other accounts may enter (pytest's own temporary directories are root's alone)."""
    directory = Path(tempfile.mkdtemp(prefix="sdl-accounts-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def stranger(shared: Path) -> Iterator[Account]:
    if os.geteuid() != 0:
        unavailable("needs root, to make a second account (useradd) and run a client as it (setpriv)")
    if not (shutil.which("useradd") and shutil.which("userdel") and shutil.which("setpriv")):
        unavailable("needs useradd, userdel and setpriv")
    name = f"sdlprobe{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        uid, gid = (int(subprocess.check_output(["id", flag, name])) for flag in ("-u", "-g"))
        home = shared / "home"
        home.mkdir(mode=0o700)
        os.chown(home, uid, gid)
        for python in dict.fromkeys([sys.executable, os.path.realpath(sys.executable), "/usr/bin/python3"]):
            account = Account(name, uid, gid, python, home)
            probe = subprocess.run(
                account.command("-c", "import zmq, pydantic, sdl.cli"), env=account.env, capture_output=True
            )
            if probe.returncode == 0:
                break
        else:
            unavailable(f"no Python interpreter with this project's packages that account {name} may run")
        yield account
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture(scope="module")
def lab(shared: Path) -> Iterator[tuple[LabServiceProcess, str]]:
    """The lab service on loopback with its dashboard, started with no setup at all, in a data directory
    other accounts may enter (as on a shared lab PC), with a finished campaign in its record."""
    data = shared / "data"
    data.mkdir(mode=0o755)
    public, secret = generate(shared / "ana", "ana")  # someone else's key, allowed, with a sign-in token
    KeyRing(data / "keys.yaml").add("ana", read_public(public), "viewer")
    TokenFile(data / "tokens.yaml").issue("ana-laptop", secret)
    service = LabServiceProcess(lab_file(shared), data, "--http", "127.0.0.1:0", pythonpath=[TESTS, ROOT])
    with service.start():
        with service.client() as owner:
            campaign_id = owner.submit(campaign_file(shared, "owned", budget=2)).campaign_id
            wait_for(
                lambda: owner.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.status != "running",
                120,
                "the campaign to finish",
            )
        yield service, campaign_id
        assert service.stop() == 0, service.log_text()


def test_another_account_can_neither_read_nor_control_the_lab(
    lab: tuple[LabServiceProcess, str], stranger: Account
) -> None:
    service, campaign_id = lab
    with subprocess.Popen(
        stranger.command(str(TESTS / "other_account.py"), str(service.data_dir), campaign_id),
        env=stranger.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as probe:
        assert probe.stdin is not None and probe.stdout is not None and probe.stderr is not None
        line = probe.stdout.readline()
        if not json.loads(line or "{}").get("ready"):
            probe.kill()
            pytest.fail(f"the other account's probe failed: {line}{probe.stderr.read()}")
        # events published now, heard by the owner's own subscription: the other account must hear none
        with service.client() as owner:
            since = owner.call(m.EventsSince(seq=0, limit=1)).last
            heard = owner.events(since, idle_timeout=30)
            owner.call(m.EStop(reason="only the owner hears this"))
            owner.call(m.ClearEStop())
            assert next(heard).topic == "lab.estop"
            heard.close()
        out, err = probe.communicate("go\n", timeout=120)
    assert probe.returncode == 0, err
    report = json.loads(out)

    # its secrets are the owner's alone
    assert report["files"] == {
        "keys/owner.key_secret": "denied",
        "keys/owner.token": "denied",
        "keys/server.key_secret": "denied",
        "keys.yaml": "denied",
        "tokens.yaml": "denied",
    }
    assert report["credentials_found"] is False

    # the command line and the Python client: refused, with a reason
    for what, result in report["cli"].items():
        assert result["code"] != 0, (what, result)
        assert "no key" in result["err"] or "not on its allow-list" in result["err"], (what, result)
    for label, calls in report["client"].items():
        for what, result in calls.items():
            assert result.startswith("unauthenticated: "), (label, what, result)
    assert report["raw_reply"] is False  # a plain 0MQ request gets no answer at all
    assert report["heard"] == {"no key": 0, "own key": 0}

    # the dashboard: the page itself (no data in it), and nothing else
    web = report["web"]
    assert web["page"]["status"] == 200
    assert json.loads(web["session"]["body"]) == {
        "name": None, "role": None, "signed_in": False, "token_refused": False
    }  # fmt: skip
    for what in ("status", "experiments", "audit", "events", "export", "pause", "estop", "guessed bearer"):
        assert web[what]["status"] == 401, (what, web[what])
        assert campaign_id not in web[what]["body"]
    assert web["guessed sign-in"]["status"] == 303 and web["guessed sign-in"]["cookie"] is None

    # nothing it tried happened, and what it tried is in the audit log
    with service.client() as owner:
        assert not owner.call(m.Status()).estop.active
        assert owner.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.state != "paused"
        refused = owner.call(m.ListAudit(refused=True)).entries
    assert {(e.action, e.result.split(" (")[0]) for e in refused} >= {
        ("connect.api", "refused: no CurveZMQ key"),
        ("connect.api", "refused: unknown key"),
        ("web.signin", "refused: unknown token, or its key is no longer allowed"),
    }
