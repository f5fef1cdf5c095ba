"""One SiLA 2 server, reached through the ``sila2`` library's dynamic client; no ophyd here.

``Connection.open()`` reaches the server (an address, or SiLA Server Discovery), over TLS as
Part B asks (drivers.sila2.tls), reads the features it implements, and takes its lock when it
has a LockController. Then: ``get``/``subscribe`` properties, ``call`` unobservable commands,
``start`` observable ones (``Running.wait`` follows their execution info and honours a halt),
``cancel`` them through the CancelController. Every error comes out as a drivers.sila2.errors
type with a fault kind.
"""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from drivers.errors import FaultKind, InstrumentError
from drivers.sila2 import features as ours
from drivers.sila2.errors import (
    CertificateRejected,
    ExecutionFailed,
    LinkLost,
    ParameterRefused,
    ServerFault,
    ServerLocked,
    ServerRefused,
)
from drivers.sila2.tls import certificate_uuid

if TYPE_CHECKING:  # sila2 is imported when a connection opens, not with this module
    from sila2.client import ClientObservableCommandInstance

log = logging.getLogger(__name__)

#: Features the connection handles itself; the others are the instrument's.
CORE = frozenset(
    {
        ours.SILA_SERVICE_ID,
        ours.CANCEL_CONTROLLER_ID,
        "org.silastandard/core/LockController/v1",
        "org.silastandard/core/LockController/v2",
        "org.silastandard/core/AuthenticationService/v1",
        "org.silastandard/core/AuthorizationService/v1",
        "org.silastandard/core/AuthorizationProviderService/v1",
    }
)
#: How often a waiting action looks at the execution info the client keeps (local, no request).
WAIT_S = 0.01
LOCK_ERRORS = ("ServerAlreadyLocked", "InvalidLockIdentifier")


@dataclass(frozen=True)
class Security:
    """How the client trusts the server (Part B: TLS; never an untrusted certificate implicitly)."""

    ca: Path | None = None  # a PEM file of trusted certificates (a self-signed server's own)
    client_cert: Path | None = None
    client_key: Path | None = None
    insecure: bool = False  # plaintext: against the standard, for servers that cannot do better
    trust_discovered_ca: bool = False  # accept the CA a server advertises in discovery (explicit)


@dataclass(frozen=True)
class Target:
    """Where the server is: ``host``/``port``, or found by discovery (``server_name``/``server_uuid``)."""

    host: str | None = None
    port: int | None = None
    server_name: str | None = None
    server_uuid: uuid.UUID | None = None
    discovery_timeout_s: float = 10.0

    def __str__(self) -> str:
        if self.host is not None:
            return f"{self.host}:{self.port}"
        return f"discovery ({self.server_name or self.server_uuid})"


