"""The published-lab campaigns, closed-loop on their simulated benches: our optimizer against random search.

Every run is the whole campaign as `sdl run` runs it: the simulated lab started from the campaign's lab
file (its world reseeded per seed, so the instruments' noise differs), the drivers over TCP, each
experiment a bluesky plan, the store the record. For each lab and seed the campaign's own optimizer
settings (bayesian) and random search spend the campaign's budget, stop rules off. The figure of merit
is each paper's kind of result read off the record; the table gives it at a quarter, half and all of the
budget: median [IQR] over seeds, and a one-sided Mann-Whitney p of "ours better than random" (and of
"worse", so the verdict can say either). It is written into benchmarks/README.md and into each lab's
README between markers, with the commit measured, and each lab's convergence plot into its folder.

    python benchmarks/published_labs.py                        # 7 labs x 2 optimizers x 10 seeds (hours)
    python benchmarks/published_labs.py --labs au_nanoparticles --seeds 2 --budget 8 --no-readme
    python benchmarks/published_labs.py --cache /tmp/labs-runs  # keep each run; a rerun reuses them

The seeds are 100-109 by default (``--seed-offset``): no lab's settings were chosen on them.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and benchmarks/drivers.py would hide the
# `drivers` package the campaigns' modules import.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from scipy.stats import mannwhitneyu  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("bayesian", "random")
MARKERS = ("<!-- published-labs-results:start -->", "<!-- published-labs-results:end -->")
SUMMARY = ("<!-- published-labs-summary:start -->", "<!-- published-labs-summary:end -->")
TABLE_LINK = "benchmarks/README.md#published-labs-benchmarkspublished_labspy"
Record = Sequence[tuple[Mapping[str, Any], Mapping[str, float]]]


@dataclass(frozen=True)
class Figure:
    """A lab's figure of merit over its record so far (the paper's kind of result)."""

    label: str
    of: Callable[[Record], float]
    higher_is_better: bool

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


def best(measurement: str, higher: bool) -> Figure:
    def of(record: Record) -> float:
        values = [m[measurement] for _, m in record if measurement in m]
        if not values:
            return float("-inf") if higher else float("inf")
        return max(values) if higher else min(values)

    return Figure(f"best {measurement}", of, higher)


def best_plqy_on_target(record: Record) -> float:
    """Epps et al.'s hierarchy: the brightest sample whose emission is within 20 meV of 2.10 eV."""
    on_target = [m["plqy"] for _, m in record if abs(m["peak_ev"] - 2.10) <= 0.02]
    return max(on_target, default=0.0)


def reactive_found(record: Record) -> float:
    """Granda et al.'s measure: distinct reactive combinations (two or more reagents) discovered."""
    combination = importlib.import_module("experiments.reactivity_search.procedure").combination
    return float(len({combination(r) for r, m in record if m["reactive"] > 0.5 and len(combination(r)) >= 2}))


FIGURES: dict[str, Figure] = {
    "au_nanoparticles": best("distance", higher=False),
    "mobile_chemist": best("activity", higher=True),
    "opv_stability": best("degradation", higher=False),
    "quantum_dots": Figure("best PLQY at 2.10±0.02 eV", best_plqy_on_target, True),
    "reactivity_search": Figure("reactive combinations found", reactive_found, True),
    "robotic_flow": best("yield", higher=True),
    "thin_film_ada": best("pseudo_mobility", higher=True),
}


