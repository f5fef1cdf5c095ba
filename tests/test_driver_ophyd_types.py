"""drivers/ophyd_types.pyi declares the part of ophyd the faces use (ophyd ships no types): every name
it declares must exist in the installed ophyd, with the keyword arguments it declares, so an ophyd
upgrade that drops or renames one fails here rather than in a face at run time."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest

import drivers.ophyd_types as ophyd_types

STUB = Path(ophyd_types.__file__).with_suffix(".pyi")


def declared() -> dict[str, ast.ClassDef]:
    tree = ast.parse(STUB.read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def instance_of(name: str) -> Any:
    """A live object of the declared class, to look up instance attributes on."""
    if name in ("OphydObject", "Signal"):
        return ophyd_types.Signal(name="probe", value=0.0)
    if name == "Device":
        return ophyd_types.Device(name="probe")
    if name in ("StatusBase", "DeviceStatus"):
        return ophyd_types.DeviceStatus(ophyd_types.Device(name="probe"))
    if name == "Component":
        return ophyd_types.Component(ophyd_types.Signal)
    if name == "InvalidState":
        return ophyd_types.InvalidState("probe")
    if name == "Kind":
        return ophyd_types.Kind  # its members are class attributes
    raise AssertionError(f"no probe for {name}: add one")


@pytest.mark.parametrize("name", sorted(declared()))
def test_every_declared_member_exists_in_ophyd(name):
    probe = instance_of(name)
    for node in declared()[name].body:
        value = None
        if isinstance(node, ast.FunctionDef):
            member = node.name
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            member = node.target.id
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):  # enum members
            member, value = node.targets[0].id, ast.literal_eval(node.value)
        else:
            continue
        assert hasattr(probe, member), f"ophyd's {type(probe).__name__} has no {member}"
        if value is not None:
            assert getattr(probe, member) == value, f"ophyd's {name}.{member} is not {value}"
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            parameters = inspect.signature(type(probe).__init__).parameters
            takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
            for argument in node.args.kwonlyargs + node.args.args[1:]:
                assert takes_any or argument.arg in parameters, (
                    f"ophyd's {type(probe).__name__}() takes no {argument.arg!r}"
                )


def test_the_names_exported_are_ophyds_own_classes():
    import ophyd
    import ophyd.status

    assert ophyd_types.Signal is ophyd.Signal and ophyd_types.Device is ophyd.Device
    assert ophyd_types.DeviceStatus is ophyd.status.DeviceStatus
    assert set(ophyd_types.__all__) <= set(declared())
