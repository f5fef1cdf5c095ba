"""Out-of-tree instruments: an installed package's entry points reach `sdl` and `python -m simulators`.

The package below is written to a temporary directory with its own ``.dist-info`` (metadata and
entry points), exactly what ``pip install`` leaves in site-packages, and put on the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sdl.spec.importpaths import UnresolvedImport, resolve_driver
from simulators.base import ConfigError, kinds, simulator_class

PACKAGE = {
    "acme_balance/__init__.py": '''
        """A serial balance: 'W' + CR asks the weight, the reply is '<grams> g' CR LF."""
        from drivers.transport import Transport

        class Balance:
            def __init__(self, name, address):
                self.name, self.transport = name, Transport(address)
            def connect(self):
                self.transport.open()
            def weight_g(self):
                reply = self.transport.exchange(b"W\\r", lambda t: t.read_until(b"\\r\\n"))
                return float(reply.split()[0])
            def destroy(self):
                self.transport.close()

        def make_device(name, address, **options):
            if options:
                raise ValueError(f"{name}: unknown option(s) {sorted(options)}; allowed: none")
            return Balance(name, address)
    ''',
    "acme_balance/sim.py": """
        from simulators.base import Simulator

        class BalanceSimulator(Simulator):
            kind = "acme-balance"
            endpoints = ("serial",)

            async def serve(self, endpoint, stream):
                while True:
                    line = await stream.read_until(b"\\r")
                    self.record(endpoint, line)
                    await stream.send(b"12.34 g\\r\\n")
    """,
    "acme_balance-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: acme-balance\nVersion: 0.1\n",
    "acme_balance-0.1.dist-info/entry_points.txt": """
        [sdl.drivers]
        acme-balance = acme_balance:make_device

        [sdl.simulators]
        acme-balance = acme_balance.sim:BalanceSimulator
    """,
}


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for relative, text in PACKAGE.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for module in [m for m in sys.modules if m.startswith("acme_balance")]:
        del sys.modules[module]


def test_a_driver_is_found_by_its_entry_point_name_or_its_import_path(installed):
    assert resolve_driver("acme-balance").__module__ == "acme_balance"
    assert resolve_driver("acme_balance:make_device") is resolve_driver("acme-balance")
    assert resolve_driver("ne1000") is resolve_driver("drivers.newera:make_device")
    with pytest.raises(UnresolvedImport, match="installed drivers: acme-balance, cavro, ika-rct, ne1000"):
        resolve_driver("acme-scale")


def test_a_simulator_kind_is_found_by_its_entry_point(installed):
    assert "acme-balance" in kinds()
    assert simulator_class("acme-balance").__name__ == "BalanceSimulator"
    with pytest.raises(ConfigError, match="allowed: acme-balance, cavro"):
        simulator_class("acme-scale")


def test_python_m_simulators_serves_the_package_and_its_driver_talks_to_it(installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), os.environ.get("PYTHONPATH", "")])}
    lab = tmp_path / "lab.yaml"
    lab.write_text("instruments:\n  scale: {kind: acme-balance}\n")
    listed = subprocess.run(
        [sys.executable, "-m", "simulators", "endpoints", str(lab)], capture_output=True, text=True, env=env
    )
    assert listed.returncode == 0 and listed.stdout.split() == ["scale.serial", "bench.hands"], listed.stderr
    server = subprocess.Popen(
        [sys.executable, "-m", "simulators", "acme-balance", "--exit-with-parent"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        endpoint, url = server.stdout.readline().split()
        assert endpoint == "serial"
        balance = resolve_driver("acme-balance")("scale", url)
        balance.connect()
        try:
            assert balance.weight_g() == 12.34
        finally:
            balance.destroy()
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert server.returncode == 0, stderr