def parse_address(address: Any) -> tuple[str, int] | None:
    """``"host:port"``, ``"[v6]:port"`` or ``{"sila": ...}`` -> (host, port); empty -> None (discovery)."""
    if isinstance(address, Mapping):
        mapping = cast(Mapping[str, Any], address)
        if "sila" not in mapping:
            raise ValueError(f"address needs the 'sila' endpoint, got {sorted(mapping)}")
        address = mapping["sila"]
    if address is None or address == "":
        return None
    if not isinstance(address, str):
        raise ValueError(f"address must be 'host:port', not {address!r}")
    host, colon, port = address.removeprefix("sila://").rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address must be 'host:port' (a SiLA server), not {address!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class CommandInfo:
    identifier: str
    observable: bool
    parameters: tuple[str, ...]
    responses: tuple[str, ...]


@dataclass
class FeatureInfo:
    """What a feature offers, read from its definition."""

    identifier: str
    fully_qualified_identifier: str
    properties: dict[str, bool] = field(default_factory=dict[str, bool])  # identifier -> observable
    commands: dict[str, CommandInfo] = field(default_factory=dict[str, CommandInfo])


def describe_feature(feature: Any) -> FeatureInfo:
    info = FeatureInfo(str(feature._identifier), str(feature.fully_qualified_identifier))
    for identifier in feature._unobservable_properties:
        info.properties[str(identifier)] = False
    for identifier in feature._observable_properties:
        info.properties[str(identifier)] = True
    for observable, commands in (
        (False, feature._unobservable_commands),
        (True, feature._observable_commands),
    ):
        for identifier, command in cast(Mapping[str, Any], commands).items():
            info.commands[identifier] = CommandInfo(
                identifier,
                observable,
                tuple(str(p._identifier) for p in command.parameters.fields),
                tuple(str(r._identifier) for r in command.responses.fields),
            )
    return info


def plain(value: Any) -> Any:
    """A SiLA value as plain Python: named tuples (structures, responses) become dicts."""
    if isinstance(value, tuple) and hasattr(cast(object, value), "_asdict"):
        return {k: plain(v) for k, v in cast(Any, value)._asdict().items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in cast(Iterable[Any], value)]
    return value


class Translator:
    """SiLA errors (and gRPC failures) as drivers.sila2.errors types."""

    def __init__(self, where: str, faults: Mapping[str, FaultKind]) -> None:
        self.where = where
        self.faults = dict(faults)

    def fault_of(self, identifier: str) -> FaultKind:
        short = identifier.rsplit("/", 1)[-1]
        if identifier in self.faults or short in self.faults:
            return self.faults.get(identifier, self.faults.get(short, FaultKind.REJECTED))
        if short in ours.FAULT_ERRORS:
            return FaultKind(ours.FAULT_ERRORS[short])
        return FaultKind.REJECTED

    def __call__(self, exc: BaseException, what: str) -> InstrumentError:
        from sila2.framework import (
            DefinedExecutionError,
            FrameworkError,
            SilaConnectionError,
            UndefinedExecutionError,
            ValidationError,
        )

        if isinstance(exc, InstrumentError):
            return exc
        text = f"{what}: {exc}"
        if isinstance(exc, DefinedExecutionError):
            identifier = str(exc.fully_qualified_identifier)
            if identifier.rsplit("/", 1)[-1] in LOCK_ERRORS:
                return ServerLocked(text)
            return ExecutionFailed(
                f"{what}: {exc.message}", identifier=identifier, fault=self.fault_of(identifier)
            )
        if isinstance(exc, ValidationError):
            parameter = exc.parameter_fully_qualified_identifier
            return ParameterRefused(text, parameter=str(parameter) if parameter else None)
        if isinstance(exc, UndefinedExecutionError):
            return ServerFault(text)
        if isinstance(exc, FrameworkError):
            if "metadata" in str(exc).lower() and "lock" in str(exc).lower():
                return ServerLocked(f"{text} (another client holds the lock)")
            return ServerRefused(text)
        if isinstance(exc, SilaConnectionError | ConnectionError | OSError):
            lowered = str(exc).lower()
            if any(word in lowered for word in ("certificate", "handshake", "ssl", "tls")):
                return CertificateRejected(
                    f"{text} (is the server's certificate trusted? see the 'ca' option)"
                )
            return LinkLost(f"{self.where}: {text}")
        return ServerFault(f"{text} ({type(exc).__name__})")


class Running:
    """An observable command the server is running."""

    def __init__(
        self, instance: ClientObservableCommandInstance[Any], what: str, translate: Translator
    ) -> None:
        self.instance = instance
        self.what = what
        self.translate = translate
        self.execution = uuid.UUID(str(instance.execution_uuid))

    @property
    def done(self) -> bool:
        return bool(self.instance.done)

    @property
    def progress(self) -> float | None:
        value = self.instance.progress
        return None if value is None else float(value)

    def wait(
        self, halt: threading.Event, on_progress: Callable[[float], None] | None = None
    ) -> dict[str, Any]:
        """The responses once the command finished; ``{}`` at once if ``halt`` is set first. Reads the
        execution info the library's subscription keeps up to date: no request per look."""
        seen: float | None = None
        while not self.instance.done:
            if halt.wait(WAIT_S):
                return {}
            progress = self.progress
            if on_progress is not None and progress is not None and progress != seen:
                seen = progress
                on_progress(progress)
        try:
            responses = self.instance.get_responses()
        except Exception as exc:
            raise self.translate(exc, self.what) from exc
        finally:
            self.instance.cancel_execution_info_subscription()
        return cast(dict[str, Any], plain(responses) or {})


class Connection:
    """A SiLA 2 client session to one server (thread-safe for calls; open/close from one owner)."""

    def __init__(
        self,
        target: Target,
        security: Security,
        *,
        instrument: str = "",
        lock: bool = True,
        lock_timeout_s: int = 60,
        faults: Mapping[str, FaultKind] | None = None,
    ) -> None:
        self.target = target
        self.security = security
        self.instrument = instrument
        self.use_lock = lock
        self.lock_timeout_s = lock_timeout_s
        self.translate = Translator(str(target), faults or {})
        self.features: dict[str, FeatureInfo] = {}
        self.server_uuid: uuid.UUID | None = None
        # A sila2 SilaClient: it grows one attribute per feature the server implements, at run time,
        # so no static type names what the calls below reach through it.
        self._client: Any = None
        self._lock_token: str | None = None
        self._locked_calls: set[str] = set()
        self._renewer: threading.Thread | None = None
        self._closing = threading.Event()
        self._subscriptions: list[Any] = []
        self._guard = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._client is not None

    @property
    def can_cancel(self) -> bool:
        return self._client is not None and hasattr(self._client, "CancelController")

    # -- opening -----------------------------------------------------------------------------
    def open(self) -> None:
        if self._client is not None:
            return
        self._closing.clear()
        try:
            self._client = self._reach()
            self._check_identity()
            self.features = {
                str(f.fully_qualified_identifier): describe_feature(f)
                for f in cast(Mapping[str, Any], self._client._features).values()
                if str(f.fully_qualified_identifier) not in CORE
            }
            if self.use_lock and hasattr(self._client, "LockController"):
                self._take_lock()
        except BaseException as exc:
            self.close()
            if isinstance(exc, Exception):
                raise self.translate(exc, "connecting") from exc
            raise

    def _reach(self) -> Any:
        from sila2.client import SilaClient

        security = self.security
        credentials: dict[str, Any] = {}
        if security.ca is not None:
            credentials["root_certs"] = security.ca.read_bytes()
        if security.client_cert is not None and security.client_key is not None:
            credentials["cert_chain"] = security.client_cert.read_bytes()
            credentials["private_key"] = security.client_key.read_bytes()
        if security.insecure:
            log.warning("%s: SiLA without TLS to %s: the standard requires TLS", self.instrument, self.target)
            credentials = {"insecure": True}
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            if self.target.host is not None:
                client = SilaClient(self.target.host, cast(int, self.target.port), **credentials)
            else:
                if not (security.insecure or security.ca or security.trust_discovered_ca):
                    raise CertificateRejected(
                        "discovery needs a trusted CA ('ca'), or 'trust_discovered_ca: true' to accept "
                        "the one the server advertises (SiLA never trusts it implicitly)"
                    )
                client = SilaClient.discover(
                    server_name=self.target.server_name,
                    server_uuid=self.target.server_uuid,
                    timeout=self.target.discovery_timeout_s,
                    **credentials,
                )
        for warning in said:
            log.warning("%s: %s", self.instrument, warning.message)
        return client

    def _check_identity(self) -> None:
        """The server UUID it reports must be the one its certificate (and the lab file) name."""
        reported = uuid.UUID(str(self._client.SiLAService.ServerUUID.get()))
        self.server_uuid = reported
        if self.target.server_uuid is not None and reported != self.target.server_uuid:
            raise CertificateRejected(
                f"the server at {self.target} is {reported}, not the server_uuid {self.target.server_uuid}"
            )
        if self.security.insecure:
            return
        host, port = str(self._client.address), int(self._client.port)
        pem = ssl.get_server_certificate((host, port)).encode("ascii")
        named = certificate_uuid(pem)
        if named is None:
            log.warning(
                "%s: the server's certificate names no SiLA server UUID (extension %s)",
                self.instrument,
                "1.3.6.1.4.1.58583",
            )
        elif named != reported:
            raise CertificateRejected(
                f"the certificate names server {named}, but the server says it is {reported}"
            )

    # -- the lock ----------------------------------------------------------------------------
    def _take_lock(self) -> None:
        controller = self._client.LockController
        token = str(uuid.uuid4())
        controller.LockServer(token, self.lock_timeout_s)
        self._lock_token = token
        self._locked_calls = {str(c) for c in controller.LockIdentifier.get_affected_calls()}
        log.info(
            "%s: locked the SiLA server (%s s without a call unlocks it)",
            self.instrument,
            self.lock_timeout_s,
        )
        if self.lock_timeout_s > 0:
            self._renewer = threading.Thread(
                target=self._renew, name=f"{self.instrument}:sila-lock", daemon=True
            )
            self._renewer.start()

    def _renew(self) -> None:
        """Keep the lock while the session is open: a call that carries the identifier renews it."""
        probe = next(
            ((f, p) for f in self.features.values() for p, obs in f.properties.items() if not obs), None
        )
        while not self._closing.wait(max(1.0, self.lock_timeout_s / 3)):
            try:
                if probe is not None:
                    self.get(probe[0].fully_qualified_identifier, probe[1])
                else:
                    self._client.LockController.IsLocked.get()
            except Exception as exc:
                log.warning("%s: renewing the SiLA lock failed: %s", self.instrument, exc)

    def metadata(self, feature: str, call: str) -> list[Any] | None:
        """The lock identifier, for calls the server says the lock protects."""
        if self._lock_token is None:
            return None
        fqi = f"{feature}/{'Command' if call in self.features[feature].commands else 'Property'}/{call}"
        if feature in self._locked_calls or fqi in self._locked_calls:
            return [self._client.LockController.LockIdentifier(self._lock_token)]
        return None

    # -- calls -------------------------------------------------------------------------------
    def _feature(self, feature: str) -> Any:
        if self._client is None:
            raise LinkLost(f"{self.target}: not connected")
        return getattr(self._client, self.features[feature].identifier)

    def get(self, feature: str, prop: str) -> Any:
        what = f"reading {self.features[feature].identifier}.{prop}"
        try:
            return plain(getattr(self._feature(feature), prop).get(metadata=self.metadata(feature, prop)))
        except Exception as exc:
            raise self.translate(exc, what) from exc

    def subscribe(self, feature: str, prop: str, callback: Callable[[Any], None]) -> None:
        """``callback(value)`` on each value the server sends (the first at once); ends with close()."""
        what = f"subscribing to {self.features[feature].identifier}.{prop}"

        def sent(value: Any) -> None:
            callback(plain(value))

        try:
            subscription = getattr(self._feature(feature), prop).subscribe(
                metadata=self.metadata(feature, prop), callbacks=[sent]
            )
        except Exception as exc:
            raise self.translate(exc, what) from exc
        with self._guard:
            self._subscriptions.append(subscription)

    def call(self, feature: str, command: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """Run an unobservable command; its responses by identifier."""
        what = f"{self.features[feature].identifier}.{command}"
        try:
            responses = getattr(self._feature(feature), command)(
                **parameters, metadata=self.metadata(feature, command)
            )
        except Exception as exc:
            raise self.translate(exc, what) from exc
        return self._responses(responses, feature, command)

    def _responses(self, value: Any, feature: str, command: str) -> dict[str, Any]:
        names = self.features[feature].commands[command].responses
        value = plain(value)
        if isinstance(value, dict):
            return cast(dict[str, Any], value)
        if value is None or not names:
            return {}
        return {names[0]: value}

    def start(self, feature: str, command: str, parameters: Mapping[str, Any]) -> Running:
        """Start an observable command; follow it with ``Running.wait``."""
        what = f"{self.features[feature].identifier}.{command}"
        try:
            instance = getattr(self._feature(feature), command)(
                **parameters, metadata=self.metadata(feature, command)
            )
        except Exception as exc:
            raise self.translate(exc, what) from exc
        return Running(instance, what, self.translate)

    def cancel(self, execution: uuid.UUID) -> bool:
        """Cancel a running command through the CancelController; False if the server has none."""
        if not self.can_cancel:
            return False
        try:
            self._client.CancelController.CancelCommand(str(execution))
        except Exception as exc:
            error = self.translate(exc, "cancelling")
            if isinstance(error, ExecutionFailed) and error.name == "InvalidCommandExecutionUUID":
                return True  # it had already finished
            raise error from exc
        return True

    def cancel_all(self) -> bool:
        if not self.can_cancel:
            return False
        try:
            self._client.CancelController.CancelAll()
        except Exception as exc:
            raise self.translate(exc, "cancelling every command") from exc
        return True

    def identity(self) -> dict[str, Any]:
        service = self._client.SiLAService
        try:
            return {
                "model": str(service.ServerType.get()),
                "serial": str(service.ServerUUID.get()),
                "firmware": str(service.ServerVersion.get()),
                "name": str(service.ServerName.get()),
                "vendor": str(service.ServerVendorURL.get()),
            }
        except Exception as exc:
            raise self.translate(exc, "reading SiLAService") from exc

    def ping(self) -> None:
        """A request that changes nothing (the server's UUID)."""
        if self._client is None:
            raise LinkLost(f"{self.target}: not connected")
        try:
            self._client.SiLAService.ServerUUID.get()
        except Exception as exc:
            raise self.translate(exc, "reading SiLAService.ServerUUID") from exc

    # -- closing -----------------------------------------------------------------------------
    def close(self) -> None:
        self._closing.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(5.0)
        self._renewer = None
        with self._guard:
            subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            subscription.cancel()
        client, self._client = self._client, None
        if client is None:
            return
        if self._lock_token is not None:
            try:
                client.LockController.UnlockServer(self._lock_token)
            except Exception as exc:  # it lapses after its timeout anyway
                log.warning("%s: unlocking the SiLA server failed: %s", self.instrument, exc)
            self._lock_token = None
        client.close()
        executor = getattr(client, "_task_executor", None)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
