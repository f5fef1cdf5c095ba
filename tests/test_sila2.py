"""SiLA 2 both ways, each with the other side written by the `sila2` library, not by us.

- `sdl sila serve` (a subprocess, over a simulated NE-1000 lab) driven by the library's dynamic
  ``SilaClient``: features discovered, a dispense with progress, the pump's limits as defined
  execution errors, parameter constraints, cancellation stopping the pump.
- ``driver: sila2`` driving a server built with the library's server API (a feature definition,
  a ``FeatureImplementationBase``, ``SilaServer`` with its own self-signed certificate): signals
  pushed by subscription, a command with progress, typed errors, the lock, certificate checks.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from queue import Queue
from typing import Any

import pytest
import yaml
from bluesky import plan_stubs as bps

import drivers.sila2
from drivers.errors import FaultKind
from drivers.sila2.serve import free_port
from drivers.testing import wait_for
from drivers.testing.contract import running_engine

SDL = [sys.executable, "-c", "import sys; from sdl.cli import main; sys.exit(main())"]
DEADLINE_S = 60.0


# -- our server, the library's client --------------------------------------------------------------
@pytest.fixture
def pump_lab(tmp_path: Path) -> Path:
    (tmp_path / "sim.yaml").write_text(yaml.safe_dump({
        "world": {"stocks": {"water": {}}, "stations": {"dispense": {}}},
        "instruments": {"pumps": {"kind": "ne1000", "pumps": [
            {"address": 0, "diameter_mm": 14.57, "syringe_volume_ul": 10000, "reagent": "water",
             "outlet": "dispense"}]}},
    }))  # fmt: skip
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump({
        "name": "sila-bench", "simulated": "sim.yaml", "speed": 50,
        "instruments": {"pumps": {"driver": "ne1000", "address": "{pumps.pump}", "options": {
            "poll_s": 0.02, "pumps": {"water": {
                "address": 0, "diameter_mm": 14.57, "syringe_volume_ul": 10000, "max_rate_ul_min": 5000,
                "rate_ul_min": 2000}}}}},
        "workcells": {"bench": {"devices": {"pumps": "pumps"}}},
    }))  # fmt: skip
    return tmp_path / "lab.yaml"


@pytest.fixture
def sila_serve(pump_lab: Path, tmp_path: Path) -> Iterator[dict[str, list[str]]]:
    command = [
        *SDL,
        "sila",
        "serve",
        "--lab",
        str(pump_lab),
        "--certs",
        str(tmp_path / "certs"),
        "--no-discovery",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    served: dict[str, list[str]] = {}
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == "ready":
                break
            name, *rest = line.split()
            served[name] = rest
        else:
            raise AssertionError(f"sdl sila serve ended: {process.wait(10)} {process.stderr.read()}")  # type: ignore[union-attr]
        yield served
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=DEADLINE_S)
        assert process.returncode == 0, errors


def finished(instance: Any) -> None:
    wait_for(lambda: instance.done, DEADLINE_S, what="the command finishing")


def test_the_sila2_librarys_client_drives_a_simulated_pump_through_sdl_sila_serve(sila_serve):
    from sila2.client import SilaClient
    from sila2.framework import DefinedExecutionError, ValidationError

    address, server_uuid, certificate = sila_serve["pumps"]
    host, port = address.rsplit(":", 1)
    client = SilaClient(host, int(port), root_certs=Path(certificate).read_bytes())
    try:
        assert str(client.SiLAService.ServerUUID.get()) == server_uuid
        assert "org.sdl/instruments/SyringePumpController/v1" in client.SiLAService.ImplementedFeatures.get()
        pumps = client.SyringePumpController
        assert pumps.Pumps.get() == ["water"]
        pumps.SetRate("water", 4000.0)
        # An observable property: the server's thread pushes the new value to subscribers after the set.
        wait_for(lambda: pumps.Rates.get() == [4000.0], DEADLINE_S, what="the new rate observed")

        dispense = pumps.Dispense("water", 250.0)
        finished(dispense)
        assert dispense.get_responses().Delivered == pytest.approx(250.0)
        assert pumps.Delivered.get() == [pytest.approx(250.0)]

        with pytest.raises(ValidationError):  # the feature's constraint: volumes above zero
            pumps.Dispense("water", -5.0)
        with pytest.raises(ValidationError):  # only the pumps the instrument has
            pumps.Dispense("ink", 5.0)
        too_much = pumps.Dispense("water", 50_000.0)  # the syringe holds 10 mL: refused by the driver
        finished(too_much)
        with pytest.raises(DefinedExecutionError) as refused:
            too_much.get_responses()
        assert refused.value.identifier == "LimitRefused"

        pumps.SetRate("water", 100.0)
        slow = pumps.Dispense("water", 5000.0)  # 50 min at 100 µL/min: minutes even at speed 50
        wait_for(lambda: (slow.progress or 0) > 0, DEADLINE_S, what="progress being reported")
        client.CancelController.CancelCommand(str(slow.execution_uuid))
        finished(slow)
        with pytest.raises(DefinedExecutionError) as cancelled:
            slow.get_responses()
        assert cancelled.value.identifier == "Cancelled"
        assert pumps.Delivered.get()[0] < 5000.0  # the pump stopped part way
    finally:
        client.close()


# -- the library's server, our driver --------------------------------------------------------------
THERMOSTAT = """<?xml version="1.0" encoding="utf-8" ?>
<Feature SiLA2Version="1.0" FeatureVersion="1.0" Originator="com.example" Category="heating"
         xmlns="http://www.sila-standard.org">
  <Identifier>ThermostatController</Identifier><DisplayName>Thermostat Controller</DisplayName>
  <Description>A bath that heats to a target.</Description>
  <Command><Identifier>HeatTo</Identifier><DisplayName>Heat To</DisplayName><Description>Heat.</Description>
    <Observable>Yes</Observable>
    <Parameter><Identifier>Target</Identifier><DisplayName>Target</DisplayName><Description>degC</Description>
      <DataType><Constrained><DataType><Basic>Real</Basic></DataType><Constraints>
        <MaximalInclusive>150</MaximalInclusive></Constraints></Constrained></DataType></Parameter>
    <Response><Identifier>Reached</Identifier><DisplayName>Reached</DisplayName><Description>degC</Description>
      <DataType><Basic>Real</Basic></DataType></Response>
    <DefinedExecutionErrors><Identifier>Overheated</Identifier></DefinedExecutionErrors>
  </Command>
  <Command><Identifier>SwitchOff</Identifier><DisplayName>Switch Off</DisplayName>
    <Description>Off.</Description>
    <Observable>No</Observable></Command>
  <Command><Identifier>SetSetpoint</Identifier><DisplayName>Set Setpoint</DisplayName>
    <Description>S</Description>
    <Observable>No</Observable>
    <Parameter><Identifier>Setpoint</Identifier><DisplayName>Setpoint</DisplayName><Description>C</Description>
      <DataType><Basic>Real</Basic></DataType></Parameter></Command>
  <Property><Identifier>Temperature</Identifier><DisplayName>Temperature</DisplayName><Description>C</Description>
    <Observable>Yes</Observable><DataType><Basic>Real</Basic></DataType></Property>
  <Property><Identifier>Setpoint</Identifier><DisplayName>Setpoint</DisplayName><Description>C</Description>
    <Observable>No</Observable><DataType><Basic>Real</Basic></DataType></Property>
  <DefinedExecutionError><Identifier>Overheated</Identifier><DisplayName>Overheated</DisplayName>
    <Description>The bath tripped its thermal fuse.</Description></DefinedExecutionError>
