# The part of ophyd's API that drivers/ uses, typed (ophyd ships no type information). Checked
# against the installed ophyd by tests/test_driver_ophyd_types.py.
from collections.abc import Callable, Mapping
from enum import IntFlag
from typing import Any, Generic, TypeVar, overload

_T = TypeVar("_T")

class Kind(IntFlag):
    omitted = 0
    normal = 1
    config = 2
    hinted = 5

class OphydObject:
    name: str
    attr_name: str
    @property
    def kind(self) -> Kind: ...
    @property
    def parent(self) -> Any: ...
    @property
    def root(self) -> Any: ...

class Signal(OphydObject):
    def __init__(
        self,
        *,
        name: str,
        value: Any = ...,
        timestamp: float | None = ...,
        parent: Any = ...,
        kind: str = ...,
        metadata: Mapping[str, Any] | None = ...,
        attr_name: str = ...,
        **kwargs: Any,
    ) -> None: ...
    def get(self, **kwargs: Any) -> Any: ...
    def put(self, value: Any, **kwargs: Any) -> None: ...
    def read(self) -> dict[str, dict[str, Any]]: ...
    def describe(self) -> dict[str, dict[str, Any]]: ...
    @property
    def metadata(self) -> dict[str, Any]: ...

class Device(OphydObject):
    component_names: tuple[str, ...]
    def __init__(
        self,
        prefix: str = ...,
        *,
        name: str,
        kind: Any = ...,
        read_attrs: Any = ...,
        configuration_attrs: Any = ...,
        parent: Any = ...,
        **kwargs: Any,
    ) -> None: ...
    def read(self) -> dict[str, dict[str, Any]]: ...
    def describe(self) -> dict[str, dict[str, Any]]: ...
    def read_configuration(self) -> dict[str, dict[str, Any]]: ...
    def describe_configuration(self) -> dict[str, dict[str, Any]]: ...
    def trigger(self) -> StatusBase: ...
    def stop(self, *, success: bool = False) -> None: ...
    def destroy(self) -> None: ...

class Component(Generic[_T]):
    def __init__(
        self,
        cls: type[_T],
        suffix: str | None = ...,
        *,
        lazy: bool | None = ...,
        kind: str = ...,
        **kwargs: Any,
    ) -> None: ...
    @overload
    def __get__(self, instance: None, owner: type[Any]) -> Component[_T]: ...
    @overload
    def __get__(self, instance: Device, owner: type[Any]) -> _T: ...

class StatusBase:
    @property
    def done(self) -> bool: ...
    @property
    def success(self) -> bool: ...
    def set_finished(self) -> None: ...
    def set_exception(self, exc: BaseException) -> None: ...
    def exception(self, timeout: float | None = ...) -> BaseException | None: ...
    def wait(self, timeout: float | None = ...) -> None: ...
    def add_callback(self, callback: Callable[[StatusBase], None]) -> None: ...

class DeviceStatus(StatusBase):
    def __init__(self, device: Any, *, call_stop_on_failure: bool = ..., **kwargs: Any) -> None: ...

class InvalidState(RuntimeError): ...

__all__ = ["Component", "Device", "DeviceStatus", "InvalidState", "Kind", "Signal", "StatusBase"]
