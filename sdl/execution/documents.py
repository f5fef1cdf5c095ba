"""An experiment's event-model documents: written as the RunEngine emits them, then completed with what
only the experiment knows once its run is over.

* Every document but the run's ``stop`` is committed to the store (and handed to the live publisher) as it
  comes, so a crash keeps every measurement taken up to that moment.
* The ``stop`` is held until the outcome is known. The measurements derived from the run (``distance``,
  ``peak_absorbance``...) then become a stream of the run's own, ``results``, one event whose data keys
  carry the campaign's declared units; and when the run ended well but the experiment did not (the
  extraction failed, an objective's value is missing), the stop says so: ``fail``, with the reason. The
  stop is recorded with the outcome, in one transaction.
* An experiment whose plan failed (or was stopped) before it opened its run still gets one: a ``start``
  with the same metadata and a ``stop`` with its exit status and reason, so every experiment of a plan
  procedure is a run that any bluesky tool, and Tiled, can see.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import event_model

from sdl.spec.status import ExperimentStatus

Document = tuple[int, str, dict[str, Any]]
ExitStatus = Literal["success", "abort", "fail"]
RESULTS_STREAM = "results"
EXIT_STATUS: dict[ExperimentStatus, ExitStatus] = {
    ExperimentStatus.DONE: "success",
    ExperimentStatus.FAILED: "fail",
    ExperimentStatus.FAULTED: "fail",
    ExperimentStatus.INTERRUPTED: "abort",
}


class Recorder(Protocol):
    def append_documents(self, experiment_id: int, documents: list[Document]) -> None: ...


class DocumentSink:
    """RunEngine subscriber for one experiment: commits each document as it comes, except the run's last
    (``stop``), which :meth:`close` completes and hands back to be recorded with the outcome.

    ``metadata``: what the run's start carries (given to the RunEngine too); ``units``: the declared units
    of each measurement, for the results stream."""

    def __init__(
        self,
        recorder: Recorder,
        experiment_id: int,
        publish: Callable[[str, dict[str, Any]], None] | None,
        metadata: Mapping[str, Any],
        units: Mapping[str, str],
    ) -> None:
        self.recorder = recorder
        self.experiment_id = experiment_id
        self.publish = publish
        self.metadata = dict(metadata)
        self.units = dict(units)
        self._documents: list[tuple[str, dict[str, Any]]] = []
        self._held: list[dict[str, Any]] = []
        self._recorded = 0

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        self._documents.append((name, doc))
        if name == "stop":
            self._held.append(doc)
            return
        self._recorded += 1
        self.recorder.append_documents(self.experiment_id, [(self._recorded, name, doc)])
        if self.publish is not None:
            self.publish(name, doc)

    def all(self) -> list[tuple[str, dict[str, Any]]]:
        return list(self._documents)

    def close(
        self, status: ExperimentStatus, failure: str | None, measurements: Mapping[str, Any] | None
    ) -> list[Document]:
        """The run's last documents, to be recorded with the outcome (and published now): its results and its
        stop; a start and a stop when the plan never opened a run."""
        starts = [doc for name, doc in self._documents if name == "start"]
        exit_status = EXIT_STATUS[status]
        reason = failure or ""
        out: list[tuple[str, dict[str, Any]]] = []
        if not starts:
            bundle = event_model.compose_run(metadata=self.metadata)
            out.append(("start", dict(bundle.start_doc)))
            out.append(("stop", dict(bundle.compose_stop(exit_status=exit_status, reason=reason))))
        elif len(starts) == 1 and len(self._held) == 1:
            stop = dict(self._held[0])
            counts = dict(stop.get("num_events") or {})
            if measurements:
                out += self._results(starts[0], measurements)
                counts[RESULTS_STREAM] = 1
            if stop.get("exit_status") == "success" and exit_status != "success":
                stop.update(exit_status=exit_status, reason=reason)  # the run went well, the experiment not
            stop["num_events"] = counts
            out.append(("stop", stop))
        else:  # several runs, or one cut short: their stops as the RunEngine wrote them
            out += [("stop", doc) for doc in self._held]
        self._held = []
        numbered = []
        for name, doc in out:
            self._recorded += 1
            numbered.append((self._recorded, name, doc))
            if self.publish is not None:
                self.publish(name, doc)
        return numbered

    def _results(
        self, start: dict[str, Any], measurements: Mapping[str, Any]
    ) -> list[tuple[str, dict[str, Any]]]:
        data = {k: _plain(v) for k, v in measurements.items()}
        data_keys: dict[str, Any] = {}
        for key, value in data.items():
            spec: dict[str, Any] = {"source": "sdl:results", **_kind(value)}
            if self.units.get(key):
                spec["units"] = self.units[key]
            data_keys[key] = spec
        bundle = event_model.compose_descriptor(
            start=start,  # type: ignore[arg-type]  # a RunStart: the RunEngine's own start document
            streams={},
            event_counters={},
            name=RESULTS_STREAM,
            data_keys=data_keys,
            object_keys={RESULTS_STREAM: list(data)},
        )
        descriptor = dict(bundle.descriptor_doc)
        event = dict(bundle.compose_event(data=data, timestamps=dict.fromkeys(data, descriptor["time"])))
        return [("descriptor", descriptor), ("event", event)]


def _plain(value: Any) -> Any:
    """A measurement as a document holds it: numpy values as Python's, anything else not JSON as text."""
    if hasattr(value, "tolist") and callable(value.tolist):
        value = value.tolist()
    if isinstance(value, dict):
        return json.dumps(value, default=repr)
    return value


def _kind(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"dtype": "boolean", "shape": []}
    if isinstance(value, int):
        return {"dtype": "integer", "shape": []}
    if isinstance(value, float) or value is None:
        return {"dtype": "number", "shape": []}
    if isinstance(value, list):
        return {"dtype": "array", "shape": [len(value)]}
    return {"dtype": "string", "shape": []}
