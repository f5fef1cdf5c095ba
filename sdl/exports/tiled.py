"""Publishing runs to a Tiled server, the bluesky ecosystem's data service, with bluesky's `TiledWriter`.

`sdl publish CAMPAIGN_ID --tiled URL` sends every experiment's stored documents; `sdl run --tiled URL`
sends them live as the RunEngine emits them. Either way the store stays the record, and a Tiled server that
is down never costs an experiment:

* the live publisher writes on a thread of its own, so the RunEngine never waits on the network (the
  Tiled client retries a failed request for up to 45 s) and never sees its errors;
* when the server cannot be reached, the runs wait in the store: before each later run the publisher asks
  the server's ``/healthz`` (one short request), and once it answers, sends the runs that waited, from the
  store, in order; at the end of the campaign it tries once more, and says what still waits;
* a run the server took only in part (it went down mid-run) is written again whole: a run counts as
  published once its ``stop`` is there, by `sdl publish` too.

Tiled is an optional dependency (``pip install 'sdl[tiled]'``); nothing needs it to run a campaign. Runs
appear in the catalogue under their start document's uid, with the campaign id and experiment number in
the start metadata (``sdl_campaign``, ``sdl_experiment``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sdl.store import Store

log = logging.getLogger(__name__)
API_KEY_VARIABLE = "TILED_API_KEY"
#: How long the health probe waits for the server's answer (it is not retried).
PROBE_TIMEOUT_S = 3.0
#: How long closing the live publisher waits for the runs in its queue (one retry cycle of the client).
CLOSE_TIMEOUT_S = 60.0

Documents = list[tuple[str, dict[str, Any]]]


class TiledUnavailable(RuntimeError):
    """The Tiled client is not installed, or the server cannot be reached."""


def tiled_client(uri: str, api_key: str | None = None) -> Any:
    try:
        from tiled.client import from_uri
    except ImportError:
        raise TiledUnavailable(
            "publishing needs the Tiled client: pip install 'sdl[tiled]' (or 'tiled[client]')"
        ) from None
    try:
        return from_uri(uri, api_key=api_key or os.environ.get(API_KEY_VARIABLE))
    except Exception as exc:
        raise TiledUnavailable(
            f"cannot reach the Tiled server at {uri}: {type(exc).__name__}: {exc}"
        ) from None


def writer_for(client: Any) -> Any:
    from bluesky.callbacks.tiled_writer import TiledWriter

    return TiledWriter(client)


def healthy(client: Any) -> bool:
    """Whether the server answers its health check now (one request, a few seconds at most)."""
    import httpx

    url = client.context.api_uri.join("/healthz")
    try:
        return httpx.get(url, timeout=PROBE_TIMEOUT_S, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Published:
    runs: list[str] = field(default_factory=list[str])  # start uids
    skipped: list[tuple[int, str]] = field(default_factory=list[tuple[int, str]])  # (experiment, why)


def publish_campaign(store: Store, campaign_id: str, client: Any) -> Published:
    """Send every experiment's documents to Tiled; a run already there whole is skipped, not written twice,
    and one there only in part is written again."""
    result = Published()
    for experiment in store.experiments(campaign_id):
        documents = store.documents(experiment.id)
        if not documents:
            result.skipped.append((experiment.seq, "no documents (a function procedure, or it never ran)"))
            continue
        name, start = documents[0]
        if name != "start":
            result.skipped.append((experiment.seq, "its documents do not begin with a start document"))
            continue
        if not publish_run(client, documents):
            result.skipped.append((experiment.seq, f"already published as {start['uid']}"))
            continue
        result.runs.append(start["uid"])
    return result


def publish_run(client: Any, documents: Documents, factory: Callable[[Any], Any] = writer_for) -> bool:
    """Write one stored run; False if it is in the catalogue whole already. A run there only in part (no
    stop: the server went down while it was written) is replaced."""
    uid = documents[0][1]["uid"]
    if uid in client:
        node = client[uid]
        if (node.metadata or {}).get("stop"):
            return False
        # Only the part of our own run the server took before it went down: its data went with it.
        node.delete(recursive=True, external_only=False)
    writer = factory(client)
    for name, doc in as_emitted(documents):
        writer(name, doc)
    return True


def as_emitted(documents: Documents) -> Iterator[tuple[str, dict[str, Any]]]:
    """Stored documents as the RunEngine emitted them: the store keeps JSON, where a NaN in a spectrum is
    null; numeric data keys get their NaNs back (as numpy arrays), so Tiled stores numbers, not text."""
    import numpy as np

    numeric: dict[str, set[str]] = {}
    for name, doc in documents:
        if name == "descriptor":
            numeric[doc["uid"]] = {
                key
                for key, spec in doc.get("data_keys", {}).items()
                if spec.get("dtype") in ("number", "array")
            }
        elif name == "event" and numeric.get(doc.get("descriptor", "")):
            data = dict(doc["data"])
            for key in numeric[doc["descriptor"]] & set(data):
                if isinstance(data[key], list):
                    data[key] = np.array([np.nan if v is None else v for v in data[key]], dtype=float)
                elif data[key] is None:
                    data[key] = np.nan
            doc = {**doc, "data": data}
        yield name, doc


def stored_run(store: Store, start: dict[str, Any]) -> Documents | None:
    """The stored documents of the run ``start`` opened, once they are complete (end with its stop)."""
    campaign_id, seq = start.get("sdl_campaign"), start.get("sdl_experiment")
    found = [e for e in store.experiments(str(campaign_id)) if e.seq == seq] if campaign_id else []
    documents = store.documents(found[0].id) if found else []
    if documents and documents[0][1].get("uid") == start["uid"] and documents[-1][0] == "stop":
        return documents
    return None


@dataclass
class LiveReport:
    """What the live publisher did: what it published late, what still waits, what the server refused."""

    campaign_id: str | None = None
    #: the first error of the outage (None: the server never failed)
    outage: str | None = None
    #: experiment numbers published once the server was back
    caught_up: list[int] = field(default_factory=list[int])
    #: experiment numbers whose runs are still only in the store
    waiting: list[int] = field(default_factory=list[int])
    #: (experiment, why) for runs the server refused while it was up
    refused: list[tuple[int, str]] = field(default_factory=list[tuple[int, str]])


class LivePublisher:
    """A RunEngine document callback that hands documents to a thread writing them to Tiled: it never
    blocks the run and never raises into it. ``runs`` gives the stored documents of a run (its start) once
    they are complete: what a run that waited out an outage is sent from."""

    def __init__(
        self,
        client: Any,
        runs: Callable[[dict[str, Any]], Documents | None],
        *,
        factory: Callable[[Any], Any] = writer_for,
        probe: Callable[[Any], bool] = healthy,
    ) -> None:
        self.client = client
        self.runs = runs
        self.factory = factory
        self.probe = probe
        self.report = LiveReport()
        self._queue: queue.SimpleQueue[tuple[str, dict[str, Any]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}  # start uid -> experiment, in order (the run's thread writes)
        self._published: set[str] = set()
        self._waiting: dict[str, dict[str, Any]] = {}  # start uid -> start document
        self._down = False
        self._thread = threading.Thread(target=self._work, name="sdl-tiled", daemon=True)
        self._thread.start()

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            with self._lock:
                self._seen[doc["uid"]] = int(doc.get("sdl_experiment") or 0)
                self.report.campaign_id = self.report.campaign_id or doc.get("sdl_campaign")
        self._queue.put((name, doc))

    @property
    def published(self) -> set[int]:
        """The experiments whose runs are in Tiled whole (live, or once the server answered again)."""
        with self._lock:
            return {seq for uid, seq in self._seen.items() if uid in self._published}

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> LiveReport:
        """Send what is queued, try the runs that wait once more, and say what was not published."""
        self._queue.put(None)
        self._thread.join(timeout)
        with self._lock:
            refused = {seq for seq, _ in self.report.refused}
            self.report.waiting = [
                seq for uid, seq in self._seen.items() if uid not in self._published and seq not in refused
            ]
            return self.report

    # -- the publishing thread ----------------------------------------------------------------------------

    def _work(self) -> None:
        writer: Any = None
        current: dict[str, Any] | None = None  # the start of the run being written live, if it is
        while (item := self._queue.get()) is not None:
            name, doc = item
            if name == "start":
                self._catch_up()
                current, writer = (None, None) if self._down else (doc, None)
                if current is None:
                    self._waiting[doc["uid"]] = doc
                    continue
            if current is None:
                continue
            try:
                writer = writer or self.factory(self.client)
                writer(name, doc)
            except Exception as exc:
                self._lost(current, exc)
                current = None
                continue
            if name == "stop":
                with self._lock:
                    self._published.add(current["uid"])
                current = None
        self._catch_up()

    def _lost(self, start: dict[str, Any], exc: Exception) -> None:
        self._waiting[start["uid"]] = start
        if self._down:
            return
        self._down = True
        error = f"{type(exc).__name__}: {exc}".strip()
        self.report.outage = self.report.outage or error
        log.warning(
            "Tiled stopped answering during experiment %s (%s); the runs wait in the store and are "
            "published when it is back",
            start.get("sdl_experiment"),
            error,
        )

    def _catch_up(self) -> None:
        """While runs wait: if the server answers again, send them from the store, in order."""
        if not self._waiting or not self.probe(self.client):
            return
        self._down = False
        sent = []
        for uid, start in list(self._waiting.items()):
            documents = self.runs(start)
            if documents is None:
                continue  # not finished in the store yet: the next catch-up sends it
            seq = int(start.get("sdl_experiment") or 0)
            try:
                publish_run(self.client, documents, self.factory)
            except Exception as exc:
                if not self.probe(self.client):
                    self._lost(start, exc)  # down again: the rest waits too
                    break
                self.report.refused.append((seq, f"{type(exc).__name__}: {exc}"))
                log.error("Tiled refused the run of experiment %s: %s", seq, exc)
            else:
                sent.append(seq)
                with self._lock:
                    self._published.add(uid)
            del self._waiting[uid]
        if sent:
            self.report.caught_up += sent
            log.warning("Tiled answers again: published the run(s) of experiment(s) %s that waited", sent)

    def summary(self, uri: str, data_dir: Any) -> list[str]:
        """What to tell the operator at the end of the run (nothing when nothing went wrong)."""
        report = self.report
        lines = []
        if report.outage:
            lines.append(f"Tiled at {uri} stopped answering during the campaign ({report.outage}).")
        if report.caught_up:
            lines.append(
                f"Tiled: {len(report.caught_up)} run(s) that waited in the store were published when it "
                f"answered again (experiments {_numbers(report.caught_up)})."
            )
        for seq, why in report.refused:
            lines.append(f"Tiled refused the run of experiment {seq}: {why}")
        if report.waiting or report.refused:
            waiting = len(report.waiting) + len(report.refused)
            where = f" (experiments {_numbers(report.waiting)})" if report.waiting else ""
            lines.append(
                f"Tiled: {waiting} run(s) are in the store only{where}; no experiment was lost. Send them "
                f"with: sdl publish {report.campaign_id} --tiled {uri} --data-dir {data_dir}"
            )
        return lines


def _numbers(seqs: list[int]) -> str:
    return ", ".join(str(s) for s in seqs)
