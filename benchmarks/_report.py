"""Statistics, tables (markdown), the plot, and the README section of the optimizer benchmark."""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np
from _latency import Latency
from _runners import Run
from scipy.stats import mannwhitneyu

from sdl.optimizer.problems import Problem

CHECKPOINTS = (10, 20, 30)
METHODS = ("random", "skopt", "sdl", "sdl-async4")


def _miqr(a: np.ndarray, fmt: str = "{:.3g}") -> str:
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return f"{fmt.format(med)} [{fmt.format(q1)}, {fmt.format(q3)}]"


def curves(runs: Sequence[Run], problem: Problem) -> np.ndarray:
    return np.array([r.regret_curve(problem.optimum, problem.budget) for r in runs])


def evals_to(curve: np.ndarray, threshold: float) -> int:
    hit = np.nonzero(curve < threshold)[0]
    return int(hit[0]) + 1 if len(hit) else len(curve) + 1


def sample_table(problems: dict[str, Problem], runs: dict[tuple[str, str], list[Run]]) -> str:
    head = (
        "| problem | method | regret@10 | regret@20 | regret@30 | final regret | success | evals to target "
        "| opt. s/run | vs skopt (final) |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for name, prob in problems.items():
        base = runs.get((name, "skopt"))
        base_final = curves(base, prob)[:, -1] if base else None
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
            versus = "–"
            if base_final is not None and method != "skopt":
                worse = mannwhitneyu(final, base_final, alternative="greater").pvalue
                better = mannwhitneyu(final, base_final, alternative="less").pvalue
                ratio = np.median(final) / max(np.median(base_final), 1e-12)
                versus = f"×{ratio:.2g}; p(worse)={worse:.2f}, p(better)={better:.2f}"
            rows.append(
                f"| {name} ({prob.budget} ev., {len(rs)} seeds) | {method} | {at[0]} | {at[1]} | {at[2]} "
                f"| {_miqr(final)} | {success:.0%} (<{prob.threshold:g}) | {to_target:.0f} | {secs:.2f} "
                f"| {versus} |"
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


def latency_table(lat: Sequence[Latency], cold: dict[int, float]) -> str:
    rows = [
        "| observations | method | batch | p50 s | p95 s | peak MiB | cold start s | reps |\n"
        "|---|---|---|---|---|---|---|---|"
    ]
    for x in sorted(lat, key=lambda x: (x.n, x.batch, x.method)):
        peak = f"{x.peak_mb:.0f}" if x.method == "sdl" else "–"
        c = f"{cold[x.n]:.2f}" if x.method == "sdl" and x.batch == 1 and x.n in cold else "–"
        rows.append(
            f"| {x.n} | {x.method} | {x.batch} | {x.p50:.3f} | {x.p95:.3f} | {peak} | {c} | {x.reps} |"
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
    pkgs = ", ".join(
        f"{p} {version(p)}" for p in ("numpy", "scipy", "scikit-learn", "scikit-optimize", "matplotlib")
    )
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}; {pkgs}"


def plot(
    path: Path, problems: dict[str, Problem], runs: dict[tuple[str, str], list[Run]], lat: Sequence[Latency]
):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in problems if any((n, m) in runs for m in METHODS)]
    panels = len(names) + (1 if lat else 0)
    cols = 3
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
        for method, batch in sorted({(x.method, x.batch) for x in lat}):
            pts = sorted((x.n, x.p95) for x in lat if x.method == method and x.batch == batch)
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"{method}, batch {batch}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title("proposal latency p95 (6-D)")
        ax.set_xlabel("observations")
        ax.set_ylabel("seconds")
        ax.legend(fontsize=7)
    for ax in axes[panels:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_readme(path: Path, body: str) -> None:
    start, end = "<!-- optimizer-results:start -->", "<!-- optimizer-results:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
