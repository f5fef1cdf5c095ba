"""Optimizer benchmark: random (Sobol'), stock scikit-optimize gp_minimize, Optuna's GP sampler, ours
sequential, ours with 4 asynchronous workers — sample efficiency on six problems, then proposal latency
against history size (CPU and wall time, warm and cold, batches of 1, 4 and 8, with running experiments).

    python benchmarks/optimizer.py --quick                   # a few minutes
    nice python benchmarks/optimizer.py --seeds 20           # the full run (~1 h on 2 cores)
    python benchmarks/optimizer.py --problems hartmann6 --seeds 20 --no-latency
    python benchmarks/optimizer.py --methods sdl --seed-offset 100 --seeds 40 --no-latency --no-readme
    python benchmarks/optimizer.py --latency-only            # latency alone (~15 min)

Optuna is optional (`pip install -e '.[bench]'`); without it its rows are left out.
Prints the tables and writes, for what it ran, benchmarks/optimizer.png (regret) and optimizer-latency.png,
and the sample-efficiency and latency sections of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _latency import (
    Latency,
    optuna_latency,
    refit_cycle,
    sdl_cold_latency,
    sdl_fit_cost,
    sdl_latency,
    sdl_refit_latency,
    stock_latency,
)
from _problems import make_problems
from _report import async_table, latency_headline, latency_table, machine, plot, sample_table, update_readme
from _runners import Run, run_optuna, run_sdl, run_sdl_async, run_skopt

HERE = Path(__file__).resolve().parent
SAMPLES_MARK = ("<!-- optimizer-results:start -->", "<!-- optimizer-results:end -->")
LATENCY_MARK = ("<!-- optimizer-latency:start -->", "<!-- optimizer-latency:end -->")
ALL_PROBLEMS = ("branin", "hartmann6", "ackley6", "hartmann6_noisy", "mixed", "snar")


def _one_thread() -> None:
    # Runs are spread over processes; BLAS (and torch) threads on top would only fight over the same cores.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if _has_optuna():
        import torch

        torch.set_num_threads(1)


def _has_optuna() -> bool:
    import importlib.util

    return importlib.util.find_spec("optuna") is not None and importlib.util.find_spec("torch") is not None


def _run_task(task: tuple[str, str, int]) -> Run:
    name, method, seed = task
    prob = make_problems()[name]
    if method == "skopt":
        return run_skopt(prob, seed)
    if method == "optuna":
        return run_optuna(prob, seed)
    if method == "sdl-async4":
        return run_sdl_async(prob, seed, int(prob.budget * 1.5))
    return run_sdl(prob, seed, "random" if method == "random" else "bayesian")


def _cache_file(folder: Path, task: tuple[str, str, int]) -> Path:
    return folder / f"{task[0]}-{task[1]}-{task[2]}.json"


def _load(folder: Path | None, task: tuple[str, str, int]) -> Run | None:
    path = _cache_file(folder, task) if folder else None
    if path is None or not path.exists():
        return None
    return Run(**json.loads(path.read_text()))


def _save(folder: Path, task: tuple[str, str, int], run: Run) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _cache_file(folder, task).write_text(json.dumps(dataclasses.asdict(run)))


def _csv(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="seeds per problem and method (default 10)")
    ap.add_argument(
        "--seed-offset",
        type=int,
        default=0,
        help="first seed (default 0, what the reported tables use; develop variants on another range)",
    )
    ap.add_argument("--problems", type=_csv, default=list(ALL_PROBLEMS), help="comma-separated subset")
    ap.add_argument("--methods", type=_csv, default=["random", "skopt", "optuna", "sdl", "sdl-async4"])
    ap.add_argument(
        "--latency-sizes", type=lambda s: [int(x) for x in _csv(s)], default=[50, 200, 500, 1000, 2000]
    )
    ap.add_argument("--latency-reps", type=int, default=10)
    ap.add_argument(
        "--stock-latency-max",
        type=int,
        default=500,
        help="largest history at which to time stock skopt (its tell() takes ~20 s at 500, ~75 s at 1000)",
    )
    ap.add_argument("--stock-batch-max", type=int, default=200, help="largest history for skopt's batch of 4")
    ap.add_argument(
        "--optuna-latency-max",
        type=int,
        default=500,
        help="largest history at which to time Optuna's sampler",
    )
    ap.add_argument("--cold-reps", type=int, default=3, help="fresh optimizers timed per size (cold start)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes for the optimisation runs")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--latency-only", action="store_true", help="time proposals only, no optimisation runs")
    ap.add_argument("--quick", action="store_true", help="3 seeds, branin+mixed, small latency sizes")
    ap.add_argument("--plot", type=Path, default=HERE / "optimizer.png", help="regret curves")
    ap.add_argument("--latency-plot", type=Path, default=HERE / "optimizer-latency.png")
    ap.add_argument("--readme", type=Path, default=HERE / "README.md")
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument(
        "--cache",
        type=Path,
        help="folder of finished runs: every run is saved there, and the runs of the --reuse methods found "
        "there are not run again",
    )
    ap.add_argument(
        "--only-cached",
        action="store_true",
        help="run nothing: tabulate cached runs, leaving out any (problem, method) not cached for every seed",
    )
    ap.add_argument(
        "--reuse",
        type=_csv,
        default=["random", "skopt", "optuna"],
        help="methods whose cached runs are reused (default: the peers; ours change with the code, so "
        "reuse them only for runs made with this very commit)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds = min(args.seeds, 3)
        args.problems = [p for p in args.problems if p in ("branin", "mixed")] or ["branin"]
        args.latency_sizes = [50, 200]
        args.latency_reps = 3
        args.stock_latency_max = 50
        args.stock_batch_max = 0
        args.optuna_latency_max = 50
        args.cold_reps = 2
    unknown = set(args.problems) - set(ALL_PROBLEMS)
    if unknown:
        ap.error(f"--problems: unknown {', '.join(sorted(unknown))}; allowed: {', '.join(ALL_PROBLEMS)}")
    methods = ("random", "skopt", "optuna", "sdl", "sdl-async4")
    unknown = set(args.methods) - set(methods)
    if unknown:
        ap.error(f"--methods: unknown {', '.join(sorted(unknown))}; allowed: {', '.join(methods)}")
    if "optuna" in args.methods and not _has_optuna():
        print("optuna/torch not installed (pip install -e '.[bench]'): leaving Optuna out", file=sys.stderr)
        args.methods = [m for m in args.methods if m != "optuna"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    problems = {k: v for k, v in make_problems().items() if k in args.problems}
    runs: dict[tuple[str, str], list[Run]] = {}
    started = time.perf_counter()
    tasks = [
        (name, method, seed)
        for name in problems
        for method in args.methods
        for seed in range(args.seed_offset, args.seed_offset + args.seeds)
    ]
    cached = {t: _load(args.cache, t) for t in tasks if args.cache and t[1] in args.reuse}
    cached = {t: r for t, r in cached.items() if r is not None}
    if args.only_cached:
        complete = {
            t[:2]
            for t in tasks
            if all((t[0], t[1], s) in cached for s in range(args.seed_offset, args.seed_offset + args.seeds))
        }
        tasks = [t for t in tasks if t[:2] in complete]
    if args.latency_only:
        tasks = []
    todo = [t for t in tasks if t not in cached]
    done: dict[tuple[str, str, int], Run] = {}
    with ProcessPoolExecutor(args.jobs, initializer=_one_thread) as pool:
        for (name, method, seed), run in zip(todo, pool.map(_run_task, todo), strict=True):
            done[(name, method, seed)] = run
            if args.cache:  # saved as it arrives, so an interrupted run keeps what it finished
                _save(args.cache, (name, method, seed), run)
            if seed == args.seed_offset + args.seeds - 1:
                elapsed = time.perf_counter() - started
                print(f"  {name:16s} {method:11s} done at {elapsed:6.0f} s", file=sys.stderr, flush=True)
    for task in tasks:
        runs.setdefault(task[:2], []).append(cached.get(task) or done[task])

    samples_time = time.perf_counter() - started
    lat: list[Latency] = []
    if not args.no_latency:
        _one_thread()
        batch_reps = max(3, args.latency_reps // 2)
        for n in args.latency_sizes:
            lat.append(sdl_latency(n, 1, args.latency_reps))
            lat.append(sdl_latency(n, 4, batch_reps))
            lat.append(sdl_latency(n, 8, batch_reps))
            if n >= 200:
                lat.append(sdl_latency(n, 1, batch_reps, pending=8))
                lat.append(sdl_latency(n, 1, batch_reps, pending=32))
            lat.append(sdl_refit_latency(n, args.cold_reps))
            lat.append(sdl_cold_latency(n, args.cold_reps))
            lat.append(sdl_fit_cost(n, args.cold_reps))
            if n <= args.stock_latency_max:
                lat.append(stock_latency(n, 1, 1 if n > 200 else 3))
            if n <= args.stock_batch_max:
                lat.append(stock_latency(n, 4, 1))
            if n <= args.optuna_latency_max and "optuna" in args.methods:
                lat += optuna_latency(n, 2 if n > 200 else 3)
            print(f"  latency at {n} done", file=sys.stderr, flush=True)

    head = [f"Machine: {machine()}", f"Command: `python benchmarks/optimizer.py {' '.join(sys.argv[1:])}`"]
    blocks: list[tuple[tuple[str, str], str]] = []
    if runs:
        sections = [*head, f"Total time {samples_time:.0f} s."]
        sections += ["### Sample efficiency (simple regret: median [IQR])", sample_table(problems, runs)]
        at = async_table(problems, runs)
        if at.count("\n") > 1:
            sections += ["### Asynchronous, 4 workers, lognormal durations (σ = 0.5)", at]
        plot(args.plot, problems, runs, [])
        blocks.append((SAMPLES_MARK, "\n\n".join([*sections, f"![regret]({args.plot.name})"])))
    if lat:
        sections = [
            *head,
            f"Latency timed in {time.perf_counter() - started - samples_time:.0f} s.",
            "### Proposal latency, like for like (6-D, CPU seconds with one BLAS thread, median)",
            latency_headline(lat, refit_cycle),
            "Cold: a fresh optimizer built from the history, hyperparameter fit included. Warm, "
            "refitting: a long-lived optimizer at a proposal where it refits (ours refits on a schedule, "
            "at the checkpoint in brackets; Optuna's refits on every call, warm-started from its previous "
            "fit). Between refits: ours reuses its hyperparameters; one proposal in the number given refits. "
            "Over a refit cycle: what a long-lived optimizer of ours spends per proposal, derived from the "
            "two before it (one refit, the rest between refits).",
            "### Proposal latency, every measurement (CPU with one BLAS thread; wall on the shared machine)",
            latency_table(lat),
        ]
        plot(args.latency_plot, {}, {}, lat)
        blocks.append((LATENCY_MARK, "\n\n".join([*sections, f"![latency]({args.latency_plot.name})"])))
    for _, body in blocks:
        print(body, end="\n\n")
    if not args.no_readme:
        for mark, body in blocks:
            update_readme(args.readme, body, mark)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
