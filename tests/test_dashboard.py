"""The web dashboard in a real headless Chromium, against `sdl daemon --http` running the colour-matching
campaign on the simulated two-station lab (real drivers, byte-level simulators).

One lab service and one browser for the module. Without Debian's chromium and chromium-driver these tests
are skipped with the reason (CI installs both and fails instead of skipping)."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_daemon_lab import ROOT, TESTS, colour_campaign, lab_file

from sdl.access.keys import KeyRing, generate, read_public
from sdl.access.tokens import TokenFile
from sdl.api import models as m
from sdl.testing import LabServiceProcess, wait_for

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def browser_or_skip() -> Any:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        reason = (
            f"no headless browser: {', '.join(missing)} missing (apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; .ci/run installs them when CI=true")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabServiceProcess, str, str]]:
    """The lab service with a dashboard, an operator's sign-in token, and a colour campaign running."""
    tmp = tmp_path_factory.mktemp("dashboard")
    data = tmp / "data"
    public, secret = generate(tmp, "oleg")
    KeyRing(data / "keys.yaml").add("oleg", read_public(public), "operator")
    token = TokenFile(data / "tokens.yaml").issue("oleg-laptop", secret)
    service = LabServiceProcess(lab_file(tmp), data, "--http", "127.0.0.1:0", pythonpath=[TESTS, ROOT])
    service.start()
    try:
        with service.client() as client:
            campaign_id = client.submit(colour_campaign(tmp, "dashboard", 40)).campaign_id
        yield service, token, campaign_id
    finally:
        if service.process is not None and service.process.poll() is None:
            service.call(m.AbortCampaign(campaign_id=campaign_id)) if _running(service, campaign_id) else None
            assert service.stop() == 0, service.log_text()
        service.assert_nothing_left()


def _running(service: LabServiceProcess, campaign_id: str) -> bool:
    return service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.status == "running"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = browser_or_skip()
    try:
        yield driver
    finally:
        driver.quit()


def url_of(service: LabServiceProcess) -> str:
    return str(json.loads((service.data_dir / "daemon.json").read_text())["http"])


def open_page(browser: Any, url: str) -> None:
    browser.get(url)
    wait_for(lambda: browser.execute_script("return document.body.dataset.ready === '1'"), 60, "the page")


def click(browser: Any, css: str, what: str) -> None:
    """Click the element when it is there (the page re-renders parts of itself as events arrive)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def clicked() -> bool:
        try:
            found = browser.find_elements(By.CSS_SELECTOR, css)
            if found:
                found[0].click()
            return bool(found)
        except StaleElementReferenceException:
            return False

    wait_for(clicked, 30, what)


def controls(browser: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, ".control")


def test_a_viewer_sees_the_lab_live_and_no_controls(
    browser: Any, lab: tuple[LabServiceProcess, str, str]
) -> None:
    service, _, campaign_id = lab
    browser.delete_all_cookies()
    open_page(browser, url_of(service))
    text = browser.find_element("id", "lab-panel").text
    for name in ("station_a", "station_b", "pumps_a", "arm", "spectrometer"):
        assert name in text
    assert campaign_id in browser.find_element("id", "campaigns").text
    assert controls(browser) == []
    assert browser.find_element("id", "submit-area").text == ""


def test_the_progress_plot_gains_points_as_experiments_finish(
    browser: Any, lab: tuple[LabServiceProcess, str, str]
) -> None:
    service, _, campaign_id = lab
    open_page(browser, url_of(service))

    def plotted() -> int:
        return int(browser.find_element("id", "convergence").get_attribute("data-experiments"))

    before = plotted()
    finished = len([e for e in service.call(m.ListExperiments(campaign_id=campaign_id)).experiments
                    if e.status in ("done", "failed", "faulted")])  # fmt: skip
    assert before >= finished - 2  # what had finished when the page loaded (a few may finish meanwhile)
    wait_for(lambda: plotted() >= before + 2, 120, "two more experiments on the plot without a reload")
    assert int(browser.find_element("id", "convergence").get_attribute("data-drawn")) > 0


def test_a_viewer_is_refused_by_the_server_even_without_the_page(
    lab: tuple[LabServiceProcess, str, str],
) -> None:
    service, _, campaign_id = lab
    request = urllib.request.Request(
        f"{url_of(service)}/api/call/campaign.pause",
        data=json.dumps({"campaign_id": campaign_id}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403
    error = json.loads(refused.value.read())["error"]
    assert error == {
        "type": "forbidden",
        "message": "viewer 'anonymous' may not campaign.pause; needs operator",
        "details": [],
    }
    entries = service.call(m.ListAudit(who="anonymous")).entries
    assert entries[-1].result.startswith("refused: viewer 'anonymous' may not campaign.pause")
    assert entries[-1].origin == "web 127.0.0.1"


def test_an_operator_signs_in_and_pauses_the_campaign_from_the_page(
    browser: Any, lab: tuple[LabServiceProcess, str, str]
) -> None:
    from selenium.webdriver.common.by import By

    service, token, campaign_id = lab
    open_page(browser, url_of(service))
    browser.find_element("id", "token").send_keys(token)
    browser.find_element("id", "signin").click()
    wait_for(lambda: "oleg" in browser.find_element("id", "who").text, 30, "the operator signed in")
    wait_for(lambda: browser.execute_script("return document.body.dataset.ready === '1'"), 60, "the page")
    assert browser.find_elements(By.ID, "estop")  # an operator may always e-stop
    click(browser, "[data-do='campaign.pause']", "the pause button")
    wait_for(
        lambda: service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.state == "paused",
        30,
        "the campaign paused (through the API)",
    )
    [entry] = service.call(m.ListAudit(action="campaign.pause", refused=False)).entries
    assert (entry.who, entry.result, entry.origin) == ("oleg", "ok", "web 127.0.0.1")
    click(browser, "[data-do='campaign.resume']", "the resume button")
    wait_for(
        lambda: service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.state == "running",
        30,
        "resumed",
    )
    # an operator is not an admin: no quarantine buttons
    assert browser.find_elements(By.CSS_SELECTOR, "[data-quarantine]") == []


def test_a_quarantine_shows_its_reason_live(browser: Any, lab: tuple[LabServiceProcess, str, str]) -> None:
    from selenium.webdriver.common.by import By

    service, _, _ = lab
    open_page(browser, url_of(service))
    service.call(m.QuarantineInstrument(name="water_b", reason="leaking seal"))
    try:
        row = browser.find_element(By.CSS_SELECTOR, "tr[data-instrument='water_b']")
        wait_for(
            lambda: (
                "leaking seal" in browser.find_element(By.CSS_SELECTOR, "tr[data-instrument='water_b']").text
            ),
            30,
            "the reason on the page",
        )
        row = browser.find_element(By.CSS_SELECTOR, "tr[data-instrument='water_b']")
        assert "quarantined" in row.text
    finally:
        service.call(m.ReleaseInstrument(name="water_b", check=False))
    wait_for(
        lambda: (
            "leaking seal" not in browser.find_element(By.CSS_SELECTOR, "tr[data-instrument='water_b']").text
        ),
        30,
        "the release on the page",
    )


def test_the_assets_ship_in_the_package() -> None:
    """Nothing is loaded from the internet: the page refers only to its own assets."""
    from sdl.dashboard.app import static_dir

    names = {p.name for p in Path(str(static_dir())).iterdir()}
    assert {"index.html", "app.js", "app.css"} <= names
    page = (Path(str(static_dir())) / "index.html").read_text()
    assert "http://" not in page and "https://" not in page
    assert shutil.which("python") is not None
