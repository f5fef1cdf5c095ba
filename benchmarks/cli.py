"""How long the `sdl` command takes to answer: CPU and wall time of a few commands, against `python -c pass`.

Each command runs as a user runs it (a fresh interpreter, `python -m sdl ...`), round-robin over the commands
so that a change in the machine's load falls on all of them alike; CPU is the child's own (user + system,
from wait4), wall is from start to exit. The lab-service commands are measured without a service: with no
service record in the data directory (they should fail at once), and with a record whose service does not
answer (they should give up after a bounded wait, which is all wall and no CPU).

    python benchmarks/cli.py                 # ~1 min on 2 cores
    python benchmarks/cli.py --runs 5 --no-readme

Prints the table and writes its section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MARK = ("<!-- cli-results:start -->", "<!-- cli-results:end -->")
BASELINE = "python -c pass"


def commands(empty: Path, stale: Path) -> dict[str, list[str]]:
    sdl = [sys.executable, "-m", "sdl"]
    branin = str(ROOT / "experiments" / "branin" / "campaign.yaml")
    return {
        BASELINE: [sys.executable, "-c", "pass"],
        "sdl --help": [*sdl, "--help"],
        "sdl status --help": [*sdl, "status", "--help"],
        "sdl status (no service record)": [*sdl, "status", "--data-dir", str(empty)],
        "sdl submit FILE (no service record)": [*sdl, "submit", branin, "--data-dir", str(empty)],
        "sdl status (a record, nothing answers)": [*sdl, "status", "--data-dir", str(stale)],
        "sdl validate experiments/branin/campaign.yaml": [*sdl, "validate", branin],
    }


def run_once(command: list[str]) -> tuple[float, float, int]:
    """(CPU seconds of the child, wall seconds, exit code)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
    return usage.ru_utime + usage.ru_stime, wall, process.returncode


def stale_record(directory: Path) -> None:
    """A daemon.json whose service does not answer: a live process (this one) that serves nothing, at a port
    nothing listens on (bound here to learn a free one, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    info = {"pid": os.getpid(), "api": f"tcp://127.0.0.1:{port}", "lab": "benchmark"}
    (directory / "daemon.json").write_text(json.dumps(info))


def measure(runs: int) -> tuple[dict[str, list[tuple[float, float, int]]], float]:
    with tempfile.TemporaryDirectory() as tmp:
        empty, stale = Path(tmp) / "empty", Path(tmp) / "stale"
        empty.mkdir()
        stale.mkdir()
        stale_record(stale)
        table = commands(empty, stale)
        out: dict[str, list[tuple[float, float, int]]] = {name: [] for name in table}
        started = time.perf_counter()
        for _ in range(runs):
            for name, command in table.items():
                out[name].append(run_once(command))
        return out, time.perf_counter() - started


def render(results: dict[str, list[tuple[float, float, int]]]) -> str:
    base_cpu = statistics.median(c for c, _, _ in results[BASELINE])
    rows = [
        "| command | exit | CPU median s | CPU max s | wall median s | wall max s | CPU over baseline s "
        "| runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, samples in results.items():
        cpu = [c for c, _, _ in samples]
        wall = [w for _, w, _ in samples]
        codes = sorted({code for _, _, code in samples})
        over = "–" if name == BASELINE else f"{statistics.median(cpu) - base_cpu:.3f}"
        rows.append(
            f"| `{name}` | {', '.join(map(str, codes))} | {statistics.median(cpu):.3f} | {max(cpu):.3f} "
            f"| {statistics.median(wall):.3f} | {max(wall):.3f} | {over} | {len(samples)} |"
        )
    return "\n".join(rows)


def machine() -> str:
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def update_readme(path: Path, body: str) -> None:
    start, end = MARK
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15, help="runs of each command (default 15)")
    parser.add_argument("--no-readme", action="store_true", help="print only; leave benchmarks/README.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results, seconds = measure(args.runs)
    table = render(results)
    body = (
        f"Machine: {machine()}\n\n"
        f"Command: `python benchmarks/cli.py{' --runs ' + str(args.runs) if args.runs != 15 else ''}`\n\n"
        f"Total time {seconds:.0f} s; load average {load_before:.1f} at the start and "
        f"{os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} cores). Median and maximum of {args.runs} "
        "runs of each command, round-robin.\n\n" + table
    )
    print(body)
    if not args.no_readme:
        update_readme(HERE / "README.md", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
