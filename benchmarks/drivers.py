"""Command round trip of every driver over loopback, against a bare socket echo in the same run.

Each driver sends its cheapest real query to its simulator, started as `python -m simulators KIND`
in its own process as a real instrument would be; the baseline is a bare client talking to a bare
echo server in its own process over the same kind of link (a TCP socket, or a pseudo-terminal
with `--link pty`). (Both servers in this process would measure the interpreter lock handing
over between threads, not the link.) The ratio is what the driver (framing, parsing, locking)
plus the instrument model add to the bare round trip.

    python benchmarks/drivers.py                 # 3,000 round trips per driver
    python benchmarks/drivers.py --count 500 --link pty
    python benchmarks/drivers.py --ur-state      # the UR arm's state: dashboard polling against RTDE

SiLA 2 (with the `sila` extra): the NE-1000 simulator served by `sdl sila serve` in a process of
its own (TLS, as deployed), read through ``driver: sila2``, against the direct NE-1000 driver's
status query in the same alternating rounds: a SiLA property read (answered from the server's
memory: the gRPC round trip alone) and a SiLA command that the server hands to the NE-1000 driver.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its own name would hide the
# `drivers` package it measures.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import tty  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402

import numpy as np  # noqa: E402

from drivers.cavro import CavroPump  # noqa: E402
from drivers.newera import NE1000Line, NE1000Pump  # noqa: E402
from drivers.ocean import OceanSpectrometer  # noqa: E402
from drivers.ur import URArm  # noqa: E402
from drivers.ur.dashboard import URDashboard  # noqa: E402
from drivers.ur.urscript import MoveJ, motion_time  # noqa: E402

Query = Callable[[], object]


TCP_ECHO_SERVER = """
import asyncio

