"""What the operator sees while a campaign runs: a rich progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sdl.campaign import Campaign
from sdl.executor import RunResult, best_experiment, counts_toward_budget
from sdl.status import ExperimentStatus
from sdl.store import CampaignRecord, ExperimentRecord


def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def fmt_recipe(recipe: dict[str, Any]) -> str:
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in recipe.items())


class CampaignProgress:
    """Executor observer: experiments done / budget, best so far, and ETA from the mean experiment time."""

    def __init__(self, console: Console, campaign: Campaign, history: list[ExperimentRecord]) -> None:
        self.console = console
        self.campaign = campaign
        self.total = campaign.budget.max_experiments
        self.spent = sum(counts_toward_budget(e) for e in history)
        self.best = best_experiment(history)
        self._durations: list[float] = []
        self._started: float | None = None
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> CampaignProgress:
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("best {task.fields[best]}"),
                TextColumn("ETA {task.fields[eta]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                self.campaign.name, total=self.total, completed=self.spent, best=self._best_text(), eta="?"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _best_text(self) -> str:
        if self.best is None or self.best.objective is None:
            return "-"
        return f"{self.best.objective:.6g} (#{self.best.seq})"

    def _eta(self) -> str:
        if not self._durations:
            return "?"
        seconds = sum(self._durations) / len(self._durations) * max(self.total - self.spent, 0)
        return time.strftime("%H:%M:%S", time.gmtime(seconds))

    def experiment_started(self, experiment: ExperimentRecord) -> None:
        self._started = time.monotonic()
        if self._progress is not None:
            self._progress.update(
                self._task, description=f"{self.campaign.name}: experiment {experiment.seq}"
            )

    def experiment_finished(self, experiment: ExperimentRecord, history: list[ExperimentRecord]) -> None:
        if self._started is not None:
            self._durations.append(time.monotonic() - self._started)
        self.spent = sum(counts_toward_budget(e) for e in history)
        self.best = best_experiment(history)
        if self._progress is not None:
            self._progress.update(self._task, completed=self.spent, best=self._best_text(), eta=self._eta())
            if experiment.status is ExperimentStatus.FAILED:
                self._progress.console.print(
                    f"[yellow]experiment {experiment.seq} failed:[/] {experiment.failure}"
                )
            return
        outcome = (
            f"objective {fmt_value(experiment.objective)}"
            if experiment.status is ExperimentStatus.DONE
            else f"{experiment.status.value}: {experiment.failure}"
        )
        self.console.print(
            f"[{self.spent}/{self.total}] experiment {experiment.seq} {fmt_recipe(experiment.recipe)} -> "
            f"{outcome}; best {self._best_text()}; ETA {self._eta()}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def summary_table(record: CampaignRecord, campaign: Campaign, history: list[ExperimentRecord]) -> Table:
    table = Table(title=f"campaign {record.id} ({record.name})", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("status", f"{record.status.value}: {record.stop_reason or ''}")
    counts = {s: sum(1 for e in history if e.status is s) for s in ExperimentStatus}
    table.add_row("experiments", ", ".join(f"{n} {s.value}" for s, n in counts.items() if n) or "none")
    table.add_row(
        "budget", f"{sum(counts_toward_budget(e) for e in history)} of {campaign.budget.max_experiments}"
    )
    best = best_experiment(history)
    if best is not None:
        table.add_row("best experiment", f"#{best.seq}")
        table.add_row("best value", fmt_value(best.objective))
        table.add_row("best recipe", fmt_recipe(best.recipe))
        table.add_row("its measurements", fmt_recipe(best.measurements or {}))
    return table


def result_line(result: RunResult) -> str:
    return f"stopped after {result.elapsed:.1f} s: {result.stop_reason}"
