"""Drivers over rfc2217:// — a remote serial port, as a terminal server or ser2net offers one.

The NE-1000 simulator serves a pseudo-terminal; pyserial's own RFC 2217 port manager bridges it
to a TCP port the way a terminal server bridges a real RS-232 line; the unchanged driver opens
``rfc2217://127.0.0.1:PORT``. RFC 2217 links have no descriptor to wait on, so this also covers
the transport's polling path.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import serial
import serial.rfc2217

from drivers.newera import NE1000Line, NE1000Pump
from drivers.newera.ne1000 import PumpStatus
from simulators.clock import ScaledClock
from simulators.testing import run_simulator


class _PtyAsSerialLine(serial.Serial):
    """A pty has no modem-control lines; report them as a null-modem cable to a UART would."""

    cts = dsr = cd = True
    ri = False

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    def _update_break_state(self) -> None:
        pass


class _Bridge:
    """One RFC 2217 client connection relayed to a local serial port (pyserial's redirector, trimmed)."""

    def __init__(self, port: serial.SerialBase, connection: socket.socket):
        self.port, self.connection = port, connection
        self._lock = threading.Lock()
        self.manager = serial.rfc2217.PortManager(port, self)
        self.alive = True

    def write(self, data: bytes) -> None:  # PortManager answers option negotiation through this
        with self._lock:
            self.connection.sendall(data)

    def serial_to_network(self) -> None:
        while self.alive:
            try:
                data = self.port.read(self.port.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError):
                return
            if data:
                self.write(b"".join(self.manager.escape(data)))

    def network_to_serial(self) -> None:
        while self.alive:
            try:
                data = self.connection.recv(1024)
            except OSError:
                data = b""
            if not data:
                self.alive = False
                return
            self.port.write(b"".join(self.manager.filter(data)))


@contextmanager
def rfc2217_server(device: str) -> Iterator[str]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = _PtyAsSerialLine(device, timeout=0.05)
    bridges: list[_Bridge] = []
    threads: list[threading.Thread] = []

    def accept() -> None:
        connection, _ = listener.accept()
        bridge = _Bridge(port, connection)
        bridges.append(bridge)
        for target in (bridge.serial_to_network, bridge.network_to_serial):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"rfc2217://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        for bridge in bridges:
            bridge.alive = False
            bridge.connection.close()
        listener.close()
        acceptor.join(timeout=5)
        for thread in threads:
            thread.join(timeout=5)
        port.close()


# pyserial 3.5's rfc2217 client starts its reader with Thread.setDaemon() and setName(),
# deprecated since Python 3.10; harmless, but an error under our strict warning filter.
@pytest.mark.filterwarnings("ignore:setDaemon\\(\\) is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:setName\\(\\) is deprecated:DeprecationWarning")
def test_ne1000_driver_over_an_rfc2217_remote_serial_port():
    with (
        run_simulator("ne1000", link="pty", clock=ScaledClock(200)) as sim,
        rfc2217_server(sim.url("pump")) as url,
    ):
        line = NE1000Line.connect(url)
        try:
            pump = NE1000Pump(line, 0, diameter_mm=14.57, syringe_volume_ul=10000, max_rate_ul_min=5000)
            pump.configure()
            assert pump.firmware().model.startswith("NE")
            pump.infuse(100.0, 2000.0)  # 3 simulated seconds
            pump.wait_until_stopped(timeout=10)
            assert pump.status() is PumpStatus.STOPPED
            assert pump.dispensed().infused_ul == 100.0
        finally:
            line.close()
