"""An alert on the web page while it lasts: a quarantined instrument no automatic check will bring back
needs a person, and the page says so (in a real headless Chromium, against `sdl daemon --http`)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_dashboard import browser_or_skip, sign_in, text

from sdl.access.keys import KeyRing, generate, read_public
from sdl.access.tokens import TokenFile
from sdl.api import models as m
from sdl.testing import LabServiceProcess, wait_for

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = browser_or_skip()
    try:
        yield driver
    finally:
        driver.quit()


def test_an_instrument_that_needs_a_person_is_an_alert_on_the_page_until_released(
    browser: Any, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.write_text("the probe's lamp is out")
    lab = tmp_path / "lab.yaml"
    lab.write_text(
        textwrap.dedent(
            f"""\
            name: probes
            workers: {{heartbeat_timeout: 5}}
            instruments:
              probe: {{driver: "daemon_procedures:make_probe", options: {{broken: "{broken}"}}}}
            workcells:
              w1: {{devices: {{probe: probe}}}}
            health: {{quarantine_after: 1, auto_release: false}}
            """
        )
    )
    campaign = tmp_path / "probe.yaml"
    campaign.write_text(
        textwrap.dedent(
            """\
            name: probe
            parameters:
              - {name: x, type: real, low: 0.0, high: 1.0}
              - {name: y, type: real, low: 0.0, high: 1.0}
            objectives: [{measurement: loss}]
            budget: {max_experiments: 2}
            optimizer: {kind: random, seed: 1}
            requires: {devices: [probe]}
            procedure: {plan: "daemon_procedures:probe_plan", extractor: "daemon_procedures:plan_loss"}
            """
        )
    )
    data = tmp_path / "data"
    public, secret = generate(tmp_path, "vera")
    KeyRing(data / "keys.yaml").add("vera", read_public(public), "viewer")
    token = TokenFile(data / "tokens.yaml").issue("vera-desk", secret)
    service = LabServiceProcess(lab, data, "--http", "127.0.0.1:0", pythonpath=[TESTS, ROOT])
    with service.start(), service.client() as client:
        sign_in(browser, service, token, "vera")
        assert text(browser, "#alerts") == ""
        campaign_id = client.submit(campaign).campaign_id
        # Its one experiment is lost to the probe, which is quarantined; no automatic check is allowed.
        shown = wait_for(
            lambda: "ALERT" in (t := text(browser, "#alerts")) and t, 120, "the alert on the page"
        )
        assert "probe is quarantined and needs a person" in shown and "automatic release is off" in shown
        [alert] = client.call(m.Status()).alerts
        assert alert.subject == "probe"
        broken.unlink()  # mended
        client.call(m.ReleaseInstrument(name="probe", check=False))
        wait_for(lambda: text(browser, "#alerts") == "", 30, "the alert gone from the page")
        wait_for(
            lambda: client.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.status == "completed",
            120,
            "the campaign to complete",
        )
    assert service.stop() == 0
