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


ADMIN_TOKEN: dict[str, str] = {}
VIEWER_TOKEN: dict[str, str] = {}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabServiceProcess, str, str]]:
    """The lab service with a dashboard, an operator's sign-in token, and a colour campaign running (an
    admin's token in ADMIN_TOKEN, a viewer's in VIEWER_TOKEN)."""
    tmp = tmp_path_factory.mktemp("dashboard")
    data = tmp / "data"
    ring, tokens = KeyRing(data / "keys.yaml"), TokenFile(data / "tokens.yaml")
    public, secret = generate(tmp, "oleg")
    ring.add("oleg", read_public(public), "operator")
    token = tokens.issue("oleg-laptop", secret)
    public, secret = generate(tmp, "boss")
    ring.add("boss", read_public(public), "admin")
    ADMIN_TOKEN["boss"] = tokens.issue("boss-desk", secret)
    public, secret = generate(tmp, "ana")
    ring.add("ana", read_public(public), "viewer")
    VIEWER_TOKEN["ana"] = tokens.issue("ana-wall", secret)
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


def replaced_under_us(error: Exception) -> bool:
    """Whether selenium failed because the page re-rendered the element between finding and using it.

    Chrome reports that either as a stale reference or, when the node went away inside the same call, as an
    inspector error saying the node no longer belongs to the document.
    """
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    return isinstance(error, StaleElementReferenceException) or (
        isinstance(error, WebDriverException) and "does not belong to the document" in str(error.msg)
    )


def click(browser: Any, css: str, what: str) -> None:
    """Click the element when it is there (the page re-renders parts of itself as events arrive)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    def clicked() -> bool:
        try:
            found = browser.find_elements(By.CSS_SELECTOR, css)
            if found:
                found[0].click()
            return bool(found)
        except WebDriverException as error:
            if replaced_under_us(error):
                return False
            raise

    wait_for(clicked, 30, what)


def text(browser: Any, css: str) -> str:
    """The text of an element, or "" while it is not there (the page reloads, or re-renders that part)."""
    from selenium.common.exceptions import NoSuchElementException, WebDriverException
    from selenium.webdriver.common.by import By

    try:
        return str(browser.find_element(By.CSS_SELECTOR, css).text)
    except NoSuchElementException:
        return ""
    except WebDriverException as error:
        if replaced_under_us(error):
            return ""
        raise


def sign_in(browser: Any, service: LabServiceProcess, token: str, name: str) -> None:
    browser.delete_all_cookies()
    open_page(browser, url_of(service))
    browser.find_element("id", "token").send_keys(token)
    browser.find_element("id", "signin").click()
    wait_for(lambda: name in text(browser, "#who"), 30, f"{name} signed in")
    wait_for(
        lambda: browser.execute_script("return document.body && document.body.dataset.ready === '1'"),
        60,
        "the page",
    )


def answer_prompt(browser: Any, text: str | None) -> None:
    """Accept the page's prompt() or confirm() (typing ``text`` into a prompt) once it is shown."""
    from selenium.common.exceptions import NoAlertPresentException

    def shown() -> Any:
        try:
            return browser.switch_to.alert
        except NoAlertPresentException:
            return None

    alert = wait_for(shown, 30, "the dialog")
    if text is not None:
        alert.send_keys(text)
    alert.accept()


def as_viewer(browser: Any, service: LabServiceProcess) -> None:
    sign_in(browser, service, VIEWER_TOKEN["ana"], "ana")


def controls(browser: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, ".control")


def test_a_viewer_sees_the_lab_live_and_no_controls(
    browser: Any, lab: tuple[LabServiceProcess, str, str]
) -> None:
    service, _, campaign_id = lab
    as_viewer(browser, service)
    lab_panel = text(browser, "#lab-panel")
    for name in ("station_a", "station_b", "pumps_a", "arm", "spectrometer"):
        assert name in lab_panel
    assert campaign_id in text(browser, "#campaigns")
    assert controls(browser) == []
    assert text(browser, "#submit-area") == ""


def test_the_progress_plot_gains_points_as_experiments_finish(
    browser: Any, lab: tuple[LabServiceProcess, str, str]
) -> None:
    service, _, campaign_id = lab
    as_viewer(browser, service)

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
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {VIEWER_TOKEN['ana']}"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403
    error = json.loads(refused.value.read())["error"]
    assert error == {
        "type": "forbidden",
        "message": "viewer 'ana' may not campaign.pause; needs operator",
        "details": [],
    }
    entries = service.call(m.ListAudit(who="ana")).entries
    assert entries[-1].result.startswith("refused: viewer 'ana' may not campaign.pause")
    assert entries[-1].origin == "web 127.0.0.1"


