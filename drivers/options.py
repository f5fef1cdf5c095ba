"""Checking a driver's options offline, with pydantic, in the words a lab-file author needs.

Every driver package exports an ``Options`` model (``extra="forbid"``); ``make_device`` calls
:func:`validate_options` before it builds anything. The ``ValidationError`` it raises has locs
relative to ``options`` (``pumps.yellow.diameter_mm``), so ``sdl validate`` can point at the lab
file's line, and an unknown option is reported with the options that are allowed there.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from drivers.reply_timer import MIN_REPLY_TIMEOUT_S

M = TypeVar("M", bound=BaseModel)

#: The base of every driver's options model: unknown keys are errors, values are not coerced silently.
STRICT = ConfigDict(extra="forbid", frozen=True)


def min_reply_timeout() -> Any:
    """The ``min_reply_timeout`` option every driver has: the floor of its learned reply timeout."""
    return Field(
        MIN_REPLY_TIMEOUT_S,
        gt=0,
        description="s: the shortest reply timeout learned from the link's round trips "
        "(set it to the reply timeout to keep that fixed)",
    )


def validate_options(model: type[M], options: Mapping[str, Any], *, instrument: str) -> M:
    """``model`` validated from ``options``; a ValidationError naming each bad option and what is allowed."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        details: list[InitErrorDetails] = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            if error["type"] == "extra_forbidden":
                allowed = ", ".join(sorted(_fields_at(model, loc[:-1]))) or "none"
                kind: Any = PydanticCustomError(
                    "unknown_option",
                    "unknown option '{option}'; allowed: {allowed}",
                    {"option": str(loc[-1]), "allowed": allowed},
                )
                details.append({"type": kind, "loc": loc, "input": error.get("input")})
            else:
                detail: InitErrorDetails = {"type": error["type"], "loc": loc, "input": error.get("input")}
                if "ctx" in error:
                    detail["ctx"] = error["ctx"]
                details.append(detail)
        raise ValidationError.from_exception_data(f"{instrument} options", details) from None


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model found by following ``loc`` down from ``model``."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        elif typing.get_origin(annotation) in (dict, Mapping, list, tuple):
            annotation = typing.get_args(annotation)[-1]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """``X`` from ``X | None`` or ``Annotated[X, ...]``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation


__all__ = ["STRICT", "min_reply_timeout", "validate_options"]
