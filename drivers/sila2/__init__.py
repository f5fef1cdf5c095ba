"""SiLA 2 both ways: any SiLA 2 server as an ophyd device, and our instruments as SiLA 2 servers.

``make_device`` is what a lab file names (``driver: sila2``)::

    spectrometer:
      driver: sila2
      address: "10.0.0.7:50052"            # or leave it out and give server_name / server_uuid
      options:
        ca: certs/spectrometer.pem         # the server's certificate (or its CA): TLS as SiLA asks
        trigger: SpectrometerController.Acquire
        actions: {yellow: {command: SyringePumpController.Dispense, parameters: {Pump: yellow}}}

``drivers.sila2.serve`` is the other way (`sdl sila serve --lab LAB.yaml`). The library is the
``sila2`` package (docs/decisions/0010-sila2-library.md); it is an optional extra
(``pip install 'sdl[sila]'``), imported only when a device connects or a server starts, so this
module imports without it.
"""

from __future__ import annotations

import importlib
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, Field, field_validator, model_validator

from drivers.errors import FaultKind
from drivers.options import STRICT, validate_options
from drivers.sila2.errors import (
    CertificateRejected,
    ExecutionFailed,
    LinkLost,
    ParameterRefused,
    ServerFault,
    ServerLocked,
    ServerRefused,
    SilaError,
)

if TYPE_CHECKING:
    from drivers.sila2.device import SilaDevice

__all__ = [
    "CertificateRejected",
    "CommandRef",
    "ExecutionFailed",
    "LinkLost",
    "Options",
    "ParameterRefused",
    "ServerFault",
    "ServerLocked",
    "ServerRefused",
    "SilaError",
    "make_device",
]

REFERENCE = re.compile(r"^([A-Za-z][A-Za-z0-9.\-/]*\.)?[A-Z][A-Za-z0-9]*\.[A-Z][A-Za-z0-9]*$")


class CommandRef(BaseModel):
    """A command of the server, ``Feature.Command``, with parameters fixed in the lab file."""

    model_config = STRICT

    command: str = Field(description="Feature.Command (SiLA identifiers)")
    parameters: dict[str, Any] = Field(default_factory=dict, description="parameters fixed for this use")

    @field_validator("command")
    @classmethod
    def _reference(cls, value: str) -> str:
        if not REFERENCE.match(value):
            raise ValueError(
                f"{value!r} is not 'Feature.Command' (SiLA identifiers, e.g. 'PumpController.Dispense')"
            )
        return value


def _ref(value: Any) -> Any:
    return {"command": value} if isinstance(value, str) else value


class Options(BaseModel):
    """``make_device`` options of a SiLA 2 server."""

    model_config = STRICT

    server_name: str | None = Field(None, description="find the server by its name (SiLA Server Discovery)")
    server_uuid: uuid.UUID | None = Field(
        None, description="find it by UUID; with an address, check it is this one"
    )
    discovery_timeout_s: float = Field(10.0, gt=0)
    ca: Path | None = Field(
        None, description="PEM file of the certificate(s) to trust (a self-signed server's)"
    )
    client_cert: Path | None = Field(None, description="PEM client certificate, for servers that ask for one")
    client_key: Path | None = None
    insecure: bool = Field(False, description="no TLS (against the SiLA standard; for servers without it)")
    trust_discovered_ca: bool = Field(False, description="accept the CA a server advertises in discovery")
    lock: bool = Field(True, description="lock the server (LockController) while connected, if it has one")
    lock_timeout_s: int = Field(
        60, ge=0, description="s without a call after which the server unlocks itself"
    )
    set: CommandRef | None = Field(None, description="the command device.set(value) runs")
    trigger: CommandRef | None = Field(
        None, description="the command device.trigger() runs (its responses are read)"
    )
    stop: CommandRef | None = Field(
        None, description="a command that stops the instrument (besides cancelling)"
    )
    actions: dict[str, CommandRef] = Field(
        default_factory=dict, description="name -> command, as movable children"
    )
    errors: dict[str, FaultKind] = Field(
        default_factory=dict, description="defined execution error -> fault kind"
    )

    @field_validator("set", "trigger", "stop", mode="before")
    @classmethod
    def _refs(cls, value: Any) -> Any:
        return _ref(value)

    @field_validator("actions", mode="before")
    @classmethod
    def _action_refs(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: _ref(v) for k, v in cast(Mapping[Any, Any], value).items()}
        return value

    @field_validator("actions")
    @classmethod
    def _action_names(cls, actions: dict[str, CommandRef]) -> dict[str, CommandRef]:
        for name in actions:
            if not name.isidentifier() or name.startswith("_"):
                raise ValueError(
                    f"action name {name!r} must be a Python identifier (it becomes an attribute)"
                )
        return actions

    @model_validator(mode="after")
    def _trust(self) -> Options:
        if self.insecure and (self.ca or self.client_cert or self.trust_discovered_ca):
            raise ValueError("insecure (no TLS) cannot go with ca, client_cert or trust_discovered_ca")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("give both client_cert and client_key, or neither")
        return self


def make_device(name: str, address: str | Mapping[str, str] | None = None, **options: Any) -> SilaDevice:
    """An ophyd device for the SiLA 2 server at ``address`` (``host:port``; or found by discovery from
    ``server_name``/``server_uuid`` when ``address`` is empty); no I/O until ``connect()``."""
    from drivers.sila2.connection import Connection, Security, Target, parse_address
    from drivers.sila2.device import make_sila_device

    checked = validate_options(Options, options, instrument=name)
    try:
        where = parse_address(address)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if where is None and checked.server_name is None and checked.server_uuid is None:
        raise ValueError(f"{name}: give an address 'host:port', or server_name / server_uuid to discover it")
    target = Target(
        *(where or (None, None)),
        server_name=checked.server_name,
        server_uuid=checked.server_uuid,
        discovery_timeout_s=checked.discovery_timeout_s,
    )
    security = Security(
        checked.ca, checked.client_cert, checked.client_key, checked.insecure, checked.trust_discovered_ca
    )
    connection = Connection(
        target,
        security,
        instrument=name,
        lock=checked.lock,
        lock_timeout_s=checked.lock_timeout_s,
        faults=checked.errors,
    )

    def ref(command: CommandRef | None) -> tuple[str, dict[str, Any]] | None:
        return None if command is None else (command.command, dict(command.parameters))

    return make_sila_device(
        name,
        connection,
        {attr: (a.command, dict(a.parameters)) for attr, a in checked.actions.items()},
        set_command=ref(checked.set),
        trigger_command=ref(checked.trigger),
        stop_command=ref(checked.stop),
    )


def __getattr__(name: str) -> Any:
    # The ophyd face on demand (PEP 562), like the other driver packages.
    if name in ("SilaDevice", "SilaAction"):
        return getattr(importlib.import_module("drivers.sila2.device"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
