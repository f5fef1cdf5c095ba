"""A plan that asks a person: the lab service opens a task, the done note is the plan's answer; a cancelled
question interrupts its experiment (nobody answered), and one that times out goes on with its default."""

from __future__ import annotations

import textwrap
from pathlib import Path

from sdl.api import models as m
from sdl.cli import main
from sdl.store import Store
from sdl.testing import LabServiceProcess, wait_for

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def campaign(tmp_path: Path, name: str, budget: int, options: str = "{}") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: {name}
            parameters:
              - {{name: x, type: real, low: 0.0, high: 1.0}}
              - {{name: y, type: real, low: 0.0, high: 1.0}}
            objectives: [{{measurement: loss}}]
            budget: {{max_experiments: {budget}}}
            optimizer: {{kind: random, seed: 1}}
            procedure:
              plan: daemon_procedures:asking_plan
              extractor: daemon_procedures:plan_loss
              options: {options}
            """
        )
    )
    return path


def answers(data: Path, campaign_id: str) -> list[tuple[str, str | None]]:
    """Each experiment's status and the answer its plan recorded in its start document."""
    with Store(data, read_only=True) as store:
        out = []
        for e in store.experiments(campaign_id):
            start = next((doc for name, doc in store.documents(e.id) or [] if name == "start"), {})
            out.append((e.status.value, start.get("answer")))
        return out


def test_a_plan_asks_a_person_and_goes_on_with_the_answer(tmp_path: Path) -> None:
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: people\nworkers: {heartbeat_timeout: 5}\nworkcells:\n  w1: {}\n")
    data = tmp_path / "data"
    with LabServiceProcess(lab, data, pythonpath=[TESTS, ROOT]).start() as service:
        with service.client() as client:
            asked = client.submit(campaign(tmp_path, "asked", 2)).campaign_id

        def question() -> m.Task | None:
            return next((t for t in service.call(m.ListTasks()).tasks if t.kind == "question"), None)

        first = wait_for(question, 120, "the plan's question")
        assert first.title.startswith("answer: Is vial ") and first.workcell == "w1", first
        assert any(a.key == f"task:{first.id}" for a in service.call(m.Status()).alerts)
        assert main(["--data-dir", str(data), "task", "done", str(first.id), "--note", "yes, capped"]) == 0
        # The next experiment asks again; cancelled, nobody answered: it ends interrupted and another runs.
        second = wait_for(
            lambda: (t := question()) is not None and t.id != first.id and t, 120, "a second question"
        )
        assert main(["--data-dir", str(data), "task", "cancel", str(second.id), "--reason", "not now"]) == 0
        third = wait_for(
            lambda: (t := question()) is not None and t.id not in (first.id, second.id) and t,
            120,
            "a third question",
        )
        assert main(["--data-dir", str(data), "task", "done", str(third.id), "--note", "no"]) == 0
        wait_for(lambda: service.call(m.ShowCampaign(campaign_id=asked)).campaign.status != "running", 120)
        # A question nobody answers in time: the plan goes on with its default, and the task is withdrawn.
        with service.client() as client:
            timed = client.submit(
                campaign(tmp_path, "timed", 1, "{timeout: 0.5, default: unknown}")
            ).campaign_id
        wait_for(lambda: service.call(m.ShowCampaign(campaign_id=timed)).campaign.status != "running", 120)
        tasks = {t.id: t for t in service.call(m.ListTasks(all=True)).tasks}
    assert answers(data, asked) == [("done", "yes, capped"), ("interrupted", None), ("done", "no")]
    assert answers(data, timed) == [("done", "unknown")]
    withdrawn = [t for t in tasks.values() if t.id not in (first.id, second.id, third.id)]
    assert [(t.kind, t.state, t.closed_by) for t in withdrawn] == [("question", "cancelled", "lab service")]
    with Store(data, read_only=True) as store:
        interrupted = next(e for e in store.experiments(asked) if e.status.value == "interrupted")
        journal = [(j.entry, j.detail) for j in store.journal(interrupted.id) if j.command == "ask"]
    assert journal[0][0] == "ask" and journal[-1] == ("answered", "no answer; default None")