# -- one closed-loop campaign ------------------------------------------------------------------------------
def run(folder: str, kind: str, seed: int, budget: int | None) -> dict[str, Any]:
    """The campaign, closed loop on its simulated bench, with this optimizer kind and seed; its record."""
    from sdl.loop.foreground import run_campaign
    from sdl.loop.lifecycle import start_campaign
    from sdl.spec.campaign import Campaign
    from sdl.spec.loading import LoadedCampaign, load_campaign
    from sdl.spec.status import ExperimentStatus
    from sdl.store import Store

    loaded = load_campaign(ROOT / "experiments" / folder / "campaign.yaml")
    spec = loaded.campaign.model_dump()
    spec["budget"].update(stop_when={}, max_wall_time=None)
    if budget is not None:
        spec["budget"]["max_experiments"] = budget
    spec["optimizer"].update(kind=kind, seed=seed)
    with tempfile.TemporaryDirectory(prefix=f"labs-{folder}-") as scratch:
        # The simulated world's seed (the instruments' noise) differs per seed, alike for both kinds.
        lab_file = loaded.path.parent / loaded.campaign.lab.simulated
        lab = yaml.safe_load(lab_file.read_text())
        lab["world"]["seed"] = 1000 * int(lab["world"].get("seed", 0)) + seed
        reseeded = Path(scratch) / lab_file.name
        reseeded.write_text(yaml.safe_dump(lab, sort_keys=False))
        spec["lab"]["simulated"] = reseeded
        campaign = LoadedCampaign(Campaign.model_validate(spec), loaded.path, loaded.source)
        start = time.perf_counter()
        with Store(Path(scratch) / "data") as store:
            campaign_id = start_campaign(store, campaign)
            run_campaign(store, campaign_id)
            experiments = store.experiments(campaign_id)
        seconds = time.perf_counter() - start
    done = [e for e in experiments if e.status == ExperimentStatus.DONE]
    return {
        "lab": folder, "kind": kind, "seed": seed, "seconds": seconds, "commit": commit(),
        "experiments": len(experiments), "failed": len(experiments) - len(done),
        "record": [[dict(e.recipe), dict(e.measurements)] for e in done],
    }  # fmt: skip


def cached_run(job: tuple[str, str, int, int | None, str | None]) -> dict[str, Any]:
    folder, kind, seed, budget, cache = job
    path = Path(cache) / f"{folder}-{kind}-{seed}-{budget or 'full'}.json" if cache else None
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    result = run(folder, kind, seed, budget)
    if path is not None:
        path.write_text(json.dumps(result))
    return result


# -- tables ----------------------------------------------------------------------------------------------
def curve(folder: str, record: Record) -> list[float]:
    figure = FIGURES[folder]
    return [figure.of(record[: n + 1]) for n in range(len(record))]


def cell(values: np.ndarray) -> str:
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return f"{median:.3g} [{q1:.3g}, {q3:.3g}]"


def verdict(ours: np.ndarray, baseline: np.ndarray, higher: bool) -> tuple[float, float, str]:
    """One-sided Mann-Whitney p of ours better, and of ours worse; what they say at 0.05."""
    if np.all(ours == ours[0]) and np.all(baseline == ours[0]):
        return 1.0, 1.0, "no better (identical)"
    better, worse = ("greater", "less") if higher else ("less", "greater")
    p_better = float(mannwhitneyu(ours, baseline, alternative=better).pvalue)
    p_worse = float(mannwhitneyu(ours, baseline, alternative=worse).pvalue)
    return p_better, p_worse, "**better**" if p_better < 0.05 else "worse" if p_worse < 0.05 else "no better"


