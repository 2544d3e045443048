"""Memory per idle established TCP connection, in process.

Run:  .venv/bin/python bench/conn_memory.py [--conns 10000] [--features default,none] [--json] [--root CHECKOUT]

Sans-IO, no TUN, no root: one stack (memory link, ipv4 10.0.0.1, tcp listening on port 80)
and a synthetic peer (bench/inproc.py) that opens connections to it from 10.0.0.2, one port
each, with Linux's SYN (MSS, SACK-permitted, timestamps, window scale): SYN, the stack's
SYN-ACK, ACK. Each accepted connection gets an application listener (as the streams API
attaches one) and then stays idle: no data, no timers due.

After ``--warmup`` connections (not counted: first-use caches, imports), ``--conns`` more are
opened and the growth is divided by their number, two ways (and then what they cost while idle):

- ``tracemalloc``: bytes of Python objects allocated while they were opened and still alive
  after a garbage collection (what the connections hold: the connection object, its buffers,
  policies, plugin state, the layer's tables);
- ``RSS``: the growth of the process's resident set (``/proc/self/statm``), which also counts
  the allocator's slack; measured in a run without tracemalloc.

- idle CPU: the process's CPU time over ``--idle`` seconds (default 3) with the stack on an
  asyncio event loop (the driver of ``tcpstack up``, uvloop's where installed unless
  ``TCPSTACK_UVLOOP=0``) and nothing arriving: what the idle connections cost the machine;
- timer wake-ups: how many times the stack's timer would fire over an hour of (virtual)
  idleness: each is an event-loop callback, and idle connections should arm none.

Each feature set runs in a child process of its own (``--features``: ``default`` is the
built-in default plugin set, ``none`` no features and Reno), so one cannot leave its memory to
the other. ``--root`` names the checkout whose code is measured (default: this one); it runs on
the code before issue 10 too. This is a benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import inproc
from inproc import PORT, Layout, Listener, handshake

FIRST_PORT = 1024
DT = 1e-5


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class Opener:
    """A stack listening on port 80 and the peer that opens connections to it."""

    def __init__(self, layout: Layout, features: str, capacity: int) -> None:
        self.stack = inproc.build(layout, features, max_connections=max(capacity, 1))
        self.tcp = self.stack.layer("tcp")
        self.app = Listener(self.tcp)
        self.tcp.listen(PORT, on_accept=self.app.accept, backlog=1024)
        self.port = FIRST_PORT
        self.now = 1.0

    def open(self, n: int) -> None:
        for _ in range(n):
            self.now += DT
            handshake(self.stack, self.port, self.now)
            self.port += 1

    def established(self) -> int:
        return sum(1 for c in self.app.conns if c.state.value == "ESTABLISHED")


def idle_wakeups(op: Opener, seconds: float) -> int:
    """Timer wake-ups the stack asks for over *seconds* of (virtual) idleness after the last
    connection opened: each one is a callback an event loop would run."""
    stack = op.stack
    end = op.now + seconds
    wakeups = 0
    while (t := stack.get_timer()) is not None and t <= end:
        stack.handle_timer(now=t)
        stack.frames_to_send(now=t)
        stack.dispatch_events()
        wakeups += 1
    return wakeups


def idle_cpu(op: Opener, seconds: float) -> dict[str, Any] | None:
    """The process's CPU time over *seconds* of real idleness, the stack driven by an asyncio
    event loop (tcpstack.io.driver: uvloop's where installed, unless TCPSTACK_UVLOOP=0) over an
    in-memory link nobody writes to; ``None`` for a checkout without that driver."""
    try:
        import asyncio

        from tcpstack.io import driver as drv
        from tcpstack.io.memory import MemoryLink
    except ImportError:
        return None
    link, _other = MemoryLink.pair()

    async def idle() -> float:
        d = drv.AsyncioDriver(op.stack, link)
        d.start()
        await asyncio.sleep(0.2)  # whatever start() scheduled runs first
        t0 = time.process_time()
        await asyncio.sleep(seconds)
        cpu = time.process_time() - t0
        d.stop()
        return cpu

    run = getattr(drv, "run", asyncio.run)
    cpu = run(idle())
    loop = drv.event_loop_name() if hasattr(drv, "event_loop_name") else "asyncio"
    return {"seconds": seconds, "cpu_seconds": cpu, "loop": loop}


def one(layout: Layout, features: str, conns: int, warmup: int, idle: float = 0.0) -> dict[str, Any]:
    """Both measurements for one feature set, in this process."""
    if FIRST_PORT + warmup + conns > 65535:
        raise SystemExit("too many connections for one peer address")
    # RSS first, before tracemalloc has allocated anything of its own.
    op = Opener(layout, features, warmup + conns)
    op.open(warmup)
    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    op.open(conns)
    elapsed = time.perf_counter() - t0
    gc.collect()
    rss = rss_bytes() - rss0
    if op.established() != warmup + conns:
        raise RuntimeError(f"{features}: {op.established()} of {warmup + conns} connections established")
    del op
    gc.collect()

    op = Opener(layout, features, warmup + conns)
    op.open(warmup)
    gc.collect()
    tracemalloc.start()
    op.open(conns)
    gc.collect()
    traced, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if op.established() != warmup + conns:
        raise RuntimeError(f"{features}: {op.established()} of {warmup + conns} connections established")
    result: dict[str, Any] = {
        "conns": conns,
        "tracemalloc_bytes_per_conn": traced / conns,
        "rss_bytes_per_conn": rss / conns,
        "handshake_us": elapsed / conns * 1e6,
    }
    if idle > 0:
        result["idle_cpu"] = idle_cpu(op, idle)  # first: the virtual hour below moves the clock on
        result["idle_timer_wakeups_per_hour"] = idle_wakeups(op, 3600.0)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=10_000, help="connections measured (default 10000)")
    ap.add_argument("--warmup", type=int, default=100, help="connections opened first, not counted (default 100)")
    ap.add_argument("--features", default="default,none", help="feature sets: default, none (default: both)")
    ap.add_argument("--root", type=Path, default=None, help="the checkout to measure (default: this one)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument(
        "--idle", type=float, default=3.0, help="seconds of live idleness whose CPU time is measured (0: skip)"
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sets = [f.strip() for f in args.features.split(",") if f.strip()]
    if bad := [f for f in sets if f not in ("default", "none")]:
        ap.error(f"unknown feature set(s) {bad}")
    if args.conns < 1 or args.warmup < 1:
        ap.error("--conns and --warmup must be at least 1")
    layout = inproc.load(args.root)
    if args.child:  # one feature set, JSON on stdout, for the parent
        print(json.dumps(one(layout, sets[0], args.conns, args.warmup, args.idle)))
        return 0
    results: dict[str, Any] = {}
    for features in sets:
        cmd = [sys.executable, __file__, "--child", "--features", features, "--root", str(layout.root)]
        cmd += ["--conns", str(args.conns), "--warmup", str(args.warmup), "--idle", str(args.idle)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results[features] = json.loads(out.stdout)
    report = {
        "benchmark": "conn_memory",
        "unit": "bytes_per_idle_connection",
        "layout": layout.describe(),
        "python": platform.python_version(),
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    lay = report["layout"]
    table = Table(title=f"memory per idle TCP connection ({lay['root']} @ {lay['commit']}, {args.conns:,} connections)")
    for col in ("features", "tracemalloc B/conn", "RSS B/conn", "handshake µs", "idle CPU", "timer wake-ups/h"):
        table.add_column(col, justify="left" if col == "features" else "right")
    for features, r in results.items():
        table.add_row(
            features,
            f"{r['tracemalloc_bytes_per_conn']:,.0f}",
            f"{r['rss_bytes_per_conn']:,.0f}",
            f"{r['handshake_us']:.0f}",
            _idle(r.get("idle_cpu")),
            str(r.get("idle_timer_wakeups_per_hour", "-")),
        )
    Console(width=120).print(table)
    return 0


def _idle(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    return f"{r['cpu_seconds'] * 1e3:.1f} ms in {r['seconds']:g} s ({r['loop']})"


if __name__ == "__main__":
    raise SystemExit(main())
