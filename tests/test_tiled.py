"""Publishing to a real Tiled server (started once per session on loopback) and reading the runs back
through the Tiled client. The dev extra installs Tiled with its server, so these tests always run."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import stamina
import yaml

from sdl.cli import main
from sdl.exports.tiled import LivePublisher, publish_campaign
from sdl.store import Store

# bluesky 1.15's TiledWriter calls tiled's append_partition with its arguments in the old order, which
# tiled 0.2 deprecates once per run ("The order of arguments has changed: please use
# append_partition(partition, dataframe)."); exactly that message is expected here, nothing broader (a
# warning filter cannot hold the colon, so it matches the message up to it).
pytestmark = pytest.mark.filterwarnings("ignore:The order of arguments has changed:DeprecationWarning")


@pytest.fixture(scope="session")
def tiled_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tiled.server import SimpleTiledServer

    server = SimpleTiledServer(directory=tmp_path_factory.mktemp("tiled"), api_key="secret")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def client(tiled_server: Any) -> Iterator[Any]:
    from tiled.client import from_uri

    client = from_uri(base_uri(tiled_server), api_key="secret")
    yield client
    client.context.close()


def base_uri(server: Any) -> str:
    """The server's address without the API key SimpleTiledServer appends as a query."""
    return server.uri.split("?", 1)[0]


def test_every_demo_experiment_is_read_back_from_tiled(demo_record, tiled_server, client, capsys):
    data, campaign_id = demo_record
    assert main(["publish", campaign_id, "--tiled", base_uri(tiled_server), "--api-key", "secret",
                 "--data-dir", str(data)]) == 0  # fmt: skip
    with Store(data, read_only=True) as store:
        experiments = store.experiments(campaign_id)
        assert f"published {len(experiments)} run(s)" in capsys.readouterr().out
        for e in experiments:
            documents = store.documents(e.id)
            start = documents[0][1]
            run = client[start["uid"]]
            assert run.metadata["start"]["sdl_campaign"] == campaign_id
            assert run.metadata["start"]["sdl_experiment"] == e.seq
            assert run.metadata["start"]["recipe"] == e.recipe
            assert run.metadata["stop"]["exit_status"] == "success"
            # Each data key is read as its own array (the stream's composite read of a whole table
            # renders array columns as text in tiled 0.2).
            event = next(doc for name, doc in documents if name == "event")
            absorbance = run["primary"]["spectrometer_absorbance"].read()
            stored = np.array(event["data"]["spectrometer_absorbance"], dtype=float)  # null: NaN
            assert absorbance.shape == (1, 2068) and np.allclose(absorbance[0], stored, equal_nan=True)
            dispensed = run["primary"]["water_pump_volume"].read()
            assert dispensed.tolist() == [event["data"]["water_pump_volume"]]
    # Published again, nothing is written twice.
    with Store(data, read_only=True) as store:
        again = publish_campaign(store, campaign_id, client)
    assert again.runs == [] and len(again.skipped) == len(experiments)


def test_a_live_publisher_never_fails_the_run(demo_record, client, caplog):
    data, campaign_id = demo_record

    class Refusing:
        def __call__(self, name: str, doc: dict[str, Any]) -> None:
            raise ConnectionError("the server went away")

    publisher = LivePublisher(client, factory=lambda _client: Refusing())
    with Store(data, read_only=True) as store:
        for name, doc in store.documents(store.experiments(campaign_id)[0].id):
            publisher(name, doc)  # never raises
    assert caplog.text.count("publishing to Tiled failed") == 1


def test_the_session_server_is_on_loopback(tiled_server):
    assert base_uri(tiled_server).startswith("http://127.0.0.1:")


def demo_campaign(tmp_path: Path, experiments: int) -> Path:
    """The colour-matching demo on its simulated bench, cut to a few experiments, as a campaign file."""
    root = Path(__file__).resolve().parents[1]
    campaign = root / "experiments" / "color_matching" / "campaign.yaml"
    spec = yaml.safe_load(campaign.read_text())
    spec["budget"].update(max_experiments=experiments, stop_when={})
    spec["lab"]["simulated"] = str(campaign.parent / "lab.yaml")
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def test_sdl_run_publishes_live(tiled_server, client, tmp_path, monkeypatch):
    path = demo_campaign(tmp_path, experiments=2)
    monkeypatch.setenv("TILED_API_KEY", "secret")
    data = tmp_path / "data"
    assert main(["run", str(path), "--tiled", base_uri(tiled_server), "--data-dir", str(data)]) == 0
    with Store(data, read_only=True) as store:
        (record,) = store.campaigns()
        for e in store.experiments(record.id):
            start = store.documents(e.id)[0][1]
            run = client[start["uid"]]
            assert run.metadata["start"]["sdl_experiment"] == e.seq
            assert run.metadata["stop"]["exit_status"] == "success"
            assert run["primary"]["spectrometer_absorbance"].read().shape == (1, 2068)


def unused_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sdl_run_refuses_a_tiled_server_it_cannot_reach_before_writing_anything(tmp_path, capsys):
    port = unused_port()
    data = tmp_path / "data"
    # The Tiled client retries a refused connection for about half a minute; once is enough here.
    with stamina.set_testing(True, attempts=1):
        code = main(["run", str(demo_campaign(tmp_path, 2)), "--tiled", f"http://127.0.0.1:{port}",
                     "--data-dir", str(data)])  # fmt: skip
    assert code == 2
    assert f"--tiled: cannot reach the Tiled server at http://127.0.0.1:{port}" in capsys.readouterr().err
    assert not data.exists()


def test_sdl_publish_to_a_server_it_cannot_reach_fails_with_the_reason(demo_record, capsys):
    data, campaign_id = demo_record
    port = unused_port()
    with stamina.set_testing(True, attempts=1):
        code = main(["publish", campaign_id, "--tiled", f"http://127.0.0.1:{port}", "--data-dir", str(data)])
    assert code == 1
    assert f"cannot reach the Tiled server at http://127.0.0.1:{port}" in capsys.readouterr().err
