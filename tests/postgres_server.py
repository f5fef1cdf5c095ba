"""A throwaway PostgreSQL server for the tests: its own cluster in a temporary directory, on a free port.

Started once per test session when a test asks for it (the ``postgres`` fixture in conftest.py), stopped
and deleted at the end. Without Debian's ``postgresql`` package (initdb, pg_ctl) its tests are skipped
with the reason; under CI (``CI=true``), where .ci/run installs the package, they fail instead.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "test"


def binaries() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def why_not() -> str | None:
    """Why no server can be started here (None: one can)."""
    if binaries() is None:
        return "PostgreSQL's initdb and pg_ctl are not installed (Debian: apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgresql]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One cluster; ``database()`` gives each test a new, empty database's URL."""

    def __init__(self, *, durable: bool = False) -> None:
        """``durable``: flush commits to disk as a production server does (tests need not wait for it)."""
        bin_dir = binaries()
        assert bin_dir is not None, why_not()
        self._bin = bin_dir
        # Not under pytest's own temporary directory: as root the server runs as `postgres`, which must
        # reach its directory (pytest's is its owner's alone).
        self.dir = Path(tempfile.mkdtemp(prefix="sdl-pg-"))
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(self.dir, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._count = 0
        self.port = 0
        self._run("initdb", "-D", str(self.dir / "cluster"), "-U", USER, "--auth=trust", "-E", "UTF8")
        for _ in range(3):  # another process may take the free port before the server does
            self.port = _free_port()
            options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
            if not durable:
                options += " -c fsync=off"
            started = self._run(
                "pg_ctl", "-D", str(self.dir / "cluster"), "-l", str(self.dir / "log"), "-o", options,
                "-w", "start", check=False,
            )  # fmt: skip
            if started.returncode == 0:
                return
        log = (self.dir / "log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"the test PostgreSQL server did not start:\n{log}")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as, str(self._bin / tool), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new, empty database: its URL."""
        import psycopg

        self._count += 1
        name = f"t{self._count}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run("pg_ctl", "-D", str(self.dir / "cluster"), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
