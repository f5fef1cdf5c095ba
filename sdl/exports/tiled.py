"""Publishing runs to a Tiled server, the bluesky ecosystem's data service, with bluesky's `TiledWriter`.

`sdl publish CAMPAIGN_ID --tiled URL` sends every experiment's stored documents; `sdl run --tiled URL`
sends them live as the RunEngine emits them. Either way the store stays the record: a Tiled server that is
down or refuses a run never costs an experiment (the live writer logs the problem and stops publishing),
and `sdl publish` can send the campaign again afterwards. Tiled is an optional dependency
(``pip install 'sdl[tiled]'``); nothing needs it to run a campaign.

Runs appear in the catalogue under their start document's uid, with the campaign id and experiment number
in the start metadata (``sdl_campaign``, ``sdl_experiment``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sdl.store import Store

log = logging.getLogger(__name__)
API_KEY_VARIABLE = "TILED_API_KEY"


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


@dataclass
class Published:
    runs: list[str] = field(default_factory=list)  # start uids
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (experiment, why)


def publish_campaign(store: Store, campaign_id: str, client: Any) -> Published:
    """Send every experiment's documents to Tiled; a run already there is skipped, not written twice."""
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
        if start["uid"] in client:
            result.skipped.append((experiment.seq, f"already published as {start['uid']}"))
            continue
        writer = writer_for(client)
        for name, doc in as_emitted(documents):
            writer(name, doc)
        result.runs.append(start["uid"])
    return result


def as_emitted(documents: list[tuple[str, dict[str, Any]]]) -> Iterator[tuple[str, dict[str, Any]]]:
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


class LivePublisher:
    """A RunEngine document callback that writes to Tiled as documents come, and never raises: a failure
    is logged once and publishing stops for the rest of the run (the store has every document)."""

    def __init__(self, client: Any, factory: Callable[[Any], Any] = writer_for) -> None:
        self.client = client
        self.factory = factory
        self._writer: Any = None
        self._broken = False

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            self._writer, self._broken = self.factory(self.client), False
        if self._broken or self._writer is None:
            return
        try:
            self._writer(name, doc)
        except Exception as exc:
            self._broken = True
            log.warning(
                "publishing to Tiled failed (%s: %s); the run stays in the store only; "
                "send it later with `sdl publish`",
                type(exc).__name__,
                exc,
            )