async def handle(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print("echo socket://127.0.0.1:%d" % server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""

PTY_ECHO_SERVER = """
import os, tty
master, slave = os.openpty()
tty.setraw(slave)
print("echo", os.ttyname(slave), flush=True)
while data := os.read(master, 65536):
    os.write(master, data)
"""


@contextmanager
def serving(command: list[str]) -> Iterator[dict[str, str]]:
    """A server in its own process, as an instrument is; yields the endpoints it prints first."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        name, url = process.stdout.readline().split()
        yield {name: url}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        process.stdout.close()


@contextmanager
def echo(link: str, payload: bytes = b"\x02VER\r") -> Iterator[Query]:
    """A bare client of a bare echo server on the same kind of link: the round trip to beat."""
    script = TCP_ECHO_SERVER if link == "tcp" else PTY_ECHO_SERVER
    with serving([sys.executable, "-c", script]) as endpoints:
        url = endpoints["echo"]
        if link == "tcp":
            host, port = url.removeprefix("socket://").split(":")
            client = socket.create_connection((host, int(port)))
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            send, receive, close = client.sendall, lambda: client.recv(65536), client.close
        else:
            fd = os.open(url, os.O_RDWR | os.O_NOCTTY)
            tty.setraw(fd)
            send, receive, close = (
                (lambda data: os.write(fd, data)),
                (lambda: os.read(fd, 65536)),
                (lambda: os.close(fd)),
            )

        def round_trip() -> None:
            send(payload)
            received = 0
            while received < len(payload):
                received += len(receive())

        try:
            yield round_trip
        finally:
            close()


@contextmanager
def ne1000(url: str) -> Iterator[Query]:
    line = NE1000Line.connect(url)
    pump = NE1000Pump(line, 0, diameter_mm=14.57, syringe_volume_ul=10000, max_rate_ul_min=5000)
    pump.acknowledge_alarm()  # the power-up alarm, so every timed status is the plain reply
    yield pump.status
    line.close()


@contextmanager
def cavro(url: str) -> Iterator[Query]:
    pump = CavroPump.connect(url, syringe_volume_ul=1000, ports={"water": 1, "outlet": 2, "waste": 3})
    yield pump.status
    pump.close()


@contextmanager
def ur(url: str) -> Iterator[Query]:
    dashboard = URDashboard.connect(url)
    yield dashboard.robot_mode
    dashboard.close()


@contextmanager
def ocean(url: str) -> Iterator[Query]:
    spectrometer = OceanSpectrometer.connect(url)
    yield spectrometer.product_id
    spectrometer.close()


PROBES = [
    ("NE-1000 pump", "ne1000", "pump", "status (0 -> STX 00S ETX)", ne1000),
    ("Cavro XCalibur", "cavro", "pump", "status (/1Q -> /0` ETX)", cavro),
    ("UR dashboard", "ur", "dashboard", "robotmode", ur),
    ("Ocean HDX (OBP)", "ocean-hdx", "obp", "product id (64-byte frames)", ocean),
]


def interleaved(
    queries: dict[str, Query], count: int, per_round: int = 50
) -> dict[str, tuple[list[float], float]]:
    """Per query: seconds per call, and the CPU seconds this process spent per call.

    Timing each query in one long block lets a change in the machine's state (other work, idle
    cores sleeping deeper) land on one row and not the others; short alternating rounds spread it
    over all of them, baseline included. CPU time is the client's own work (framing, parsing,
    locking), which no scheduling delay inflates.
    """
    for query in queries.values():
        for _ in range(100):  # warm up: first connections, caches, lazy imports
            query()
    times: dict[str, list[float]] = {label: [] for label in queries}
    cpu: dict[str, float] = dict.fromkeys(queries, 0.0)
    for _ in range(max(1, count // per_round)):
        for label, query in queries.items():
            samples = times[label]
            cpu_start = time.thread_time()
            for _ in range(per_round):
                start = time.perf_counter()
                query()
                samples.append(time.perf_counter() - start)
            cpu[label] += time.thread_time() - cpu_start
    return {label: (times[label], cpu[label] / len(times[label])) for label in queries}


def micros(times: list[float]) -> tuple[float, float]:
    median, p99 = np.percentile(times, [50, 99])
    return median * 1e6, p99 * 1e6


@contextmanager
def sila_served(pump_url: str, directory: Path) -> Iterator[tuple[str, str]]:
    """`sdl sila serve` over the NE-1000 at ``pump_url``: (address, certificate)."""
    import yaml

    lab = directory / "lab.yaml"
    pump = {"address": 0, "diameter_mm": 14.57, "syringe_volume_ul": 10000, "max_rate_ul_min": 5000,
            "rate_ul_min": 1000}  # fmt: skip
    lab.write_text(yaml.safe_dump({
        "name": "bench", "workcells": {"bench": {"devices": {"pumps": "pumps"}}},
        "instruments": {"pumps": {"driver": "ne1000", "address": pump_url,
                                  "options": {"pumps": {"a": pump}}}},
    }))  # fmt: skip
    command = [sys.executable, "-m", "sdl", "sila", "serve", "--lab", str(lab), "--certs", str(directory),
               "--no-discovery"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        _, address, _, certificate = process.stdout.readline().split()
        process.stdout.readline()  # ready
        yield address, certificate
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def sila(args: argparse.Namespace) -> None:
    """The SiLA section: a SiLA round trip against the direct driver, alternating rounds."""
    import tempfile

    import drivers.sila2

    with ExitStack() as stack:
        direct = stack.enter_context(serving([sys.executable, "-m", "simulators", "ne1000"]))
        queries = {"NE-1000 direct: status": stack.enter_context(ne1000(direct["pump"]))}
        served = stack.enter_context(serving([sys.executable, "-m", "simulators", "ne1000"]))
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        address, certificate = stack.enter_context(sila_served(served["pump"], directory))
        device = drivers.sila2.make_device("pumps", address, ca=certificate)
        device.connect()
        stack.callback(device.destroy)
        feature = "org.sdl/instruments/SyringePumpController/v1"
        connection = device.connection
        queries["SiLA: property Pumps"] = lambda: connection.get(feature, "Pumps")
        queries["SiLA: command SetRate"] = lambda: connection.call(
            feature, "SetRate", {"Pump": "a", "Rate": 900.0}
        )
        results = interleaved(queries, args.count)
    base_median, _ = micros(results["NE-1000 direct: status"][0])
    print()
    print(f"SiLA 2 over TLS on loopback (sdl sila serve in its own process), {args.count} each")
    header = (
        f"{'round trip':28} | {'median µs':>9} | {'p99 µs':>7} | {'x direct median':>15} | client CPU µs/call"
    )
    print(header)
    print("-" * len(header))
    for label, (times, cpu) in results.items():
        median, p99 = micros(times)
        print(f"{label:28} | {median:9.0f} | {p99:7.0f} | {median / base_median:15.2f} | {cpu * 1e6:18.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=3000, help="timed round trips per driver (default 3000)")
    parser.add_argument("--link", choices=("tcp", "pty"), default="tcp", help="simulator link (default tcp)")
    parser.add_argument("--only-sila", action="store_true", help="only the SiLA 2 section")
    parser.add_argument(
        "--ur-state", action="store_true", help="only the UR state section: dashboard polling against RTDE"
    )
    parser.add_argument("--moves", type=int, default=40, help="moves per variant in --ur-state (default 40)")
    args = parser.parse_args(argv)
    if args.only_sila:
        sila(args)
        return 0
    if args.ur_state:
        return ur_state(args.count, args.moves)

    with ExitStack() as stack:
        queries = {"echo": stack.enter_context(echo(args.link))}
        for label, kind, endpoint, _, probe in PROBES:
            command = [sys.executable, "-m", "simulators", kind, *(["--pty"] if args.link == "pty" else [])]
            endpoints = stack.enter_context(serving(command))
            queries[label] = stack.enter_context(probe(endpoints[endpoint]))
        results = interleaved(queries, args.count)
    echo_times, echo_cpu = results.pop("echo")
    echo_median, echo_p99 = micros(echo_times)
    rows = [
        (label, name, *micros(results[label][0]), results[label][1] * 1e6) for label, _, _, name, _ in PROBES
    ]

    print(
        f"driver round trips over {args.link} loopback, {args.count} each in alternating rounds of 50; "
        f"baseline: bare {args.link} echo, median {echo_median:.0f} µs, p99 {echo_p99:.0f} µs, "
        f"client CPU {echo_cpu * 1e6:.0f} µs/call"
    )
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.system()}")
    columns = (
        f"{'median µs':>9} | {'p99 µs':>7} | {'x echo median':>13} | {'x echo p99':>10} | client CPU µs/call"
    )
    header = f"{'driver':16} | {'query':28} | {columns}"
    print(header)
    print("-" * len(header))
    worst = 0.0
    for label, query_name, median, p99, cpu_us in rows:
        ratio = median / echo_median
        worst = max(worst, ratio)
        figures = f"{median:9.0f} | {p99:7.0f} | {ratio:13.2f} | {p99 / echo_p99:10.2f} | {cpu_us:18.0f}"
        print(f"{label:16} | {query_name:28} | {figures}")
    print(f"worst median ratio {worst:.2f}x (goal: within 2x of the bare round trip)")
    try:
        import sila2  # noqa: F401
    except ImportError:
        print("(SiLA 2 section skipped: pip install 'sdl[sila]')")
    else:
        sila(args)
    return 0


# -- the UR arm's state: dashboard polling against RTDE ---------------------------------------

UR_SPEED = 10.0  # simulated time runs 10x faster: a 0.6 rad move takes 0.17 s of wall time
UR_ROUTE = ("feeder_above", "dispense_above")


def _ur_arms(endpoints: dict[str, str]) -> dict[str, URArm]:
    from simulators.ur import DEFAULT_POSITIONS

    base = {k: endpoints[k] for k in ("dashboard", "script", "gripper")}
    variants = {
        "dashboard polling": base,
        "RTDE 125 Hz": {**base, "rtde": endpoints["rtde"]},
        "RTDE 500 Hz": {**base, "rtde": endpoints["rtde"]},
    }
    arms = {}
    for label, links in variants.items():
        arm = URArm.connect(links, positions=DEFAULT_POSITIONS, unlock_delay=0.0)
        if arm.state is not None and "500" in label:
            arm.state.close()
            arm.state.frequency = 500.0
            arm.state.open()
        arms[label] = arm
    return arms


def ur_state(count: int, moves: int) -> int:
    """Per variant: a status read (latency, client CPU), a move (time past its motion time, client CPU
    including the RTDE reader thread), and the CPU an idle arm's stream costs per second."""
    command = [sys.executable, "-m", "simulators", "ur", "--speed", str(UR_SPEED)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        endpoints = dict(process.stdout.readline().split() for _ in range(6))
        arms = _ur_arms(endpoints)
        try:
            return _ur_state_table(arms, count, moves)
        finally:
            for arm in arms.values():
                arm.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        process.stdout.close()


def _ur_state_table(arms: dict[str, URArm], count: int, moves: int) -> int:
    first = next(iter(arms.values()))
    first.prepare()
    for arm in arms.values():
        arm.position = first.position
    reads = interleaved({label: arm.status for label, arm in arms.items()}, count)
    # Process CPU below counts every thread, the RTDE readers too: only the measured variant's stream
    # is open, so one variant's reader is not charged to another. Blocks of moves alternate variants.
    idle: dict[str, float] = {}
    overhead: dict[str, list[float]] = {label: [] for label in arms}
    cpu_per_move: dict[str, float] = dict.fromkeys(arms, 0.0)
    position = first.position or "home"
    block = 5
    for round_ in range(max(1, moves // block)):
        for label, arm in arms.items():
            for other in arms.values():
                if other is not arm and other.state is not None:
                    other.state.close()
            if arm.state is not None:
                arm.state.open()
            if round_ == 0:  # idle: what keeping the state costs while nothing happens
                cpu, wall = time.process_time(), time.monotonic()
                time.sleep(2.0)
                idle[label] = (time.process_time() - cpu) / (time.monotonic() - wall)
            for _ in range(block):
                target = UR_ROUTE[1] if position == UR_ROUTE[0] else UR_ROUTE[0]
                move = MoveJ(arm.positions[target], arm.acceleration, arm.speed)
                expected = motion_time(arm.positions[position], move) / UR_SPEED
                cpu, start = time.process_time(), time.perf_counter()
                arm.move_to(target)
                overhead[label].append(time.perf_counter() - start - expected)
                cpu_per_move[label] += time.process_time() - cpu
                position = target
    print(
        f"UR arm state at simulated speed {UR_SPEED:g}x: status() {count} reads each and {moves} moves each "
        f"({' <-> '.join(UR_ROUTE)}), variants in alternating rounds"
    )
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.system()}")
    header = (
        f"{'state from':18} | {'status() median µs':>18} | {'p99 µs':>7} | {'CPU µs/read':>11} | "
        f"{'move: past motion ms (median)':>29} | {'p90 ms':>6} | {'CPU ms/move':>11} | {'idle CPU %':>10}"
    )
    print(header)
    print("-" * len(header))
    for label in arms:
        times, cpu = reads[label]
        median, p99 = micros(times)
        late = np.percentile(overhead[label], [50, 90]) * 1e3
        move_cpu = cpu_per_move[label] / len(overhead[label])
        print(
            f"{label:18} | {median:18.0f} | {p99:7.0f} | {cpu * 1e6:11.0f} | {late[0]:29.1f} | "
            f"{late[1]:6.1f} | {move_cpu * 1e3:11.2f} | {idle[label] * 100:10.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
