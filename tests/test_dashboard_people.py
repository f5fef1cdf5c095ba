"""What the lab asks of people, on the web page, in a real headless Chromium against `sdl daemon --http`: the
inventory (a restock through the API shows up live), proposals waiting for approval (an operator approves
one and rejects one with a reason from the page; a viewer sees them and cannot decide, and the server
refuses a forced request), and a refill task the service opens when a campaign needs more vials than are
left (the page announces it, then an operator acknowledges it and does it with an amount and a lot).

The lab has one workcell with a simulated motor whose feeder holds vials. Without Debian's chromium and
chromium-driver these tests are skipped with the reason (CI installs both and fails instead)."""

from __future__ import annotations

import json
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_dashboard import browser_or_skip, click, replaced_under_us, sign_in, text, url_of

from sdl.access.keys import KeyRing, generate, read_public
from sdl.access.tokens import TokenFile
from sdl.api import models as m
from sdl.testing import LabServiceProcess, wait_for

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
STOCK = "tr[data-stock='motor.feeder']"
TITLE = "sdl — lab dashboard"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def lab_file(tmp: Path) -> Path:
    return write(
        tmp / "lab.yaml",
        """\
        name: feeders
        workers: {heartbeat_timeout: 5}
        instruments:
          motor: {driver: "daemon_procedures:make_motor", address: none}
        workcells:
          w1: {devices: {motor: motor}}
        inventory:
          motor:
            feeder: {amount: 5, unit: vials, lot: V-1, capacity: 10, warn_below: 2, material: 2 mL vials}
        """,
    )


def approval_campaign(tmp: Path, name: str, budget: int) -> Path:
    """A plain function (daemon_procedures:bowl) whose every proposal waits for an operator."""
    return write(
        tmp / f"{name}.yaml",
        f"""\
        name: {name}
        parameters:
          - {{name: x, type: real, low: 0.0, high: 1.0}}
          - {{name: y, type: real, low: 0.0, high: 1.0}}
        objectives: [{{measurement: loss}}]
        budget: {{max_experiments: {budget}}}
        optimizer: {{kind: random, seed: 3}}
        approval: {{require: all}}
        procedure: {{function: "daemon_procedures:bowl"}}
        """,
    )


@dataclass
class Lab:
    service: LabServiceProcess
    tmp: Path
    tokens: dict[str, str]  # by name: oleg (operator), ana (viewer)


def lab_service(tmp: Path) -> Lab:
    """A lab service with a dashboard (not started), an operator's and a viewer's sign-in tokens."""
    data = tmp / "data"
    ring, tokens = KeyRing(data / "keys.yaml"), TokenFile(data / "tokens.yaml")
    issued = {}
    for name, role in (("oleg", "operator"), ("ana", "viewer")):
        public, secret = generate(tmp / "keys", name)
        ring.add(name, read_public(public), role)
        issued[name] = tokens.issue(f"{name}-browser", secret)
    service = LabServiceProcess(lab_file(tmp), data, "--http", "127.0.0.1:0", pythonpath=[TESTS, ROOT])
    return Lab(service, tmp, issued)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """No campaign at first: each test submits what it needs and leaves nothing waiting."""
    found = lab_service(tmp_path_factory.mktemp("dashboard-people"))
    found.service.start()
    try:
        yield found
    finally:
        if found.service.process is not None and found.service.process.poll() is None:
            assert found.service.stop() == 0, found.service.log_text()
        found.service.assert_nothing_left()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = browser_or_skip()
    try:
        yield driver
    finally:
        driver.quit()