</Feature>"""


class Bath:
    """The third-party server: a sila2 SilaServer with the thermostat and the library's LockController."""

    def __init__(self, certs: Path) -> None:
        from sila2.features.lockcontroller import LockControllerFeature
        from sila2.framework import DefinedExecutionError, Feature
        from sila2.server import FeatureImplementationBase, SilaServer
        from sila2.server.default_feature_implementations.lockcontroller_impl import LockControllerImpl
        from sila2.server.encryption import generate_self_signed_certificate

        feature = Feature(THERMOSTAT)
        bath = self
        self.switched_off = threading.Event()
        self.started = threading.Event()
        self.setpoint = 20.0
        self.temperature: Queue[float] = Queue()

        class Thermostat(FeatureImplementationBase):
            def __init__(self, server: Any) -> None:
                super().__init__(parent_server=server)
                self._Temperature_producer_queue = bath.temperature
                bath.temperature.put(20.0)

            def Temperature_on_subscription(self, *, metadata: Any) -> None:
                return None

            def get_Setpoint(self, *, metadata: Any) -> float:
                return bath.setpoint

            def SetSetpoint(self, Setpoint: float, *, metadata: Any) -> None:
                bath.setpoint = Setpoint

            def SwitchOff(self, *, metadata: Any) -> None:
                bath.switched_off.set()

            def HeatTo(self, Target: float, *, metadata: Any, instance: Any) -> float:
                instance.begin_execution()
                if Target > 120:
                    raise DefinedExecutionError(
                        feature.defined_execution_errors["Overheated"], "fuse tripped"
                    )
                bath.started.set()
                steps = 5 if Target < 100 else 10_000  # a target of 100 or more takes (nearly) forever
                for step in range(1, steps + 1):
                    if bath.switched_off.wait(0.01):
                        raise RuntimeError("switched off")
                    instance.progress = step / steps
                    instance.estimated_remaining_time = timedelta(seconds=0.01 * (steps - step))
                    bath.temperature.put(20.0 + (Target - 20.0) * step / steps)
                return Target

        self.server = SilaServer("bath", "Thermostat", "A test bath", "1.0", "https://example.com")
        self.server.set_feature_implementation(feature, Thermostat(self.server))
        self.server.set_feature_implementation(LockControllerFeature, LockControllerImpl(self.server))
        key, self.certificate = generate_self_signed_certificate(self.server.server_uuid, "127.0.0.1")
        certs.mkdir(parents=True, exist_ok=True)
        (certs / "bath.pem").write_bytes(self.certificate)
        self.port = free_port("127.0.0.1")
        self.server.start("127.0.0.1", self.port, private_key=key, cert_chain=self.certificate,
                          enable_discovery=False)  # fmt: skip

    def stop(self) -> None:
        self.server.stop(grace_period=0.5)


