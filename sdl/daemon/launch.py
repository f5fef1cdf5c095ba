"""The lab service as a child process: start `sdl daemon`, wait until it listens, talk to it, stop or kill
it, and check that nothing it started is left behind (`sdl demo --lab-service`, tests, benchmarks). No
sleeps as synchronisation: every wait polls a condition with a deadline.

    with LabServiceProcess(Path("lab.yaml"), tmp_path / "data", pythonpath=[my_procedures]).start() as lab:
        campaign_id = lab.client().submit(Path("campaign.yaml")).campaign_id
        wait_for(lambda: lab.call(ShowCampaign(campaign_id=campaign_id)).campaign.status != "running")
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sdl.api.client import Client, Credentials

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 60.0, what: str = "the condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (workers, the simulator), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in out:
                out.add(child)
                stack.append(child)
    return out


def end(pids: set[int], grace: float = 10.0) -> None:
    """End the processes ``pids``: SIGTERM to those whose parent is not among them (a lab service then stops
    its own workers and proposer), and SIGKILL to every one still alive after ``grace`` seconds."""
    roots = {pid for pid in pids if _parent(pid) not in pids}
    for signum, targets in ((signal.SIGTERM, roots), (signal.SIGKILL, pids)):
        for pid in targets:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signum)
        deadline = time.monotonic() + grace
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class LabServiceProcess:
    """`sdl daemon` in a subprocess, on free ports, with its own data directory.

    ``pythonpath``: directories the service and its workers import procedures from.
    """

    def __init__(
        self,
        lab: Path,
        data_dir: Path,
        *extra: str,
        pythonpath: Sequence[Path] = (),
        env: dict[str, str] | None = None,
        name: str = "daemon",
        wrap: Sequence[str] = (),
    ) -> None:
        """``name``: its log's (DATA_DIR-NAME.log beside the data directory; a standby needs its own);
        ``wrap``: a command it runs under (``unshare --uts ...``, to stand on a host of its own)."""
        self.lab = lab
        self.data_dir = data_dir
        self.extra = extra
        paths = [str(p) for p in pythonpath] + [
            p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p
        ]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{data_dir.name}-{name}.log"
        self.wrap = list(wrap)
        self.known: set[int] = set()

    def __enter__(self) -> LabServiceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
        self.assert_nothing_left()

    def start(self, timeout: float = 90.0, *, wait: bool = True) -> LabServiceProcess:
        """Start it, and wait until it serves (``wait``; a standby serves only once it took the lab over:
        see :meth:`serving`)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        info = self.data_dir / "daemon.json"  # ready when it names this process (never removed here: it
        # may be another service's, which this one will be refused beside)
        command = [
            *self.wrap,
            sys.executable, "-m", "sdl", "daemon", "--lab", str(self.lab), "--data-dir", str(self.data_dir),
            "--api", "tcp://127.0.0.1:0", "--events", "tcp://127.0.0.1:0", "--documents", "tcp://127.0.0.1:0",
            *self.extra,
        ]  # fmt: skip
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the child, closed when it is reaped
        self.process = subprocess.Popen(command, stdout=log, stderr=log, env=self.env)
        log.close()
        if not wait:
            return self
        try:
            wait_for(lambda: self._ready(info), timeout, f"the lab service to start (log: {self.log})")
        except BaseException:  # it did not start, or Ctrl-C or SIGTERM came: nothing outlives us
            end(self.family())
            self.process.wait()
            raise
        return self

    def serving(self) -> bool:
        """Whether it serves the lab now (daemon.json names it); raises if it exited."""
        return self._ready(self.data_dir / "daemon.json")

    def _ready(self, info: Path) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"sdl daemon exited with {self.process.returncode}:\n{self.log_text()}")
        try:
            return json.loads(info.read_text())["pid"] == self.process.pid
        except (OSError, ValueError, KeyError):
            return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def address(self) -> str:
        return str(json.loads((self.data_dir / "daemon.json").read_text())["api"])

    def client(self, **kwargs: Any) -> Client:
        """A client of this service, with the key its owner has (this account's, found in the data
        directory) unless ``credentials`` says otherwise."""
        kwargs.setdefault("data_dir", self.data_dir)
        return Client(self.address, **kwargs)

    def credentials(self) -> Credentials:
        """The owner's key, as the command line finds it (for a socket of one's own: ``.apply(socket)``)."""
        found = Credentials.load(data_dir=self.data_dir)
        assert found is not None, f"no owner's key in {self.data_dir}"
        return found

    def sign_in_url(self, timeout: float = 60.0) -> str:
        """The dashboard's sign-in URL, as the service printed it (with --http)."""
        pattern = re.compile(r"sign in at (\S+/\?token=\S+)")
        found = wait_for(
            lambda: pattern.findall(self.log_text(whole=True)), timeout, f"the sign-in URL in {self.log}"
        )
        return str(found[-1])

    def call(self, request: Any) -> Any:
        with self.client() as client:
            return client.call(request)

    def family(self) -> set[int]:
        """The service and what it started; remembered, to check later that none outlived it."""
        family = {self.pid} | descendants(self.pid)
        self.known |= family
        return family

    def kill9(self) -> None:
        self.family()
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM, wait for the exit code."""
        assert self.process is not None
        self.family()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def assert_nothing_left(self, timeout: float = 30.0) -> None:
        wait_for(
            lambda: not any(alive(p) for p in self.known), timeout, "every process the service started to end"
        )

    def log_text(self, *, whole: bool = False) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text if whole else text[-6000:]
