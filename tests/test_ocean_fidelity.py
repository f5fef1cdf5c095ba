"""Fidelity: seabreeze's own HDX client (pyseabreeze over TCP), unchanged, against the ocean-hdx simulator.

``SeaBreezeAPI()`` starts its USB transport and needs libusb, so, as a network-only user would, we
register the simulator's address on ``IPv4Transport`` (what ``add_ipv4_device_location`` does) and
open the device through ``seabreeze.spectrometers.Spectrometer``.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import numpy as np
import pytest
import seabreeze
import seabreeze.backends
from seabreeze.pyseabreeze.devices import SeaBreezeDevice
from seabreeze.pyseabreeze.transport import IPv4Transport, IPv4TransportHandle
from seabreeze.spectrometers import SeaBreezeError, Spectrometer

from simulators.clock import ScaledClock
from simulators.testing import run_simulator


@pytest.fixture
def pyseabreeze_backend(monkeypatch):
    """``seabreeze.use("pyseabreeze")`` for this test only, with blocking sockets bounded in time."""
    config = seabreeze.backends.BackendConfig
    monkeypatch.setattr(config, "requested", config.requested)
    monkeypatch.setattr(config, "allow_fallback", config.allow_fallback)
    monkeypatch.setattr(config, "api_kwargs", dict(config.api_kwargs))
    # Forget any backend an earlier test cached, so seabreeze.use() applies (and does not warn).
    monkeypatch.setattr(Spectrometer.__dict__["_backend"], "_backend", None)
    seabreeze.use("pyseabreeze")
    # pyseabreeze opens its sockets without a timeout; a default keeps a broken simulator from hanging CI.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10.0)
    yield
    socket.setdefaulttimeout(previous)


def open_hdx(url: str) -> tuple[Spectrometer, IPv4TransportHandle]:
    address = urlsplit(url)
    host, port = address.hostname, address.port
    IPv4Transport.register_model("HDX", ipv4_address=host, ipv4_port=port)
    try:
        handle = IPv4TransportHandle(host, port)
        return Spectrometer(SeaBreezeDevice(handle)), handle
    finally:
        IPv4Transport.devices_ip_port.pop((host, port), None)


def test_seabreeze_hdx_client_reads_serial_wavelengths_and_spectra(pyseabreeze_backend):
    with run_simulator("ocean-hdx", clock=ScaledClock(1000.0)) as sim:
        simulator = sim.lab.simulators["ocean-hdx"]
        world = sim.lab.world
        hdx, handle = open_hdx(sim.url("obp"))
        try:
            assert hdx.model == "HDX" and hdx.serial_number == "HDX01234"
            np.testing.assert_allclose(hdx.wavelengths(), simulator.wavelengths, rtol=1e-12)
            hdx.integration_time_micros(100000)
            assert sim.call(lambda: simulator.integration_time_us) == 100000
            blank = np.mean([hdx.intensities(correct_nonlinearity=True) for _ in range(4)], axis=0)

            def fill() -> None:
                vial = world.new_vessel()
                world.stations["spectrometer"].vessel = vial
                world.transfer(world.stocks["blue"], vial, 1000)
                world.transfer(world.stocks["water"], vial, 1000)

            sim.call(fill)
            sample = np.mean([hdx.intensities(correct_nonlinearity=True) for _ in range(4)], axis=0)
            with pytest.raises(SeaBreezeError, match=r"not in \[6000, 10000000\]"):
                hdx.integration_time_micros(10)  # seabreeze's own limit check, from its HDX table
        finally:
            hdx.close()
            # seabreeze 2.11's close() shuts the handle's first, never-connected socket, not the one
            # open() connected; close that one too so the session ends before the simulator stops.
            handle.socket.close()
        assert sim.call(lambda: simulator.integration_time_us) == 100000
        # The dark offset comes from the simulator's configuration: seabreeze has no lamp control for the HDX.
        dark = simulator.dark_level + simulator.dark_current * 0.1
        measured = -np.log10((sample - dark) / (blank - dark))
        expected = sim.call(
            lambda: world.chemistry.absorbance(world.vessel_at("spectrometer"), hdx.wavelengths())
        )
        peak = int(np.argmax(expected))
        assert expected[peak] > 0.6
        assert measured[peak - 3 : peak + 4].mean() == pytest.approx(
            expected[peak - 3 : peak + 4].mean(), abs=0.03
        )
        assert np.max(np.abs(measured - expected)) < 0.1