def checkpoints(budget: int) -> list[int]:
    return sorted({n for n in (budget // 4, budget // 2, budget) if n >= 1})


def table(
    results: Mapping[str, Mapping[str, np.ndarray]], seconds: Mapping[str, float]
) -> tuple[list[str], dict[str, str]]:
    """The table's lines, and each lab's verdict at its whole budget."""
    header = ("| lab | figure of merit | experiments | ours (bayesian) median [IQR] | random median [IQR] "
              "| p (ours better) | p (ours worse) | verdict | s per campaign |")  # fmt: skip
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    final: dict[str, str] = {}
    for folder, curves in results.items():
        figure = FIGURES[folder]
        for n in checkpoints(curves["bayesian"].shape[1]):
            ours, baseline = curves["bayesian"][:, n - 1], curves["random"][:, n - 1]
            p_better, p_worse, says = verdict(ours, baseline, figure.higher_is_better)
            lines.append(
                f"| {folder} | {figure.label} ({figure.direction}) | {n} | {cell(ours)} | {cell(baseline)} "
                f"| {p_better:.2g} | {p_worse:.2g} | {says} | {seconds[folder]:.0f} |"
            )
            final[folder] = says
    return lines, final


def summary(final: Mapping[str, str], seeds: Sequence[int], commits: Sequence[str]) -> str:
    """One sentence for the top README: where ours beats random at the whole budget, and where not."""
    groups: dict[str, list[str]] = {}
    for folder, says in final.items():
        groups.setdefault(says.strip("*").split(" (")[0], []).append(folder.replace("_", " "))
    parts = [f"{kind} on {', '.join(labs)}" for kind in ("better", "no better", "worse")
             if (labs := groups.get(kind))]  # fmt: skip
    return (
        f"Against random search at each campaign's whole budget (closed loop, {len(seeds)} seeds, one-sided "
        f"Mann-Whitney p < 0.05), our optimizer is {'; '.join(parts)} (measured at {', '.join(commits)}; "
        f"the [table]({TABLE_LINK}) gives every figure)."
    )


#: What the runs execute: the labs' code and files, and the packages (not READMEs or plots).
CODE = (":(glob)experiments/**/*.py", ":(glob)experiments/**/*.yaml", "sdl", "simulators", "drivers")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def commit(at: str = "HEAD") -> str:
    """The last commit (at or before ``at``) that changed what the runs execute, so committing the figures
    afterwards does not move it; "+changes" if the working tree's code differs from it."""
    if at != "HEAD":  # a run's record: the commit it named, and whether its tree had changes
        head, _, changed = at.partition("+")
        return (git("log", "-1", "--format=%h", head, "--", *CODE) or head) + ("+changes" if changed else "")
    last = git("log", "-1", "--format=%h", "--", *CODE) or "unknown"
    return last + ("+changes" if git("status", "--porcelain", "--", *CODE) else "")


def replace_block(
    path: Path, block: str, heading: str | None = None, markers: tuple[str, str] = MARKERS
) -> None:
    start, end = markers
    text = path.read_text()
    if start in text:
        before, rest = text.split(start, 1)
        text = before + f"{start}\n{block}\n{end}" + rest.split(end, 1)[1]
    elif heading is not None:
        text = text.rstrip() + f"\n\n{heading}\n\n{start}\n{block}\n{end}\n"
    else:
        raise SystemExit(f"{path}: no {start} block to rewrite")
    path.write_text(text)


def plot(folder: str, curves: Mapping[str, np.ndarray], seeds: Sequence[int], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6.5, 4.0))
    for kind, colour in zip(KINDS, ("tab:blue", "tab:orange"), strict=True):
        data = curves[kind]
        x = np.arange(1, data.shape[1] + 1)
        q1, median, q3 = np.percentile(data, [25, 50, 75], axis=0)
        label = "ours (bayesian)" if kind == "bayesian" else kind
        axis.plot(x, median, color=colour, label=f"{label}, median of {len(seeds)} seeds")
        axis.fill_between(x, q1, q3, color=colour, alpha=0.2)
    axis.set_xlabel("experiment (closed loop, simulated bench)")
    axis.set_ylabel(FIGURES[folder].label)
    axis.set_title(f"{folder}: {FIGURES[folder].label} (IQR shaded)")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--labs", nargs="+", choices=sorted(FIGURES), default=sorted(FIGURES))
    parser.add_argument("--seeds", type=int, default=10, help="seeds per optimizer kind (default 10)")
    parser.add_argument("--seed-offset", type=int, default=100, help="first seed (default 100)")
    parser.add_argument("--budget", type=int, default=None, help="experiments per run (default: campaign's)")
    parser.add_argument("--jobs", type=int, default=2, help="campaigns run at once (default 2)")
    parser.add_argument("--cache", type=Path, default=None, help="keep each run here; reuse what is there")
    parser.add_argument("--no-plots", action="store_true", help="do not write the convergence plots")
    parser.add_argument("--no-readme", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
    if args.cache is not None:
        args.cache.mkdir(parents=True, exist_ok=True)

    # Seed by seed, so every lab has run once early on (a lab that fails shows at once).
    jobs = [(folder, kind, seed, args.budget, str(args.cache) if args.cache else None)
            for seed in seeds for folder in args.labs for kind in KINDS]  # fmt: skip
    runs: dict[tuple[str, str, int], dict[str, Any]] = {}
    # One process per campaign (each starts its own simulator): nothing of one run leaks into the next.
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.jobs, maxtasksperchild=1) as pool:
        for result in pool.imap_unordered(cached_run, jobs):
            runs[result["lab"], result["kind"], result["seed"]] = result
            done = f"{len(result['record'])} done, {result['failed']} failed, {result['seconds']:.0f} s"
            name = f"{result['lab']} {result['kind']} seed {result['seed']}"
            print(f"{name}: {done}", file=sys.stderr, flush=True)

    results: dict[str, dict[str, np.ndarray]] = {}
    seconds: dict[str, float] = {}
    for folder in args.labs:
        results[folder] = {}
        for kind in KINDS:
            curves = [curve(folder, runs[folder, kind, seed]["record"]) for seed in seeds]
            length = min(len(c) for c in curves)
            results[folder][kind] = np.array([c[:length] for c in curves])
        seconds[folder] = float(np.median([runs[folder, "bayesian", s]["seconds"] for s in seeds]))
        if not args.no_plots:
            plot(folder, results[folder], seeds, ROOT / "experiments" / folder / "convergence.png")

    commits = sorted({commit(r["commit"]) for r in runs.values()})
    failed = sum(r["failed"] for r in runs.values())
    hours = sum(r["seconds"] for r in runs.values()) / 3600
    command = "python benchmarks/published_labs.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    preamble = [
        f"Measured at commit {', '.join(commits)}; {machine()}.",
        "",
        f"Command: `{command}`. Seeds {seeds[0]}-{seeds[-1]} (no lab's settings were chosen on them), both "
        f"optimizers on each; every run the whole campaign closed loop through the drivers on its simulated "
        f"bench ({len(runs)} campaigns, {failed} failed experiments, {hours:.1f} hours of campaign time in "
        f"all). p: one-sided Mann-Whitney U over the seeds; verdict at p < 0.05.",
        "",
    ]
    lines, final = table(results, seconds)
    print("\n".join(preamble + lines))
    print("\n" + summary(final, seeds, commits))
    if not args.no_readme:
        replace_block(ROOT / "benchmarks" / "README.md", "\n".join(preamble + lines),
                      heading="## Published labs (`benchmarks/published_labs.py`)")  # fmt: skip
        for folder in args.labs:
            mine = [lines[0], lines[1]] + [line for line in lines[2:] if line.startswith(f"| {folder} |")]
            note = (f"Measured at commit {', '.join(commits)}, seeds {seeds[0]}-{seeds[-1]}, by "
                    f"`{command}` (the whole table: [benchmarks/README.md](../../benchmarks/README.md"
                    f"#published-labs-benchmarkspublished_labspy)).")  # fmt: skip
            replace_block(ROOT / "experiments" / folder / "README.md", "\n".join([note, "", *mine]),
                          heading="## Benchmark: our optimizer against random search")  # fmt: skip
        if set(args.labs) == set(FIGURES) and args.budget is None:
            replace_block(ROOT / "README.md", summary(final, seeds, commits), markers=SUMMARY)
    return 0


def machine() -> str:
    return f"{platform.machine()}, {multiprocessing.cpu_count()} cores, Python {platform.python_version()}"


if __name__ == "__main__":
    sys.exit(main())