def test_an_operator_signs_in_and_pauses_the_campaign_from_the_page(
    browser: Any, lab: tuple[LabServiceProcess, str, str]
) -> None:
    from selenium.webdriver.common.by import By

    service, token, campaign_id = lab
    sign_in(browser, service, token, "oleg")
    assert browser.find_elements(By.ID, "estop")  # an operator may always e-stop
    click(browser, "[data-do='campaign.pause']", "the pause button")
    wait_for(
        lambda: service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.state == "paused",
        30,
        "the campaign paused (through the API)",
    )
    [entry] = service.call(m.ListAudit(action="campaign.pause", refused=False)).entries
    assert (entry.who, entry.result, entry.origin) == ("oleg", "ok", "web 127.0.0.1")
    wait_for(
        lambda: "campaign.pause" in text(browser, "#audit"),
        30,
        "the pause in the page's audit log",
    )
    click(browser, "[data-do='campaign.resume']", "the resume button")
    wait_for(
        lambda: service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign.state == "running",
        30,
        "resumed",
    )
    # an operator is not an admin: no quarantine buttons
    assert browser.find_elements(By.CSS_SELECTOR, "[data-quarantine]") == []


def test_without_signing_in_nothing_of_the_lab_is_shown_or_served(
    browser: Any, lab: tuple[LabServiceProcess, str, str]
) -> None:
    service, _, campaign_id = lab
    browser.delete_all_cookies()
    open_page(browser, url_of(service))
    assert "Sign in" in text(browser, "#grid") and campaign_id not in browser.page_source
    request = urllib.request.Request(
        f"{url_of(service)}/api/call/status", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    refused.value.close()
    assert refused.value.code == 401


def test_the_owner_signs_in_with_the_url_the_service_printed(
    browser: Any, lab: tuple[LabServiceProcess, str, str]
) -> None:
    """As Jupyter does on localhost: the token is in the URL once, then in a cookie."""
    from selenium.webdriver.common.by import By

    service, _, _ = lab
    url = service.sign_in_url()
    assert url.startswith(f"{url_of(service)}/?token=sdl_")
    browser.delete_all_cookies()
    open_page(browser, url)
    assert "token=" not in browser.current_url  # the address bar and the history keep no token
    wait_for(lambda: "admin" in text(browser, "#who"), 30, "the owner signed in")
    assert text(browser, "#who").startswith("local:")
    assert browser.find_elements(By.CSS_SELECTOR, "[data-quarantine]")  # an admin's controls
    open_page(browser, url_of(service))  # later visits: the cookie
    assert "admin" in text(browser, "#who")


def test_a_quarantine_shows_its_reason_live(browser: Any, lab: tuple[LabServiceProcess, str, str]) -> None:
    service, _, _ = lab
    as_viewer(browser, service)
    row = "tr[data-instrument='water_b']"
    assert "leaking seal" not in text(browser, row)
    service.call(m.QuarantineInstrument(name="water_b", reason="leaking seal"))
    try:
        wait_for(
            lambda: "quarantined" in (shown := text(browser, row)) and "leaking seal" in shown,
            30,
            "the state and the reason on the page",
        )
    finally:
        service.call(m.ReleaseInstrument(name="water_b", check=False))
    wait_for(
        lambda: (shown := text(browser, row)) and "leaking seal" not in shown and "quarantined" not in shown,
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


def test_a_long_campaign_is_paged_and_its_plots_decimated(
    browser: Any, lab: tuple[LabServiceProcess, str, str]
) -> None:
    """2,000 more experiments fed to the page as live events: the table shows one page of 50, the plots draw
    at most what their pixels can show, and every experiment is still counted (the timing of this is
    measured in benchmarks/dashboard.py, not here)."""
    from selenium.webdriver.common.by import By

    service, _, campaign_id = lab
    as_viewer(browser, service)
    open_page(browser, f"{url_of(service)}/?campaign={campaign_id}")
    # One script: what the page knew and the 2,000 events after it (real events that follow are older
    # than the last of them, so the page ignores them and the count stays exact). The recipes lie on a
    # 37 x 23 lattice: many experiments share a point, which the coverage plot draws once.
    known = browser.execute_script(
        """const campaign = arguments[0];
        const known = window.sdl.state.experiments.get(campaign).rows.length;
        let seq = window.sdl.state.lastSeq;
        for (let i = 1; i <= 2000; i++) {
          const x = (i % 37) / 37, y = (i % 23) / 23, ok = i % 97 !== 0;
          window.sdl.apply({seq: ++seq, topic: ok ? "experiment.done" : "experiment.failed",
            campaign_id: campaign, at: new Date().toISOString(), body: {experiment_id: 1e6 + i,
            seq: known + 1000 + i, status: ok ? "done" : "failed",
            recipe: {yellow: 500 * x, red: 500 * y, blue: 250}, measurements: {},
            loss: ok ? (x - 0.5) ** 2 + (y - 0.5) ** 2 : null, failure: ok ? null : "synthetic"}});
        }
        return known;""",
        campaign_id,
    )
    total = known + 2000
    wait_for(
        lambda: f"page 1 of {-(-total // 50)} ({total} experiments)" in text(browser, "#experiments"),
        30,
        "the pager over every experiment",
    )
    rows = browser.find_elements(By.CSS_SELECTOR, "#experiment-table tbody tr")
    assert len(rows) == 50
    assert rows[0].find_element(By.CSS_SELECTOR, "td").text == str(known + 1000 + 2000)  # newest first
    convergence = browser.find_element("id", "convergence")
    width = int(convergence.get_attribute("width"))
    assert int(convergence.get_attribute("data-experiments")) >= 2000
    assert 0 < int(convergence.get_attribute("data-drawn")) <= 3 * width  # per pixel column: low, high, ✕
    assert int(convergence.get_attribute("data-drawn")) < 2000
    coverage = browser.find_element("id", "coverage")
    assert 0 < int(coverage.get_attribute("data-drawn")) <= 37 * 23 + known
    click(browser, "#older", "the older page")
    wait_for(lambda: f"page 2 of {-(-total // 50)}" in text(browser, "#experiments"), 30, "page 2")
    first = browser.find_element(By.CSS_SELECTOR, "#experiment-table tbody tr td").text
    assert first == str(known + 1000 + 1950)


def test_a_bad_campaign_file_submitted_from_the_page_shows_what_sdl_validate_shows(
    browser: Any, lab: tuple[LabServiceProcess, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sdl.cli import main

    service, token, _ = lab
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nparameters:\n  - {name: x, type: real, low: 1.0, high: 0.0}\n"
        "objectives: [{measurement: loss}]\nbudget: {max_experiments: many}\n"
        "procedure: {function: nowhere:nothing}\n"
    )
    assert main(["validate", str(bad)]) == 2
    shown = capsys.readouterr()
    problems = [
        line.strip().removeprefix("error: ")
        for line in (shown.out + shown.err).splitlines()
        if "bad.yaml:" in line
    ]
    assert len(problems) >= 2, shown
    sign_in(browser, service, token, "oleg")
    browser.find_element("id", "submit-file").send_keys(str(bad))
    browser.find_element("id", "submit-folder").send_keys(str(tmp_path))
    click(browser, "#submit", "the submit button")
    errors = wait_for(lambda: text(browser, "#submit-result"), 30, "the mistakes on the page")
    for problem in problems:
        assert problem in errors, (problem, errors)
    assert "bad" not in {c.name for c in service.call(m.ListCampaigns()).campaigns}


def test_campaign_exports_download_from_the_page(lab: tuple[LabServiceProcess, str, str]) -> None:
    service, token, campaign_id = lab
    experiments = service.call(m.ListExperiments(campaign_id=campaign_id)).experiments
    for fmt in ("csv", "jsonl"):
        request = urllib.request.Request(
            f"{url_of(service)}/api/export/{campaign_id}.{fmt}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            assert f'filename="{campaign_id}.{fmt}"' in reply.headers["Content-Disposition"]
            lines = reply.read().decode().splitlines()
        if fmt == "csv":
            assert lines[0].startswith("experiment,status,yellow [µL],red [µL],blue [µL],")
            exported = {int(line.split(",", 1)[0]) for line in lines[1:]}
        else:
            exported = {json.loads(line)["experiment"] for line in lines}
        assert exported >= {e.seq for e in experiments if e.status == "done"}


def test_an_operator_e_stops_from_the_page_and_an_admin_clears_it(
    browser: Any, lab: tuple[LabServiceProcess, str, str]
) -> None:
    """Last in this module: the e-stop aborts the colour campaign's experiment in flight."""
    from selenium.webdriver.common.by import By

    service, token, _ = lab
    sign_in(browser, service, token, "oleg")
    click(browser, "#estop", "the e-stop button")
    answer_prompt(browser, "spill at station A")
    wait_for(lambda: service.call(m.Status()).estop.active, 30, "the e-stop (through the API)")
    assert service.call(m.Status()).estop.by == "oleg"
    wait_for(lambda: "spill at station A" in text(browser, "#banner"), 30, "the red banner")
    assert browser.find_elements(By.ID, "clear-estop") == []  # an operator may not clear it
    sign_in(browser, service, ADMIN_TOKEN["boss"], "boss")
    assert "E-STOP ACTIVE" in text(browser, "#banner")
    click(browser, "#clear-estop", "the clear button")
    answer_prompt(browser, None)
    wait_for(lambda: not service.call(m.Status()).estop.active, 30, "the e-stop cleared (through the API)")
    wait_for(lambda: not browser.find_element("id", "banner").is_displayed(), 30, "the banner gone")
    entries = service.call(m.ListAudit(action="lab.")).entries
    assert [(e.action, e.who, e.result) for e in entries if e.action in ("lab.estop", "lab.clear_estop")] == [
        ("lab.estop", "oleg", "ok"),
        ("lab.clear_estop", "boss", "ok"),
    ]
