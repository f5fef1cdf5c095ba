"""The lab service's Prometheus endpoint (`sdl daemon --metrics`): refused without its token, and with it the
figures of a campaign that ran — read back with prometheus-client's own parser, as Prometheus reads them."""

from __future__ import annotations

import json
import re
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from campaign_files import BAYESIAN, bowl
from prometheus_client.parser import text_string_to_metric_families

from sdl.api import models as m
from sdl.cli import main
from sdl.testing import LabServiceProcess, wait_for

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def get(url: str, token: str | None = None, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


NAME = re.compile(r"\bsdl_[a-z_]+")


def exposed(text: str) -> set[str]:
    """Every series name the exposition offers, with samples or not (a counter's _total, a histogram's
    _bucket...)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in suffixes.get(family.type, ("",))
    }


Key = tuple[str, frozenset[tuple[str, str]]]


def scrape_until(url: str, token: str, key: Key, value: float) -> dict[Key, float]:
    """Scrape until the series ``key`` reads ``value``; the whole scrape."""
    found: dict[Key, float] = {}

    def reads() -> bool:
        found.clear()
        found.update(samples(get(url, token)[1]))
        return found.get(key) == value

    wait_for(reads, 30, f"{key[0]} to read {value:g}")
    return found


def samples(text: str) -> dict[Key, float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_metrics_of_a_campaign_for_the_token_only(tmp_path: Path) -> None:
    lab = tmp_path / "lab.yaml"
    lab.write_text(
        textwrap.dedent(
            """\
            name: compute
            instruments:
              probe: {driver: "daemon_procedures:make_probe", options: {broken: "/nonexistent"}}
            workcells:
              w1: {}
              w2: {}
              w3: {devices: {probe: probe}}
            """
        )
    )
    campaign = bowl(tmp_path, 5, '{function: "daemon_procedures:bowl"}', optimizer=BAYESIAN)
    data = tmp_path / "data"
    service = LabServiceProcess(lab, data, "--metrics", "127.0.0.1:0", pythonpath=[TESTS, ROOT]).start()
    with service:
        url = json.loads((data / "daemon.json").read_text())["metrics"]
        token_file = data / "keys" / "metrics.token"
        assert token_file.stat().st_mode & 0o077 == 0
        token = token_file.read_text().strip()

        assert get(url)[0] == 401
        assert get(url, "not-" + token)[0] == 401
        assert get(url.replace("/metrics", "/"), token)[0] == 404
        assert get(url, token, method="POST")[0] == 404

        service.call(m.QuarantineInstrument(name="probe", reason="lamp replaced"))
        with service.client() as client:
            campaign_id = client.submit(campaign).campaign_id
        wait_for(
            lambda: service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.status == "completed",
            120,
            "the campaign to complete",
        )
        done = ("sdl_experiments", frozenset({("status", "done")}))
        figures = scrape_until(url, token, done, 5)
        assert figures[("sdl_events_total", frozenset({("topic", "experiment.done")}))] == 5
        assert figures[("sdl_events_total", frozenset({("topic", "campaign.finished")}))] == 1
        assert figures[("sdl_experiments_in_flight", frozenset())] == 0
        assert figures[("sdl_quarantines_total", frozenset({("instrument", "probe")}))] == 1
        assert figures[("sdl_instruments", frozenset({("state", "quarantined")}))] == 1
        assert figures[("sdl_instruments", frozenset({("state", "ok")}))] == 0
        assert sum(v for (name, _), v in figures.items() if name == "sdl_workcells") == 3
        assert figures[("sdl_proposal_seconds_count", frozenset())] == 5
        assert figures[("sdl_api_request_seconds_count", frozenset())] >= 2  # the submit, the status reads
        assert figures[("sdl_store_write_seconds_count", frozenset())] >= 1
        assert figures[("sdl_standbys", frozenset())] == 0
        assert figures[("sdl_serving", frozenset())] == 1

        # The example Grafana dashboard asks only for what the service serves.
        served = exposed(get(url, token)[1])
        dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
        exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
        asked = {name for expr in exprs for name in NAME.findall(expr)}
        assert asked and asked <= served, asked - served
        assert service.stop() == 0


@pytest.mark.parametrize("value", ["9464", "localhost:http", "127.0.0.1:70000"])
def test_a_metrics_address_that_is_not_host_and_port_is_refused(
    tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: compute\nworkcells:\n  w1: {}\n")
    code = main(["daemon", "--lab", str(lab), "--data-dir", str(tmp_path / "d"), "--metrics", value])
    assert code == 2
    assert f"--metrics {value}: expected HOST:PORT" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_a_standby_serves_its_metrics_while_it_waits_and_the_labs_once_it_took_over(tmp_path: Path) -> None:
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: compute\nworkcells:\n  w1: {}\n")
    data = tmp_path / "data"
    metrics = ("--metrics", "127.0.0.1:0")
    primary = LabServiceProcess(lab, data, *metrics, pythonpath=[TESTS, ROOT], name="primary").start()
    standby = LabServiceProcess(lab, data, *metrics, "--standby", pythonpath=[TESTS, ROOT], name="standby")
    standby.start(wait=False)
    try:
        token = (data / "keys" / "metrics.token").read_text().strip()
        said = re.compile(r"metrics on (\S+)")
        url = wait_for(lambda: said.findall(standby.log_text(whole=True)), 60, "the standby's metrics")[0]
        serving = ("sdl_serving", frozenset())
        waiting = wait_for(lambda: samples(get(url, token)[1]), 30, "the standby's figures")
        assert waiting == {serving: 0}  # nothing of the lab's: it does not serve it
        assert get(url)[0] == 401
        standbys = ("sdl_standbys", frozenset())
        ours = json.loads((data / "daemon.json").read_text())["metrics"]
        scrape_until(ours, token, standbys, 1)

        primary.kill9()
        wait_for(standby.serving, 60, "the standby to take over")
        idle = ("sdl_workcells", frozenset({("state", "idle")}))
        taken = scrape_until(url, token, idle, 1)
        assert taken[serving] == 1 and taken[standbys] == 0
        assert standby.stop() == 0
    finally:
        for process in (primary, standby):
            if process.process is not None and process.process.poll() is None:
                process.kill9()
        for process in (primary, standby):
            process.assert_nothing_left(60)
