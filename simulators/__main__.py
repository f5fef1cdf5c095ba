"""``python -m simulators``: serve a simulated instrument, or a whole simulated lab.

The first lines printed are the endpoints, one per line as ``<endpoint> <url>``, flushed before
anything else happens; tools start this command and read those lines to find the instrument.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from simulators.base import ConfigError, kinds, simulator_class
from simulators.clock import ScaledClock
from simulators.faults import FaultSpecError
from simulators.lab import build_lab, build_single, endpoint_names, read_lab_file, serve_lab

EPILOG = """\
examples:
  python -m simulators ne1000 --port 0              serve one NE-1000 pump on a free TCP port
  python -m simulators cavro --pty --speed 10       a Cavro pump on a pseudo-terminal, 10x faster
  python -m simulators ur --faults "protective-stop@2"
  python -m simulators ur --host 127.0.0.2 --standard-ports   a UR arm on its own ports, for ur_rtde
  python -m simulators lab experiments/color_matching/lab.yaml --speed 100 --faults-seed 7
  python -m simulators endpoints experiments/color_matching/lab.yaml   check a lab file, list its endpoints
  python -m simulators faults ne1000                list the faults an instrument can inject
  python -m simulators hands socket://127.0.0.1:PORT refill stock=red volume_ul=50000 lot=R-2
                                                    a person's hands on a running lab (bench.hands)

Each endpoint is printed first as '<endpoint> <url>' (a robot prints dashboard, script,
gripper, primary, realtime and rtde; in lab mode names are '<instrument>.<endpoint>'), then
the simulator serves until SIGINT or SIGTERM. The last line is the bench's own endpoint,
'bench.hands' ('hands' for a single instrument): refill stocks and syringes, load feeders, empty
waste, read the bench's true state (python -m simulators hands URL help).
Pass the URL to a driver: socket://127.0.0.1:PORT or /dev/pts/N. --standard-ports puts each
endpoint on the real instrument's port, for clients that take no port number (ur_rtde): one
instrument per --host.
Fault specs: NAME@N fires at the N-th opportunity, NAME%P with probability P, NAME always.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators",
        description="Byte-level simulators of lab instruments over a shared world.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "kind", help=f"instrument kind ({', '.join(kinds())}), 'lab', 'endpoints', 'faults' or 'hands'"
    )
    parser.add_argument(
        "file", nargs="?", help="the lab file (with 'lab' or 'endpoints'), or the kind (with 'faults')"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--port",
        type=int,
        default=0,
        help="TCP port; 0 picks free ports; endpoints take consecutive ports (default 0)",
    )
    where.add_argument(
        "--pty", action="store_true", help="serve each endpoint on a pseudo-terminal instead of TCP"
    )
    where.add_argument(
        "--standard-ports",
        action="store_true",
        help="serve each endpoint on the real instrument's TCP port (UR: 29999, 30001-30004, 63352), "
        "for clients that take no port number; give each instrument its own --host (127.0.0.2, ...)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--speed", type=float, default=None, help="simulated time runs X times faster (default 1)"
    )
    parser.add_argument(
        "--faults", default=None, help="fault spec for a single instrument, e.g. 'stall@3,garble%%0.01'"
    )
    parser.add_argument(
        "--faults-seed",
        type=int,
        default=None,
        metavar="N",
        help="seed of the fault injection (default: the lab file's faults_seed, else 0)",
    )
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when the process that started this one dies (for tools that supervise it)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log what the instruments do (-vv: debug)"
    )
    return parser


async def _watch_parent(stop: asyncio.Event) -> None:
    # A dead parent's children are re-parented (to init or a subreaper), so a changed parent pid
    # means the supervisor is gone: portable where prctl(PR_SET_PDEATHSIG) is Linux-only.
    parent = os.getppid()
    while not stop.is_set():
        if os.getppid() != parent:
            logging.getLogger("simulators").warning("parent process %d is gone: stopping", parent)
            stop.set()
            return
        await asyncio.sleep(0.5)


async def _serve(
    lab,
    link: str,
    host: str,
    port: int,
    *,
    single: bool,
    exit_with_parent: bool = False,
    standard_ports: bool = False,
) -> None:
    # Handlers go in before the endpoints are announced: a tool that reads the lines and stops
    # us at once must get a clean shutdown, not the default action of SIGTERM.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    watcher = loop.create_task(_watch_parent(stop)) if exit_with_parent else None
    served = await serve_lab(lab, link, host=host, port=port, standard_ports=standard_ports)
    try:
        for instrument, endpoint, info in served:
            label = endpoint if single else f"{instrument}.{endpoint}"
            print(f"{label} {info.url}")
        sys.stdout.flush()
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        for *_, info in served:
            await info.aclose()
        for simulator in lab.simulators.values():
            simulator.close()
        logging.getLogger("simulators").info("stopped")


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["hands"]:
        from simulators.hands import main as hands

        return hands(arguments[1:])
    args = _parser().parse_args(arguments)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        if args.kind == "faults":
            cls = simulator_class(args.file or "")
            for name, description in cls.supported_faults().items():
                print(f"{name:18} {description}")
            return 0
        if args.faults_seed is not None and args.faults_seed < 0:
            raise ConfigError(f"--faults-seed must be a whole number >= 0, not {args.faults_seed}")
        if args.kind == "endpoints":
            if not args.file:
                raise ConfigError("endpoints needs a lab file: python -m simulators endpoints FILE.yaml")
            lab = build_lab(read_lab_file(args.file), ScaledClock(1.0), source=args.file)
            for name in endpoint_names(lab):
                print(name)
            return 0
        if args.kind == "lab":
            if args.standard_ports:
                raise ConfigError("--standard-ports serves one instrument per host; not with 'lab'")
            if not args.file:
                raise ConfigError("lab needs a lab file: python -m simulators lab FILE.yaml")
            if args.faults:
                raise ConfigError(
                    "--faults applies to a single instrument; give faults per instrument in the lab file"
                )
            config = read_lab_file(args.file)
            speed = args.speed if args.speed is not None else float(config.get("speed", 1.0))
            lab = build_lab(config, ScaledClock(speed), source=args.file, faults_seed=args.faults_seed)
        else:
            if args.file:
                raise ConfigError(f"unexpected argument {args.file!r} after kind {args.kind!r}")
            if args.standard_ports and not simulator_class(args.kind).standard_ports:
                raise ConfigError(f"--standard-ports: {args.kind} has no standard TCP ports")
            clock = ScaledClock(args.speed or 1.0)
            lab = build_single(args.kind, clock, faults=args.faults, faults_seed=args.faults_seed)
    except (ConfigError, FaultSpecError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    link = "pty" if args.pty else "tcp"
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            _serve(
                lab,
                link,
                args.host,
                args.port,
                single=args.kind != "lab",
                exit_with_parent=args.exit_with_parent,
                standard_ports=args.standard_ports,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
