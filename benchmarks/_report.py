"""Statistics, tables (markdown), the plot, and the README section of the optimizer benchmark."""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np
from _latency import Latency
from _problems import Problem
from _runners import Run
from scipy.stats import fisher_exact, mannwhitneyu

CHECKPOINTS = (10, 20, 30)
METHODS = ("random", "skopt", "optuna", "sdl", "sdl-async4")
PEERS = ("skopt", "optuna")


def _miqr(a: np.ndarray, fmt: str = "{:.3g}") -> str:
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return f"{fmt.format(med)} [{fmt.format(q1)}, {fmt.format(q3)}]"


def curves(runs: Sequence[Run], problem: Problem) -> np.ndarray:
    return np.array([r.regret_curve(problem.optimum, problem.budget) for r in runs])


def evals_to(curve: np.ndarray, threshold: float) -> int:
    hit = np.nonzero(curve < threshold)[0]
    return int(hit[0]) + 1 if len(hit) else len(curve) + 1


def _versus(final: np.ndarray, base: np.ndarray, threshold: float) -> str:
    """Median ratio, one-sided Mann–Whitney p-values on final regret, two-sided Fisher p on success counts."""
    worse = mannwhitneyu(final, base, alternative="greater").pvalue
    better = mannwhitneyu(final, base, alternative="less").pvalue
    ratio = np.median(final) / max(np.median(base), 1e-12)
    wins, base_wins = int(np.sum(final < threshold)), int(np.sum(base < threshold))
    fisher = fisher_exact([[wins, len(final) - wins], [base_wins, len(base) - base_wins]]).pvalue
    return f"×{ratio:.2g}; MW p(worse)={worse:.2f}, p(better)={better:.2f}; Fisher p={fisher:.2f}"


def sample_table(problems: dict[str, Problem], runs: dict[tuple[str, str], list[Run]]) -> str:
    peers = [p for p in PEERS if any((n, p) in runs for n in problems)]
    head = (
        "| problem | method | regret@10 | regret@20 | regret@30 | final regret | success | evals to target "
        "| opt. s/run |" + "".join(f" vs {p} (final) |" for p in peers)
    )
    rows = [head, "|---" * (9 + len(peers)) + "|"]
    for name, prob in problems.items():
        bases = {p: curves(runs[(name, p)], prob)[:, -1] for p in peers if (name, p) in runs}
        for method in METHODS:
            rs = runs.get((name, method))
            if not rs:
                continue
            c = curves(rs, prob)
            final = c[:, -1]
            at = [_miqr(c[:, k - 1]) if k <= prob.budget else "–" for k in CHECKPOINTS]
            success = np.mean(final < prob.threshold)
            to_target = np.median([evals_to(row, prob.threshold) for row in c])
            secs = np.median([r.seconds for r in rs])
            versus = [
                _versus(final, bases[p], prob.threshold) if p in bases and p != method else "–" for p in peers
            ]
            rows.append(
                f"| {name} ({prob.budget} ev., {len(rs)} seeds) | {method} | {at[0]} | {at[1]} | {at[2]} "
                f"| {_miqr(final)} | {success:.0%} (<{prob.threshold:g}) | {to_target:.0f} | {secs:.2f} |"
                + "".join(f" {v} |" for v in versus)
            )
    return "\n".join(rows)


def async_table(problems: dict[str, Problem], runs: dict[tuple[str, str], list[Run]]) -> str:
    rows = [
        "| problem | seeds | experiments to reach sequential final regret (× budget) "
        "| lab time to reach it (× sequential) | reached |\n|---|---|---|---|---|"
    ]
    for name, prob in problems.items():
        seq, asy = runs.get((name, "sdl")), runs.get((name, "sdl-async4"))
        if not seq or not asy:
            continue
        exp_ratio, time_ratio, reached = [], [], 0
        by_seed = {r.seed: r for r in asy}
        for s in seq:
            a = by_seed.get(s.seed)
            if a is None:
                continue
            target = s.regret_curve(prob.optimum, prob.budget)[-1]
            ac = a.regret_curve(prob.optimum, len(a.truths))
            hit = np.nonzero(ac <= target + 1e-12)[0]
            if len(hit):
                reached += 1
                exp_ratio.append((hit[0] + 1) / prob.budget)
                time_ratio.append(a.finish[hit[0]] / s.finish[-1])
            else:
                exp_ratio.append((len(ac) + 1) / prob.budget)
                time_ratio.append(a.finish[-1] / s.finish[-1])
        rows.append(
            f"| {name} | {len(seq)} | {_miqr(np.array(exp_ratio), '{:.2f}')} "
            f"| {_miqr(np.array(time_ratio), '{:.2f}')} | {reached}/{len(seq)} |"
        )
    return "\n".join(rows)


_MODE_ORDER = {"warm": 0, "warm-refit": 1, "cold": 2, "fit": 3, "refit": 4}


