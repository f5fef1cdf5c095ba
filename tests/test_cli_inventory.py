"""`sdl inventory`, `sdl restock`, `sdl tasks` and `sdl task ack|done|cancel` as an operator runs them,
against a real lab service (a subprocess) whose lab file declares a feeder's vials: restocks shown in the
inventory and its record with who did them, refusals in one line with exit 2, and a refill task the service
opens when a campaign needs more than is left, acknowledged, cancelled and done from the command line."""

from __future__ import annotations

import getpass
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdl.access.keys import KeyRing, generate, read_public
from sdl.api import models as m
from sdl.cli import main
from sdl.testing import LabServiceProcess, wait_for

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
OWNER = f"local:{getpass.getuser()}"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def lab_file(tmp_path: Path) -> Path:
    return write(
        tmp_path / "lab.yaml",
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


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wide as their rows: no cell is wrapped onto a second line."""
    monkeypatch.setenv("COLUMNS", "400")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServiceProcess]:
    """A lab service with no campaign: its record changes only by the commands the tests run. 'ana' is a
    viewer on its allow-list."""
    tmp = tmp_path_factory.mktemp("lab")
    public, _ = generate(tmp, "ana")
    KeyRing(tmp / "data" / "keys.yaml").add("ana", read_public(public), "viewer")
    service = LabServiceProcess(lab_file(tmp), tmp / "data", pythonpath=[TESTS, ROOT])
    service.start()
    yield service
    if service.process is not None and service.process.poll() is None:
        assert service.stop() == 0, service.log_text()
    service.assert_nothing_left()


def sdl(service: LabServiceProcess, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`sdl ARGV` against ``service`` as its owner: the exit code, standard output and standard error."""
    capsys.readouterr()
    code = main([*argv, "--data-dir", str(service.data_dir)])
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> list[list[str]]:
    """A rich table's rows, as lists of cells."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]


def table(out: str) -> list[dict[str, str]]:
    header = next(line for line in out.splitlines() if line.startswith("┃"))
    names = [c.strip() for c in header.split("┃")[1:-1]]
    return [dict(zip(names, row, strict=True)) for row in rows(out)]


def feeder(service: LabServiceProcess) -> m.Stock:
    [stock] = service.call(m.ListInventory()).stocks
    return stock


# -- restocking ----------------------------------------------------------------------------------------------


def test_a_restock_shows_in_the_inventory_and_in_its_record(
    lab: LabServiceProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = sdl(lab, capsys, "inventory")
    assert code == 0
    before = feeder(lab)
    [row] = table(out)
    assert row["stock"] == "motor.feeder"
    assert row["amount"] == f"{before.amount:g}/10 vials"
    assert (row["material"], row["claimed"], row["task"]) == ("2 mL vials", "", "")

    code, out, err = sdl(lab, capsys, "restock", "motor.feeder", "1", "--correct", "--reason", "counted")
    assert (code, err) == (0, "")
    assert (
        out == "motor.feeder corrected to 1 vials, lot V-1\nit is LOW: less than its warn_below of 2 vials\n"
    )
    code, out, _ = sdl(lab, capsys, "inventory")
    [row] = table(out)
    assert (row["amount"], row["lot"], row["low"]) == ("1/10 vials", "V-1", "LOW")

    code, out, err = sdl(lab, capsys, "restock", "motor.feeder", "8", "--replace", "--lot", "V-2")
    assert (code, out, err) == (0, "motor.feeder replaced to 8 vials, lot V-2\n", "")
    code, out, _ = sdl(lab, capsys, "restock", "motor.feeder", "9.5")
    assert (code, out) == (0, "motor.feeder refilled to 9.5 vials, lot V-2\n")
    code, out, _ = sdl(lab, capsys, "inventory")
    [row] = table(out)
    assert (row["amount"], row["lot"], row["low"], row["task"]) == ("9.5/10 vials", "V-2", "", "")

    code, out, _ = sdl(lab, capsys, "inventory", "--changes")
    assert code == 0
    changes = table(out)
    assert changes[0]["change"] == "declare"
    assert (changes[0]["after"], changes[0]["lot"], changes[0]["who"]) == ("5 vials", "V-1", "lab file")
    mine = [(c["change"], c["after"], c["lot"], c["who"], c["why"]) for c in changes[-3:]]
    assert mine == [
        ("correct", "1 vials", "V-1", OWNER, "counted"),
        ("replace", "8 vials", "V-2", OWNER, ""),
        ("refill", "9.5 vials", "V-2", OWNER, ""),
    ]
    code, out, _ = sdl(lab, capsys, "inventory", "--changes", "--after", changes[-2]["id"])
    assert [c["change"] for c in table(out)] == ["refill"]
    code, out, _ = sdl(lab, capsys, "inventory", "--changes", "--limit", "1")
    assert [c["change"] for c in table(out)] == ["declare"]
    assert f"(the first 1: --after {changes[0]['id']} for the next)" in out
    code, out, _ = sdl(lab, capsys, "inventory", "--experiment", "12345")
    assert (code, out) == (0, "experiment 12345 consumed nothing in the inventory's record\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["motor.tips", "3"], "no stock motor.tips in the inventory (stocks: motor.feeder)"),
        (["pump.feeder", "3"], "no stock pump.feeder in the inventory (stocks: motor.feeder)"),
        (["motor.feeder", "11"], "motor.feeder holds at most 10 vials, not 11"),
        (["motor", "3"], "'motor' is not INSTRUMENT.CONSUMABLE (e.g. pumps_a.red): `sdl inventory` lists"),
        (["motor.feeder", "-1"], "the amount must be a number from 0 to 1e+12, not -1"),
        (["motor.feeder", "nan"], "the amount must be a number from 0 to 1e+12, not nan"),
        (["motor.feeder", "3", "--replace"], "--replace needs --lot: the new lot"),
        (["motor.feeder", "3", "--lot", "L" * 300], "--lot: String should have at most 256 characters"),
    ],
)
def test_a_restock_the_inventory_refuses_is_said_in_one_line_with_exit_2(
    lab: LabServiceProcess, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    before = feeder(lab)
    code, out, err = sdl(lab, capsys, "restock", *argv)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert feeder(lab) == before


def test_a_restock_with_both_replace_and_correct_is_refused_by_the_parser(
    lab: LabServiceProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        sdl(lab, capsys, "restock", "motor.feeder", "3", "--replace", "--lot", "X", "--correct")
    assert exit_.value.code == 2
    assert "not allowed with argument --replace" in capsys.readouterr().err


def test_a_viewer_may_see_the_inventory_but_not_restock(
    lab: LabServiceProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    ana = str(lab.data_dir.parent / "ana.key_secret")
    code, out, _ = sdl(lab, capsys, "inventory", "--key", ana)
    assert code == 0 and "motor.feeder" in out
    before = feeder(lab)
    code, out, err = sdl(lab, capsys, "restock", "motor.feeder", "3", "--key", ana)
    assert (code, out) == (2, "")
    assert err == "error: viewer 'ana' may not inventory.restock; needs operator\n"
    code, _, err = sdl(lab, capsys, "task", "done", "1", "--key", ana)
    assert (code, err) == (2, "error: viewer 'ana' may not task.done; needs operator\n")
    assert feeder(lab) == before


def test_no_tasks_and_an_unknown_task(lab: LabServiceProcess, capsys: pytest.CaptureFixture[str]) -> None:
    assert sdl(lab, capsys, "tasks") == (0, "no tasks to do\n", "")
    assert sdl(lab, capsys, "tasks", "--all") == (0, "no tasks\n", "")
    for argv in (["ack", "7"], ["done", "7", "--amount", "3"], ["cancel", "7"]):
        code, out, err = sdl(lab, capsys, "task", *argv)
        assert (code, out) == (2, ""), argv
        assert err == "error: no task 7 (see `sdl tasks --all`)\n", argv
    code, _, err = sdl(lab, capsys, "task", "done", "7", "--amount", "-2")
    assert (code, err) == (2, "error: --amount must be a number from 0 to 1e+12, not -2\n")
    code, _, err = sdl(lab, capsys, "task", "ack", "-3")
    assert code == 2 and err.startswith("error: ID: Input should be greater than or equal to 0"), err


def test_without_a_lab_service_each_command_says_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["inventory"], ["restock", "motor.feeder", "3"], ["tasks"], ["task", "ack", "1"]):
        assert main([*argv, "--data-dir", str(tmp_path)]) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("error: no lab service runs with data directory") and "sdl daemon" in err


# -- tasks ---------------------------------------------------------------------------------------------------


def test_a_refill_task_acknowledged_cancelled_and_done_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A campaign whose experiments each need 6 vials, with 5 in the feeder: the service opens a refill task
    and the workcell waits. A correction to 5.5 does not close it; cancelled, it is opened again (still
    short); done with a new lot, the feeder holds its capacity and the campaign runs to its end."""
    write(
        tmp_path / "feeder_needs.py",
        """\
        def needs(recipe, **options):
            return {"motor.feeder": 6}
        """,
    )
    campaign = write(
        tmp_path / "campaign.yaml",
        """\
        name: vials
        parameters:
          - {name: x, type: real, low: 0.0, high: 1.0}
          - {name: y, type: real, low: 0.0, high: 1.0}
        objectives: [{measurement: loss}]
        budget: {max_experiments: 2}
        optimizer: {kind: random, seed: 2}
        requires: {devices: [motor]}
        procedure:
          plan: daemon_procedures:move_and_read
          extractor: daemon_procedures:plan_loss
          needs: feeder_needs:needs
        """,
    )
    with LabServiceProcess(lab_file(tmp_path), tmp_path / "data", pythonpath=[TESTS, ROOT]).start() as lab:
        with lab.client() as client:
            campaign_id = client.submit(campaign).campaign_id

        def pending() -> list[m.Task]:
            return lab.call(m.ListTasks()).tasks

        [task] = wait_for(pending, what="a refill task")
        code, out, _ = sdl(lab, capsys, "tasks")
        assert code == 0
        [row] = table(out)
        assert (row["id"], row["state"], row["title"], row["waiting"]) == (
            str(task.id), "open", "refill motor.feeder", "w1"
        )  # fmt: skip
        assert row["opened (UTC)"] == task.opened_at[:19].replace("T", " ")
        assert row["detail"] == "motor.feeder: needs 6 vials, 5 vials left for it"
        code, out, _ = sdl(lab, capsys, "inventory")
        assert table(out)[0]["task"] == str(task.id)

        code, out, _ = sdl(lab, capsys, "restock", "motor.feeder", "5.5", "--correct")
        assert code == 0
        assert out.splitlines() == [
            "motor.feeder corrected to 5.5 vials, lot V-1",
            f"task {task.id} (refill motor.feeder) is still to do: nothing uses this stock until it is "
            f"closed (`sdl task cancel {task.id}` once this restock is enough)",
        ]

        code, out, _ = sdl(lab, capsys, "task", "ack", str(task.id))
        assert (code, out) == (0, f"task {task.id} acknowledged by {OWNER}: refill motor.feeder\n")
        code, out, _ = sdl(lab, capsys, "tasks")
        assert table(out)[0]["state"] == f"acknowledged ({OWNER})"
        code, _, err = sdl(lab, capsys, "task", "ack", str(task.id))
        assert (code, err) == (1, f"error: task {task.id} was acknowledged by {OWNER} already\n")

        code, out, _ = sdl(lab, capsys, "task", "cancel", str(task.id), "--reason", "no vials today")
        assert code == 0
        assert out.splitlines() == [
            f"task {task.id} cancelled: refill motor.feeder",
            "workcell w1 runs again on what the record says is left",
        ]
        [again] = wait_for(lambda: [t for t in pending() if t.id != task.id], what="the task opened again")
        assert again.detail == "motor.feeder: needs 6 vials, 5.5 vials left for it"

        code, out, err = sdl(lab, capsys, "task", "done", str(again.id), "--lot", "V-2", "--note", "new box")
        assert (code, err) == (0, "")
        assert out.splitlines() == [
            f"task {again.id} done: motor.feeder replaced to 10 vials, lot V-2; note: new box",
            "workcell w1 may run again",
        ]
        summary = wait_for(
            lambda: (
                (c := lab.call(m.ShowCampaign(campaign_id=campaign_id)).campaign).status != "running" and c
            ),
            what="the campaign to end",
        )
        assert (summary.status, summary.counts) == ("completed", {"done": 2})

        code, _, err = sdl(lab, capsys, "task", "done", str(again.id))
        assert (code, err) == (1, f"error: task {again.id} is done already (by {OWNER})\n")
        assert sdl(lab, capsys, "tasks") == (0, "no tasks to do\n", "")
        code, out, _ = sdl(lab, capsys, "tasks", "--all")
        closed = {r["id"]: r for r in table(out)}
        assert list(closed) == [str(again.id), str(task.id)]  # newest first
        assert closed[str(again.id)]["state"] == "done"
        assert closed[str(again.id)]["outcome"] == "motor.feeder replaced to 10 vials, lot V-2; note: new box"
        assert closed[str(task.id)]["state"] == "cancelled"
        assert closed[str(task.id)]["outcome"] == "note: no vials today"
        assert closed[str(task.id)]["closed"].endswith(f" by {OWNER}")

        code, out, _ = sdl(lab, capsys, "inventory", "--changes")
        assert [(c["change"], c["after"], c["lot"], c["who"], c["why"]) for c in table(out)] == [
            ("declare", "5 vials", "V-1", "lab file", ""),
            ("correct", "5.5 vials", "V-1", OWNER, ""),
            ("replace", "10 vials", "V-2", OWNER, f"task {again.id}"),
        ]
        code, out, _ = sdl(lab, capsys, "inventory")
        [row] = table(out)
        assert (row["amount"], row["lot"], row["task"]) == ("10/10 vials", "V-2", "")
        assert lab.stop() == 0