def type_into(browser: Any, css: str, typed: str, what: str) -> None:
    """Type into an input when it is there (the page re-renders its lists as events arrive)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    def typed_in() -> bool:
        try:
            found = browser.find_elements(By.CSS_SELECTOR, css)
            if found:
                found[0].clear()
                found[0].send_keys(typed)
            return bool(found) and found[0].get_attribute("value") == typed
        except WebDriverException as error:
            if replaced_under_us(error):
                return False
            raise

    wait_for(typed_in, 30, what)


def found(browser: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(browser.find_elements(By.CSS_SELECTOR, css))


def mark_the_page(browser: Any) -> None:
    """A mark a reload would wipe: what the test sees after it came live, without reloading."""
    browser.execute_script("window.notReloaded = true;")


def not_reloaded(browser: Any) -> bool:
    return bool(browser.execute_script("return window.notReloaded === true"))


def stock(service: LabServiceProcess) -> m.Stock:
    [only] = service.call(m.ListInventory()).stocks
    return only


def pending(service: LabServiceProcess, campaign_id: str) -> list[m.Proposal]:
    return service.call(m.ListApprovals(campaign_id=campaign_id)).proposals


def decided(service: LabServiceProcess, proposal: m.Proposal) -> str:
    """What became of a proposal, by the record."""
    every = service.call(m.ListApprovals(campaign_id=proposal.campaign_id, all=True)).proposals
    return next(p.state for p in every if p.experiment_id == proposal.experiment_id)


def campaign_over(service: LabServiceProcess, campaign_id: str) -> m.CampaignSummary:
    return wait_for(
        lambda: (
            (c := service.call(m.ShowCampaign(campaign_id=campaign_id)).campaign).status != "running" and c
        ),
        120,
        f"campaign {campaign_id} to end",
    )


# -- the inventory -------------------------------------------------------------------------------------------


def test_the_page_shows_each_stock_and_a_restock_through_the_api_live(browser: Any, lab: Lab) -> None:
    service = lab.service
    sign_in(browser, service, lab.tokens["ana"], "ana")
    row = wait_for(lambda: text(browser, STOCK), 30, "the feeder on the page")
    for shown in ("motor.feeder", "2 mL vials", "5/10 vials", "V-1"):
        assert shown in row, (shown, row)
    assert "LOW" not in row
    level = browser.find_element("css selector", f"{STOCK} .level .fill")
    assert level.get_attribute("style") == "width: 50%;"
    mark_the_page(browser)
    try:
        service.call(m.Restock(instrument="motor", consumable="feeder", change="correct", amount=1.5,
                               reason="counted"))  # fmt: skip
        wait_for(lambda: "1.5/10 vials" in text(browser, STOCK), 30, "the correction on the page")
        assert "LOW" in text(browser, STOCK)  # less than its warn_below of 2
        assert found(browser, f"{STOCK} .level.low")
        service.call(
            m.Restock(instrument="motor", consumable="feeder", change="replace", amount=9.5, lot="V-7")
        )
        wait_for(
            lambda: "9.5/10 vials" in (shown := text(browser, STOCK)) and "V-7" in shown,
            30,
            "the new lot on the page",
        )
        assert "LOW" not in text(browser, STOCK)
        assert not_reloaded(browser)
    finally:
        service.call(
            m.Restock(instrument="motor", consumable="feeder", change="replace", amount=5, lot="V-1")
        )


# -- approvals -----------------------------------------------------------------------------------------------


def test_a_viewer_sees_a_proposal_waiting_but_cannot_decide_and_the_server_refuses_a_forced_request(
    browser: Any, lab: Lab
) -> None:
    service = lab.service
    sign_in(browser, service, lab.tokens["ana"], "ana")
    mark_the_page(browser)
    with service.client() as client:
        campaign_id = client.submit(approval_campaign(lab.tmp, "watched", budget=1)).campaign_id
    try:
        [proposal] = wait_for(lambda: pending(service, campaign_id), 60, "the proposal to wait")
        row = f"[data-proposal='{proposal.experiment_id}']"
        shown = wait_for(lambda: text(browser, row), 30, "the proposal on the page")
        assert "watched: proposal 1" in shown and campaign_id in shown
        assert "every proposal of this campaign needs approval" in shown
        assert f"x={proposal.recipe['x']:.4g}" in shown
        assert "an operator approves or rejects them" in text(browser, "#approvals-panel")
        assert found(browser, "[data-approval-do]") == [] and found(browser, ".control") == []
        assert "attention" in str(browser.find_element("id", "approvals-panel").get_attribute("class"))
        assert not_reloaded(browser)

        request = urllib.request.Request(
            f"{url_of(service)}/api/call/approval.approve",
            data=json.dumps({"experiment_id": proposal.experiment_id}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {lab.tokens['ana']}"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 403
        assert json.loads(refused.value.read())["error"] == {
            "type": "forbidden",
            "message": "viewer 'ana' may not approval.approve; needs operator",
            "details": [],
        }
        entry = service.call(m.ListAudit(who="ana", action="approval.approve")).entries[-1]
        assert entry.result.startswith("refused: viewer 'ana' may not approval.approve")
        assert entry.origin == "web 127.0.0.1"
        assert [p.state for p in pending(service, campaign_id)] == ["pending"]
    finally:
        for left in pending(service, campaign_id):
            service.call(m.RejectProposal(experiment_id=left.experiment_id, reason="the test is over"))
    assert campaign_over(service, campaign_id).counts == {"failed": 1}  # its one proposal, rejected
    wait_for(lambda: "no proposals waiting" in text(browser, "#approvals"), 30, "the proposal gone")


def test_an_operator_approves_one_proposal_and_rejects_another_with_a_reason_from_the_page(
    browser: Any, lab: Lab
) -> None:
    service = lab.service
    sign_in(browser, service, lab.tokens["oleg"], "oleg")
    mark_the_page(browser)
    with service.client() as client:
        campaign_id = client.submit(approval_campaign(lab.tmp, "gated", budget=2)).campaign_id
    try:
        [first] = wait_for(lambda: pending(service, campaign_id), 60, "the first proposal to wait")
        row = f"[data-proposal='{first.experiment_id}']"
        wait_for(lambda: "gated" in text(browser, row), 30, "the first proposal on the page")
        click(browser, f"{row} [data-approval-do='approval.approve']", "Approve")
        wait_for(lambda: decided(service, first) == "approved", 30, "the approval (through the API)")
        wait_for(lambda: "approved by oleg" in text(browser, "#approvals-result"), 30, "the page says so")

        [second] = wait_for(
            lambda: [p for p in pending(service, campaign_id) if p.experiment_id != first.experiment_id],
            120,
            "the second proposal to wait",
        )
        row = f"[data-proposal='{second.experiment_id}']"
        wait_for(lambda: "gated" in text(browser, row), 30, "the second proposal on the page")
        assert found(browser, f"[data-proposal='{first.experiment_id}']") == []
        click(browser, f"{row} [data-approval-do='approval.reject']", "Reject without a reason")
        wait_for(
            lambda: "say why you reject it" in text(browser, "#approvals-result"), 30, "the page asks why"
        )
        assert [p.state for p in pending(service, campaign_id)] == ["pending"]  # nothing was sent
        type_into(browser, f"{row} [data-field='reason']", "too close to the last one", "the reason")
        click(browser, f"{row} [data-approval-do='approval.reject']", "Reject")
        wait_for(lambda: decided(service, second) == "rejected", 30, "the rejection (through the API)")
        wait_for(
            lambda: "rejected by oleg: too close to the last one" in text(browser, "#approvals-result"),
            30,
            "the page says so",
        )
        wait_for(lambda: "no proposals waiting" in text(browser, "#approvals"), 30, "nothing left to decide")
        assert not_reloaded(browser)
    finally:
        for left in pending(service, campaign_id):
            service.call(m.RejectProposal(experiment_id=left.experiment_id, reason="the test failed"))

    record = {
        p.experiment_id: p for p in service.call(m.ListApprovals(campaign_id=campaign_id, all=True)).proposals
    }
    approved, rejected = record[first.experiment_id], record[second.experiment_id]
    assert (approved.state, approved.decided_by) == ("approved", "oleg")
    assert (rejected.state, rejected.decided_by, rejected.reason) == (
        "rejected", "oleg", "too close to the last one"
    )  # fmt: skip
    summary = campaign_over(service, campaign_id)
    assert (summary.status, summary.counts) == ("completed", {"done": 1, "failed": 1})
    failure = {e.id: e for e in service.call(m.ListExperiments(campaign_id=campaign_id)).experiments}
    assert failure[second.experiment_id].failure == "rejected by oleg: too close to the last one"
    entries = service.call(m.ListAudit(action="approval.", who="oleg")).entries
    assert [(e.action, e.result, e.origin) for e in entries] == [
        ("approval.approve", "ok", "web 127.0.0.1"),
        ("approval.reject", "ok", "web 127.0.0.1"),
    ]


# -- tasks ---------------------------------------------------------------------------------------------------

FAKE_NOTIFICATION = """
window.shownNotifications = [];
window.Notification = class {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) { window.shownNotifications.push({ title, body: options.body }); }
};
"""


def test_a_refill_task_is_announced_and_an_operator_does_it_from_the_page_with_an_amount_and_a_lot(
    browser: Any, tmp_path: Path
) -> None:
    """Each experiment needs 6 vials and the feeder holds 5: the service opens a refill task and the workcell
    waits. A viewer's page announces it (title, panel, a desktop notification where allowed) without the
    buttons; the operator acknowledges it, then does it with 8 vials of lot V-2, and the campaign runs."""
    write(tmp_path / "feeder_needs.py", 'def needs(recipe, **options):\n    return {"motor.feeder": 6}\n')
    campaign = write(
        tmp_path / "vials.yaml",
        """\
        name: vials
        parameters:
          - {name: x, type: real, low: 0.0, high: 1.0}
          - {name: y, type: real, low: 0.0, high: 1.0}
        objectives: [{measurement: loss}]
        budget: {max_experiments: 1}
        optimizer: {kind: random, seed: 2}
        requires: {devices: [motor]}
        procedure:
          plan: daemon_procedures:move_and_read
          extractor: daemon_procedures:plan_loss
          needs: feeder_needs:needs
        """,
    )
    lab = lab_service(tmp_path)
    service = lab.service
    with service.start():
        sign_in(browser, service, lab.tokens["ana"], "ana")
        assert "no tasks to do" in text(browser, "#tasks")
        assert browser.title == TITLE
        browser.execute_script(FAKE_NOTIFICATION)
        mark_the_page(browser)
        with service.client() as client:
            campaign_id = client.submit(campaign).campaign_id
        [task] = wait_for(lambda: service.call(m.ListTasks()).tasks, 60, "a refill task")
        item = f"#task-{task.id}"
        shown = wait_for(lambda: text(browser, item), 30, "the task on the page")
        assert f"task {task.id}: refill motor.feeder" in shown
        assert "motor.feeder: needs 6 vials, 5 vials left for it" in shown
        opened = task.opened_at[:19].replace("T", " ")
        assert "workcell w1 waits" in shown and f"opened {opened} UTC by lab service" in shown
        wait_for(lambda: browser.title == f"(1) {TITLE}", 30, "the count in the title")
        assert "attention" in str(browser.find_element("id", "tasks-panel").get_attribute("class"))
        notified = browser.execute_script("return window.shownNotifications")
        assert notified == [
            {
                "title": f"feeders: task {task.id}",
                "body": "refill motor.feeder: motor.feeder: needs 6 vials, 5 vials left for it",
            }
        ]
        assert browser.execute_script("return window.sdl.state.notified") == [task.id]
        wait_for(lambda: f"task {task.id}" in text(browser, STOCK), 30, "the stock's task number")
        assert found(browser, "[data-task-do]") == [] and found(browser, ".control") == []  # a viewer
        assert not_reloaded(browser)

        sign_in(browser, service, lab.tokens["oleg"], "oleg")
        assert browser.title == f"(1) {TITLE}"  # still open: nobody is on it yet
        click(browser, f"{item} [data-task-do='task.acknowledge']", "Acknowledge")
        wait_for(lambda: service.call(m.ListTasks()).tasks[0].state == "acknowledged", 30, "acknowledged")
        assert service.call(m.ListTasks()).tasks[0].acknowledged_by == "oleg"
        wait_for(lambda: "acknowledged by oleg" in text(browser, item), 30, "who is on it, on the page")
        wait_for(lambda: browser.title == TITLE, 30, "the title without a count")
        assert found(browser, f"{item} [data-task-do='task.acknowledge']") == []

        type_into(browser, f"{item} [data-field='amount']", "8", "the amount")
        type_into(browser, f"{item} [data-field='lot']", "V-2", "the lot")
        type_into(browser, f"{item} [data-field='note']", "new box", "the note")
        click(browser, f"{item} [data-task-do='task.done']", "Done")
        wait_for(lambda: not service.call(m.ListTasks()).tasks, 30, "the task done (through the API)")
        feeder = stock(service)
        assert (feeder.amount, feeder.lot, feeder.task) == (8, "V-2", None)
        [done] = service.call(m.ListTasks(all=True)).tasks
        assert (done.state, done.closed_by) == ("done", "oleg")
        assert done.outcome == {
            "note": "new box",
            "change": "replace",
            "amount": 8,
            "lot": "V-2",
            "unit": "vials",
        }
        said = f"task {task.id} done by oleg: motor.feeder replaced to 8 vials, lot V-2"
        wait_for(lambda: said in text(browser, "#tasks-result"), 30, "the page says what was done")
        wait_for(lambda: "no tasks to do" in text(browser, "#tasks"), 30, "no task left on the page")
        wait_for(
            lambda: "8/10 vials" in (row := text(browser, STOCK)) and "V-2" in row,
            30,
            "the refill on the page",
        )
        entries = service.call(m.ListAudit(action="task.", who="oleg")).entries
        assert [(e.action, e.result, e.origin) for e in entries] == [
            ("task.acknowledge", "ok", "web 127.0.0.1"),
            ("task.done", "ok", "web 127.0.0.1"),
        ]
        summary = campaign_over(service, campaign_id)
        assert (summary.status, summary.counts) == ("completed", {"done": 1})
        assert service.stop() == 0, service.log_text()
    service.assert_nothing_left()


COUNT_ASKS = """
window.notificationAsks = 0;
if ("Notification" in window) {
  const original = Notification.requestPermission.bind(Notification);
  Notification.requestPermission = (...args) => { window.notificationAsks += 1; return original(...args); };
}
"""


def test_the_page_asks_for_desktop_notifications_only_when_clicked(browser: Any, lab: Lab) -> None:
    """The browser's permission prompt comes from the person's click on the page's button, never on load."""
    from selenium.webdriver.common.by import By

    service = lab.service
    script = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": COUNT_ASKS})
    try:
        sign_in(browser, service, lab.tokens["ana"], "ana")
        assert browser.execute_script("return window.notificationAsks") == 0
        if browser.execute_script("return Notification.permission") != "default":
            assert found(browser, "#notify") == []  # decided already: nothing to offer
            return
        browser.find_element(By.ID, "notify").click()
        wait_for(lambda: browser.execute_script("return window.notificationAsks") == 1, 30, "the prompt")
    finally:
        browser.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]}
        )