def latency_table(lat: Sequence[Latency]) -> str:
    rows = [
        "| observations | method | batch | pending | mode | CPU p50 s | CPU p95 s | wall p50 s | wall p95 s "
        "| peak MiB | min gap in batch | reps |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    ]
    key = lambda x: (x.n, x.method != "sdl", x.method, _MODE_ORDER[x.mode], x.batch, x.pending)  # noqa: E731
    for x in sorted(lat, key=key):
        cpu50, cpu95 = np.percentile(x.cpu, [50, 95])
        wall50, wall95 = np.percentile(x.wall, [50, 95])
        peak = f"{x.peak_mb:.0f}" if x.peak_mb is not None else "–"
        gap = f"{x.min_gap:.3f}" if x.min_gap is not None else "–"
        rows.append(
            f"| {x.n} | {x.method} | {x.batch} | {x.pending} | {x.mode} | {cpu50:.3f} | {cpu95:.3f} "
            f"| {wall50:.3f} | {wall95:.3f} | {peak} | {gap} | {x.reps} |"
        )
    return "\n".join(rows)


def latency_headline(lat: Sequence[Latency], cycle: Callable[[int], int]) -> str:
    """Ours against the peers like for like, CPU median of one proposal: a fresh optimizer against a fresh
    one (both fit), and a long-lived one at a proposal that refits against Optuna's warm one (which refits
    on every call, warm-started); our proposals between refits, which no peer has, after them.
    ``cycle(n)`` is how many of our proposals share one fit around ``n`` observations."""

    def cpu(method: str, mode: str, n: int | None = None) -> dict[int, float]:
        return {
            x.n: float(np.median(x.cpu))
            for x in lat
            if x.method == method and x.mode == mode and x.batch == 1 and not x.pending and n in (None, x.n)
        }

    def fmt(v: float | None) -> str:
        return "–" if v is None else f"{v:.3g}"

    def ratio(peer: float | None, ours: float | None) -> str:
        return "–" if peer is None or ours is None else f"×{peer / ours:.1f}"

    ours_cold, optuna_cold, skopt = cpu("sdl", "cold"), cpu("optuna", "cold"), cpu("skopt", "refit")
    ours_warm, ours_refit, optuna_warm = cpu("sdl", "warm"), cpu("sdl", "warm-refit"), cpu("optuna", "warm")
    rows = [
        "| observations | cold: ours | cold: Optuna | Optuna ÷ ours | warm, refitting: ours (at) "
        "| warm: Optuna (refits each call) | Optuna ÷ ours | warm between refits: ours (one fit per) "
        "| ours over a refit cycle | Optuna ÷ ours | skopt tell (refits each call) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sorted(ours_cold):
        refit_at = min(ours_refit, key=lambda c: abs(c - n)) if ours_refit else None
        refit = ours_refit.get(refit_at) if refit_at is not None else None
        between = ours_warm.get(n) if cycle(n) > 1 else None
        # derived: one refit and cycle - 1 proposals between refits, per proposal
        mean = (refit + (cycle(n) - 1) * between) / cycle(n) if refit and between else refit
        cold = ours_cold[n]
        rows.append(
            f"| {n} | {fmt(cold)} | {fmt(optuna_cold.get(n))} | {ratio(optuna_cold.get(n), cold)} "
            f"| {fmt(refit)} ({refit_at}) | {fmt(optuna_warm.get(n))} | {ratio(optuna_warm.get(n), refit)} "
            f"| {fmt(between)}"
            + (f" (1 in {cycle(n)})" if between is not None else "")
            + f" | {fmt(mean)} | {ratio(optuna_warm.get(n), mean)} | {fmt(skopt.get(n))} |"
        )
    return "\n".join(rows)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    names = ("numpy", "scipy", "scikit-learn", "scikit-optimize", "matplotlib", "optuna", "torch")
    found = []
    for p in names:
        try:
            found.append(f"{p} {version(p)}")
        except Exception:  # an optional peer that is not installed
            continue
    pkgs = ", ".join(found)
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}; {pkgs}"


def plot(
    path: Path, problems: dict[str, Problem], runs: dict[tuple[str, str], list[Run]], lat: Sequence[Latency]
):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in problems if any((n, m) in runs for m in METHODS)]
    panels = len(names) + (1 if lat else 0)
    cols = min(3, panels)
    fig, axes = plt.subplots((panels + cols - 1) // cols, cols, figsize=(5 * cols, 3.6 * ((panels + 2) // 3)))
    axes = np.atleast_1d(axes).ravel()
    for ax, name in zip(axes, names, strict=False):
        prob = problems[name]
        for method in METHODS:
            rs = runs.get((name, method))
            if not rs:
                continue
            c = np.maximum(curves(rs, prob), 1e-6)
            c[~np.isfinite(c)] = np.nan  # no feasible point yet
            x = np.arange(1, prob.budget + 1)
            q1, med, q3 = np.nanpercentile(c, [25, 50, 75], axis=0)
            ax.plot(x, med, label=method)
            ax.fill_between(x, q1, q3, alpha=0.2)
        ax.axhline(prob.threshold, color="grey", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_title(f"{name} (median, IQR)")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("simple regret")
        ax.legend(fontsize=7)
    if lat:
        ax = axes[len(names)]
        series = sorted({(x.method, x.batch, x.mode) for x in lat if not x.pending and x.mode != "fit"})
        for method, batch, mode in series:
            pts = sorted(
                (x.n, float(np.median(x.cpu)))
                for x in lat
                if (x.method, x.batch, x.mode) == (method, batch, mode) and not x.pending
            )
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"{method}, batch {batch}, {mode}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title("proposal latency, CPU median (6-D)")
        ax.set_xlabel("observations")
        ax.set_ylabel("CPU seconds")
        ax.legend(fontsize=6)
    for ax in axes[panels:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_readme(
    path: Path,
    body: str,
    marks: tuple[str, str] = ("<!-- optimizer-results:start -->", "<!-- optimizer-results:end -->"),
) -> None:
    start, end = marks
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
