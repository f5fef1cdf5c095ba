"""Publishing to a real Tiled server (started once per session on loopback) and reading the runs back
through the Tiled client. The dev extra installs Tiled with its server, so these tests always run."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import stamina
import yaml

from drivers.testing import wait_for
from sdl.cli import main
from sdl.exports.tiled import LivePublisher, publish_campaign
from sdl.spec.status import ExperimentStatus
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

    with Store(data, read_only=True) as store:
        publisher = LivePublisher(
            client, lambda start: None, factory=lambda _client: Refusing(), probe=lambda _client: False
        )
        for e in store.experiments(campaign_id):
            for name, doc in store.documents(e.id):
                publisher(name, doc)  # never raises, never waits on the server
        report = publisher.close()
    assert caplog.text.count("Tiled stopped answering") == 1
    assert report.outage == "ConnectionError: the server went away"
    assert report.waiting == [1, 2, 3, 4] and report.caught_up == []


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


# -- an outage mid-campaign ----------------------------------------------------------------------------------


class Outage:
    """A real Tiled server on one port and directory that the test takes down and brings back."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.port = directory, unused_port()
        self.server: Any = None
        self.start()

    def start(self) -> None:
        from tiled.server import SimpleTiledServer

        self.server = SimpleTiledServer(directory=self.directory, api_key="secret", port=self.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for_run(self, uid: str, timeout: float = 120.0) -> None:
        """Poll (a few times a second, with a deadline) until the run's start is in the catalogue."""
        from tiled.client import from_uri

        client = from_uri(self.uri, api_key="secret")
        try:
            deadline = time.monotonic() + timeout
            while uid not in client:
                assert time.monotonic() < deadline, f"run {uid} never reached the server"
                time.sleep(0.05)
        finally:
            client.context.close()


def test_a_tiled_outage_mid_campaign_costs_no_experiment_and_the_runs_wait(tmp_path, monkeypatch, capsys):
    """Killed while experiment 2's run is written, back after experiment 4, killed again during experiment 5
    and gone to the end: every experiment is done, the runs that waited go out when the server answers,
    the run says what still waits, and `sdl publish` sends it afterwards."""
    import sdl.cli.run as cli_run

    outage = Outage(tmp_path / "tiled")
    experiment = {"seq": 0}
    uids: dict[int, str] = {}
    down_at = {(2, "event"), (5, "event")}

    class Watched(cli_run.LivePublisher):  # type: ignore[misc]
        def __call__(self, name: str, doc: dict[str, Any]) -> None:
            if name == "start":
                experiment["seq"] = doc["sdl_experiment"]
                uids[doc["sdl_experiment"]] = doc["uid"]
            super().__call__(name, doc)
            seq = experiment["seq"]
            if (seq, name) not in down_at:
                return
            down_at.remove((seq, name))
            # Once the runs before this one are in Tiled (the publisher writes on a thread of its own)
            # and this one's start is, the server goes down while the rest of this run is written.
            earlier = set(range(1, seq))
            wait_for(lambda: earlier <= getattr(self, "published", earlier), timeout=120)
            outage.wait_for_run(uids[seq])
            outage.stop()

    class Shown(cli_run.Shown):  # type: ignore[misc]
        def experiment_finished(self, e: Any, history: list[Any]) -> None:
            super().experiment_finished(e, history)
            if e.seq == 4:
                outage.start()  # back between experiments 4 and 5

    monkeypatch.setattr(cli_run, "LivePublisher", Watched)
    monkeypatch.setattr(cli_run, "Shown", Shown)
    monkeypatch.setenv("TILED_API_KEY", "secret")
    data = tmp_path / "data"
    try:
        # The Tiled client retries a failed request for up to 45 s; once is enough to see the outage here.
        with stamina.set_testing(True, attempts=1):
            code = main(
                ["run", str(demo_campaign(tmp_path, 6)), "--tiled", outage.uri, "--data-dir", str(data)]
            )
        out = " ".join(capsys.readouterr().out.split())
        assert code == 0, out
        with Store(data, read_only=True) as store:
            (record,) = store.campaigns()
            history = store.experiments(record.id)
        assert [e.status for e in history] == [ExperimentStatus.DONE] * 6
        assert "stopped answering during the campaign" in out
        assert "were published when it answered again (experiments 2, 3, 4)" in out
        assert "2 run(s) are in the store only (experiments 5, 6); no experiment was lost" in out
        assert f"sdl publish {record.id} --tiled {outage.uri}" in out

        outage.start()
        from tiled.client import from_uri

        client = from_uri(outage.uri, api_key="secret")
        try:
            with Store(data, read_only=True) as store:
                starts = {e.seq: store.documents(e.id)[0][1]["uid"] for e in history}
            assert {seq for seq, uid in starts.items() if uid in client} == {1, 2, 3, 4, 5}
            assert not client[starts[5]].metadata.get("stop")  # only in part: it went down mid-run
            assert main(["publish", record.id, "--tiled", outage.uri, "--data-dir", str(data)]) == 0
            assert f"published 2 run(s) of {record.id}" in capsys.readouterr().out
            for e in history:
                run = client[starts[e.seq]]
                assert run.metadata["stop"]["exit_status"] == "success"
                assert run["primary"]["spectrometer_absorbance"].read().shape == (1, 2068)
                # The results are in Tiled too, with their units.
                assert run["results"]["distance"].read().tolist() == [e.measurements["distance"]]
                assert run["results"].metadata["data_keys"]["distance"]["units"] == "absorbance"
        finally:
            client.context.close()
    finally:
        outage.stop()
