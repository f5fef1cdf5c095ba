"""Turn a run's event-model documents into named measurements, by the campaign's extraction rules."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sdl.spec.campaign import MeasurementRule

Documents = Sequence[tuple[str, Mapping[str, Any]]]
Extractor = Callable[[list[tuple[str, dict[str, Any]]]], Mapping[str, Any]]


class ExtractionError(ValueError):
    """The documents do not hold what a measurement rule asks for."""


def stream_values(documents: Documents, stream: str, field: str) -> list[Any]:
    """Values of ``field`` in the events of ``stream``, in event order (bulk events included)."""
    descriptors = {doc["uid"]: doc for name, doc in documents if name == "descriptor"}
    wanted = {uid for uid, doc in descriptors.items() if doc.get("name", "primary") == stream}
    values: list[Any] = []
    for name, doc in documents:
        if name == "event" and doc.get("descriptor") in wanted:
            if field in doc.get("data", {}):
                values.append(doc["data"][field])
        elif name == "event_page" and doc.get("descriptor") in wanted:
            values.extend(doc.get("data", {}).get(field, []))
    return values


def apply_rule(documents: Documents, measurement: str, rule: MeasurementRule) -> float:
    values = stream_values(documents, rule.stream, rule.field)
    if not values:
        streams = sorted({d.get("name", "primary") for n, d in documents if n == "descriptor"})
        keys = sorted(
            {k for n, d in documents if n == "descriptor" and d.get("name", "primary") == rule.stream
             for k in d.get("data_keys", {})}
        )  # fmt: skip
        raise ExtractionError(
            f"measurement {measurement!r}: no values of field {rule.field!r} in stream {rule.stream!r} "
            f"(streams: {', '.join(streams) or 'none'}; "
            f"fields in {rule.stream!r}: {', '.join(keys) or 'none'})"
        )
    try:
        numbers = [_scalar(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise ExtractionError(
            f"measurement {measurement!r}: field {rule.field!r} is not numeric: {exc}"
        ) from None
    reducers: dict[str, Callable[[list[float]], float]] = {
        "last": lambda xs: xs[-1],
        "first": lambda xs: xs[0],
        "mean": lambda xs: math.fsum(xs) / len(xs),
        "max": max,
        "min": min,
        "sum": math.fsum,
    }
    return float(reducers[rule.reduce](numbers))


def extract(
    documents: Documents,
    rules: Mapping[str, MeasurementRule],
    extractor: Extractor | None = None,
) -> dict[str, Any]:
    """Measurements from the rules, then from the extractor function (which wins on a name clash)."""
    measurements: dict[str, Any] = {name: apply_rule(documents, name, rule) for name, rule in rules.items()}
    if extractor is not None:
        extra = extractor([(n, dict(d)) for n, d in documents])
        if not isinstance(extra, Mapping):
            raise ExtractionError(
                f"the extractor returned {type(extra).__name__}, not a dict of measurements"
            )
        measurements.update(extra)
    return measurements


def _scalar(value: Any) -> float:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(f"an array of {len(value)} values (reduce it in an extractor function)")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{value!r}")
    return float(value)