@pytest.fixture
def bath(tmp_path: Path) -> Iterator[Bath]:
    server = Bath(tmp_path / "certs")
    try:
        yield server
    finally:
        server.stop()


def bath_device(bath: Bath, tmp_path: Path, **options: Any) -> Any:
    return drivers.sila2.make_device(
        "bath", f"127.0.0.1:{bath.port}", ca=str(tmp_path / "certs" / "bath.pem"),
        set="ThermostatController.HeatTo", stop="ThermostatController.SwitchOff",
        errors={"Overheated": "alarm"}, **options,
    )  # fmt: skip


def test_our_driver_drives_a_server_built_with_the_sila2_library(bath, tmp_path):
    device = bath_device(bath, tmp_path)
    try:
        device.connect()
        assert device.identity()["serial"] == str(bath.server.server_uuid)
        # Properties became signals; the observable one follows what the server pushes.
        assert device.temperature.get() == 20.0 and device.setpoint.get() == 20.0
        bath.temperature.put(21.5)
        wait_for(lambda: device.temperature.get() == 21.5, DEADLINE_S, what="the pushed temperature")
        # A property with a Set<Property> command beside it is settable, from a plan too.
        with running_engine() as engine:
            engine(bps.mv(device.setpoint, 30.0))
            assert bath.setpoint == 30.0
            # The device's set() runs the observable command; its progress and responses are read.
            engine(bps.mv(device, 60.0))
        assert device.temperature.get() == 60.0
        status = device.heat_to.set({"Target": 40.0})
        status.wait(DEADLINE_S)
        assert device.heat_to.read()["bath_heat_to_reached"]["value"] == 40.0
        assert device.heat_to.progress.get() == 1.0
        # SiLA's errors as typed driver errors.
        with pytest.raises(drivers.sila2.ParameterRefused) as refused:
            device.set(200.0).wait(DEADLINE_S)  # above the feature's MaximalInclusive 150
        assert refused.value.fault == FaultKind.LIMIT_REFUSED
        with pytest.raises(drivers.sila2.ExecutionFailed) as failed:
            device.set(130.0).wait(DEADLINE_S)
        assert failed.value.name == "Overheated" and failed.value.fault == FaultKind.ALARM
        # No CancelController on this server: stop() runs the lab file's stop command.
        running = device.set(110.0)
        wait_for(bath.started.is_set, DEADLINE_S, what="the bath heating")
        device.stop()
        with pytest.raises(Exception, match="cancelled"):
            running.wait(DEADLINE_S)
        assert bath.switched_off.is_set()
    finally:
        device.destroy()


def test_the_lock_keeps_other_clients_out_while_we_hold_it(bath, tmp_path):
    from sila2.client import SilaClient
    from sila2.framework import FrameworkError

    device = bath_device(bath, tmp_path)
    other = SilaClient("127.0.0.1", bath.port, root_certs=bath.certificate)
    try:
        device.connect()
        assert other.LockController.IsLocked.get()
        with pytest.raises(FrameworkError):  # InvalidMetadata: the call must carry the lock identifier
            other.ThermostatController.SetSetpoint(99.0)
        device.setpoint.put(25.0)  # ours carries it
        assert bath.setpoint == 25.0
        device.disconnect()
        assert not other.LockController.IsLocked.get()
    finally:
        other.close()
        device.destroy()


def test_certificates_are_checked_as_the_standard_says(bath, tmp_path):
    from sila2.server.encryption import generate_self_signed_certificate

    # A certificate nobody gave us is not trusted.
    _, stranger = generate_self_signed_certificate(bath.server.server_uuid, "127.0.0.1")
    (tmp_path / "stranger.pem").write_bytes(stranger)
    untrusted = drivers.sila2.make_device("bath", f"127.0.0.1:{bath.port}", ca=str(tmp_path / "stranger.pem"))
    with pytest.raises(drivers.sila2.SilaError) as refused:
        untrusted.connect()
    assert refused.value.fault in (FaultKind.UNRECOVERABLE, FaultKind.LINK_LOST)
    untrusted.destroy()
    # The server must be the one the lab file names.
    other = "00000000-0000-4000-8000-000000000000"
    wrong = bath_device(bath, tmp_path, server_uuid=other)
    with pytest.raises(drivers.sila2.CertificateRejected, match=other):
        wrong.connect()
    wrong.destroy()


def test_options_are_checked_offline():
    with pytest.raises(ValueError, match="host:port"):
        drivers.sila2.make_device("x", "localhost")
    with pytest.raises(ValueError, match=r"Feature\.Command"):
        drivers.sila2.make_device("x", "127.0.0.1:1", trigger="Acquire")
    with pytest.raises(ValueError, match="insecure"):
        drivers.sila2.make_device("x", "127.0.0.1:1", insecure=True, ca="x.pem")
    with pytest.raises(ValueError, match="server_name"):
        drivers.sila2.make_device("x", None)
