"""What the operator sees while a campaign runs: a rich progress bar on a terminal, plain lines otherwise.

Experiments are the API's (`sdl.api.models.ExperimentSummary`), whether they come from the store (`sdl run`,
`sdl show`) or from the lab service (`sdl watch`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sdl.api.convert import campaign_state, experiment_summaries, experiment_summary
from sdl.api.models import ExperimentSummary
from sdl.exports.report import spent
from sdl.loop.foreground import RunResult
from sdl.spec.best import leaders
from sdl.spec.campaign import Campaign
from sdl.spec.status import ExperimentStatus
from sdl.store import CampaignRecord, ExperimentRecord


def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def fmt_recipe(recipe: dict[str, Any], units: dict[str, str] | None = None) -> str:
    """'yellow=120 µL, red=80 µL' with ``units`` (name -> units) as the campaign declares them."""
    units = units or {}
    return ", ".join(
        f"{k}={fmt_value(v)}" + (f" {units[k]}" if units.get(k) and v is not None else "")
        for k, v in recipe.items()
    )


def declared_units(campaign: Campaign) -> dict[str, str]:
    """Name -> units of every parameter and measurement the campaign declares units for."""
    units = {p.name: getattr(p, "units", "") for p in campaign.parameters}
    units.update({name: c.units for name, c in campaign.conditions.items()})
    for name in {*campaign.measurements, *(o.measurement for o in campaign.objectives)}:
        units[name] = campaign.measurement_meaning(name).units
    return {k: v for k, v in units.items() if v}


def fmt_objectives(campaign: Campaign, experiment: ExperimentSummary) -> str:
    """The objectives as measured, in the user's own units and direction: 'distance=0.0062' (never a
    negated value)."""
    measured = experiment.measurements or {}
    values = {o.measurement: measured.get(o.measurement) for o in campaign.objectives}
    return fmt_recipe(values, declared_units(campaign))


def fmt_best(campaign: Campaign, history: Sequence[ExperimentSummary]) -> str:
    """The best as the campaign defines it (`sdl.spec.best`); a Pareto campaign's front instead."""
    found = leaders(campaign, history)
    if found.best is not None:
        return f"{fmt_objectives(campaign, found.best)} (#{found.best.seq})"
    if found.front:
        return fmt_front(found.front)
    return "-"


def fmt_front(front: Sequence[ExperimentSummary]) -> str:
    numbers = ", ".join(f"#{e.seq}" for e in front[:8]) + (", ..." if len(front) > 8 else "")
    return f"front of {len(front)}: {numbers}"


class CampaignProgress:
    """A campaign's progress: experiments done of its budget, best so far, and an ETA from the mean
    experiment time."""

    def __init__(self, console: Console, campaign: Campaign, history: Sequence[ExperimentSummary]) -> None:
        self.console = console
        self.campaign = campaign
        self.total = campaign.budget.max_experiments
        self.spent = spent(history)
        self.history = list(history)
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
        return fmt_best(self.campaign, self.history)

    def _eta(self) -> str:
        if not self._durations:
            return "?"
        seconds = sum(self._durations) / len(self._durations) * max(self.total - self.spent, 0)
        return time.strftime("%H:%M:%S", time.gmtime(seconds))

    def experiment_started(self, experiment: ExperimentSummary) -> None:
        self._started = time.monotonic()
        if self._progress is not None:
            self._progress.update(
                self._task, description=f"{self.campaign.name}: experiment {experiment.seq}"
            )

    def experiment_finished(
        self, experiment: ExperimentSummary, history: Sequence[ExperimentSummary]
    ) -> None:
        if self._started is not None:
            self._durations.append(time.monotonic() - self._started)
        self.spent = spent(history)
        self.history = list(history)
        if self._progress is not None:
            self._progress.update(self._task, completed=self.spent, best=self._best_text(), eta=self._eta())
            if experiment.status is not ExperimentStatus.DONE:
                self._progress.console.print(
                    f"[yellow]experiment {experiment.seq} {experiment.status.value}:[/] {experiment.failure}"
                )
            return
        outcome = (
            fmt_objectives(self.campaign, experiment)
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


def summary_table(record: CampaignRecord, campaign: Campaign, history: Sequence[ExperimentSummary]) -> Table:
    table = Table(title=f"campaign {record.id} ({record.name})", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    state = campaign_state(record)
    table.add_row("status", f"{state}: {record.stop_reason}" if record.stop_reason else state)
    counts = {s: sum(1 for e in history if e.status is s) for s in ExperimentStatus}
    table.add_row("experiments", ", ".join(f"{n} {s.value}" for s, n in counts.items() if n) or "none")
    table.add_row("budget", f"{spent(history)} of {campaign.budget.max_experiments}")
    found = leaders(campaign, history)
    if found.best is not None:
        best = found.best
        how = "" if len(campaign.objectives) == 1 else f" ({campaign.multi_objective})"
        table.add_row("best experiment", f"#{best.seq}{how}")
        table.add_row("best value", fmt_objectives(campaign, best))
        units = declared_units(campaign)
        table.add_row("best recipe", fmt_recipe(best.recipe, units))
        table.add_row("its measurements", fmt_recipe(best.measurements or {}, units))
    elif found.front:  # a Pareto campaign has no one best: its front is the answer
        table.add_row("Pareto front", fmt_front(found.front))
    return table


class Shown:
    """`sdl run`'s observer (`sdl.loop.foreground.Observer`): hands the display each experiment as the
    API's."""

    def __init__(self, progress: CampaignProgress) -> None:
        self.progress = progress

    def experiment_started(self, experiment: ExperimentRecord) -> None:
        self.progress.experiment_started(experiment_summary(experiment))

    def experiment_finished(self, experiment: ExperimentRecord, history: list[ExperimentRecord]) -> None:
        self.progress.experiment_finished(experiment_summary(experiment), experiment_summaries(history))


def result_line(result: RunResult) -> str:
    return f"stopped after {result.elapsed:.1f} s: {result.stop_reason}"
