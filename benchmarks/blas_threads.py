"""How many BLAS threads a proposal should use: latency of ours with `blas_threads` 1, 2 and unset.

6-D Hartmann-6 data at uniformly random points, as in benchmarks/optimizer.py. For each history size, a warm
proposal (a long-lived optimizer, one more result each time) and a cold one (a fresh optimizer, fit
included), repeated round-robin over the settings so that a change in the machine's load falls on all of
them alike. Wall time is what threads can shorten; CPU time (all threads together) is beside it. Unset
(`blas_threads: null`) leaves BLAS as the process has it: OpenBLAS then uses one thread per core. The
proposals themselves are compared across the settings too (bit for bit).

    python benchmarks/blas_threads.py                       # ~5 min on 2 cores
    python benchmarks/blas_threads.py --sizes 50,500 --reps 3 --no-readme

Prints the table and writes its section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _latency import _history, _obs
from _problems import make_problems
from _report import machine, update_readme
from threadpoolctl import threadpool_info

from sdl.optimizer import OptimizerSettings, Proposal, make_optimizer

HERE = Path(__file__).resolve().parent
MARK = ("<!-- blas-threads-results:start -->", "<!-- blas-threads-results:end -->")
SETTINGS: dict[str, int | None] = {"1": 1, "2": 2, "unset": None}


def _timed(fn: Callable[[], list[Proposal]]) -> tuple[list[Proposal], float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def measure(
    sizes: list[int], reps: int
) -> tuple[dict[tuple[int, str, str], list[tuple[float, float]]], bool]:
    """{(n, mode, setting): [(wall, cpu), ...]} and whether every setting proposed the same points."""
    space = make_problems()["hartmann6"].space
    times: dict[tuple[int, str, str], list[tuple[float, float]]] = {}
    same = True
    for n in sizes:
        obs = _obs(*_history(n + reps + 1))
        warm = {
            name: make_optimizer(space, OptimizerSettings(seed=0, blas_threads=t))
            for name, t in SETTINGS.items()
        }
        for opt in warm.values():
            opt.propose(obs[:n], [], 1)
        for k in range(1, reps + 1):
            seen: list[list[Proposal]] = []
            history = obs[: n + k]
            for name, t in SETTINGS.items():
                props, w, c = _timed(lambda opt=warm[name], h=history: opt.propose(h, [], 1))
                times.setdefault((n, "warm", name), []).append((w, c))
                seen.append(props)
                fresh = make_optimizer(space, OptimizerSettings(seed=k, blas_threads=t))
                props, w, c = _timed(lambda opt=fresh, h=history: opt.propose(h, [], 1))
                times.setdefault((n, "cold", name), []).append((w, c))
                seen.append(props)
            recipes = [[p.recipe for p in props] for props in seen]
            same &= recipes[0::2] == [recipes[0]] * len(SETTINGS) and recipes[1::2] == [recipes[1]] * len(
                SETTINGS
            )
        print(f"  {n} observations done", file=sys.stderr, flush=True)
    return times, same


def table(times: dict[tuple[int, str, str], list[tuple[float, float]]], sizes: list[int]) -> str:
    names = list(SETTINGS)
    head = "| observations | mode | " + " | ".join(f"wall p50 s, {n}" for n in names)
    head += " | " + " | ".join(f"CPU p50 s, {n}" for n in names) + " | wall 2 / 1 | wall unset / 1 |"
    rows = [head, "|" + "---|" * (2 + 2 * len(names) + 2)]
    for n in sizes:
        for mode in ("warm", "cold"):
            wall = [float(np.median([w for w, _ in times[(n, mode, s)]])) for s in names]
            cpu = [float(np.median([c for _, c in times[(n, mode, s)]])) for s in names]
            cells = [f"{x:.3f}" for x in wall + cpu] + [
                f"×{wall[1] / wall[0]:.2f}",
                f"×{wall[2] / wall[0]:.2f}",
            ]
            rows.append(f"| {n} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",") if x], default=[50, 200, 500, 1000, 2000]
    )
    ap.add_argument("--reps", type=int, default=7, help="timed proposals per size, mode and setting")
    ap.add_argument("--readme", type=Path, default=HERE / "README.md")
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args(argv)
    started, load = time.perf_counter(), os.getloadavg()[0]
    times, same = measure(args.sizes, args.reps)
    blas = ", ".join(
        f"{i['internal_api']} {i['version']} ({i['num_threads']} threads)"
        for i in threadpool_info()
        if i["user_api"] == "blas"
    )
    body = "\n\n".join(
        [
            f"Machine: {machine()}; BLAS: {blas}",
            f"Command: `python benchmarks/blas_threads.py {' '.join(sys.argv[1:])}`",
            f"Total time {time.perf_counter() - started:.0f} s; load average {load:.1f} at the start and "
            f"{os.getloadavg()[0]:.1f} at the end (2 cores). Median of {args.reps} proposals per cell; "
            "the proposals were " + ("identical" if same else "**not identical**") + " across the settings.",
            table(times, args.sizes),
        ]
    )
    print(body)
    if not args.no_readme:
        update_readme(args.readme, body, MARK)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
