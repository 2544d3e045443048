"""What the probe costs (issue 12, docs/observability.md "The probe"): CPU per MB and per connection
with the probe off, on (records held in memory), and on writing a JSON-lines file.

Run (no root, no TUN):
    .venv/bin/python bench/probe_cost.py [--segments 20000] [--runs 3] [--conns 1000]
    .venv/bin/python bench/probe_cost.py --callgrind [--root CHECKOUT] [--cases receive/default,...]

The in-process bulk transfers of bench/segment.py (a synthetic Linux-like peer; **receive**: the
stack reads in-order data segments and ACKs them; **send**: the stack sends while the peer ACKs
every second segment) and the sequential connections of bench/conn_inproc.py, each built with
``default`` (the built-in default features), ``probe`` (the same with the probe feature on, records
held in memory) and ``probe=FILE`` (also written to a JSON-lines file in a temporary directory).

Timed mode: per case, the median over ``--runs`` of

- ``cpu_us``: bench/segment.py's figure, the stack's CPU µs per segment on the main thread;
- ``proc_us``: the process's CPU µs per segment over the whole run, every thread (the probe's
  writer thread formats and writes the file), closing included, the synthetic peer's own work
  included (the same in every case, so differences between cases are the probe's);
- ``us_per_MB``: ``proc_us`` per megabyte of payload (1e6 / payload bytes per segment).

and for connections: process CPU µs per connection (open to CLOSED, 4 segments each way).

``--callgrind`` runs itself under ``valgrind --tool=callgrind`` twice per case (``--small`` and
``--large`` segments) and prints instructions per segment, deterministic to a few hundredths of a
percent: with ``--root /work/main`` and the case ``receive/default`` on both checkouts, what the
probe costs a stack where it is off. ``TCPSTACK_PURE_PYTHON=1`` measures the pure-Python build.
This is a benchmark, not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import inproc  # noqa: E402

CASES = ("default", "probe", "probe=FILE")


def _case(name: str, tmp: str) -> str:
    return f"probe={tmp}/probe.jsonl" if name == "probe=FILE" else name


class _Built:
    """Remember the stacks inproc.build makes (to close their probe files, as a driver would)."""

    def __init__(self) -> None:
        self.stacks: list[Any] = []
        self._build = inproc.build

    def __enter__(self) -> _Built:
        def build(layout: Any, features: str, **tcp: Any) -> Any:
            stack = self._build(layout, features, **tcp)
            self.stacks.append(stack)
            return stack

        inproc.build = build  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        inproc.build = self._build  # type: ignore[assignment]
        for stack in self.stacks:
            if stack.host is not None:
                stack.host.stack_closed(stack)  # the probe file is written and closed


def transfer(layout: Any, kind: str, case: str, segments: int, warmup: int) -> dict[str, float]:
    import segment

    fn = segment.receive if kind == "receive" else segment.send
    with tempfile.TemporaryDirectory() as tmp:
        gc.collect()
        p0 = time.process_time()
        with _Built():
            res = fn(layout, _case(case, tmp), segments, warmup)
        proc = (time.process_time() - p0) / (segments + warmup) * 1e6
        size = Path(tmp, "probe.jsonl").stat().st_size if case == "probe=FILE" else 0
    return {"cpu_us": res["cpu_us"], "proc_us": proc, "payload": res["payload"], "file_bytes": size}


def connections(layout: Any, case: str, conns: int) -> float:
    import conn_inproc

    with tempfile.TemporaryDirectory() as tmp, _Built() as built:
        original = built._build

        def build(lay: Any, features: str, **tcp: Any) -> Any:
            stack = original(lay, _case(case, tmp), **tcp)
            built.stacks.append(stack)
            return stack

        inproc.build = build  # type: ignore[assignment]
        bench = conn_inproc.Bench(layout.root, "info")
        bench.run(200)
        gc.collect()
        p0 = time.process_time()
        bench.run(conns)
        return (time.process_time() - p0) / conns * 1e6


def timed(args: argparse.Namespace) -> int:
    layout = inproc.load(args.root)
    rows: dict[str, list[dict[str, float]]] = {}
    per_conn: dict[str, list[float]] = {}
    for _ in range(args.runs):
        for kind in ("receive", "send"):
            for case in CASES:  # interleaved: a change of load weighs on every case alike
                rows.setdefault(f"{kind}/{case}", []).append(transfer(layout, kind, case, args.segments, args.warmup))
        for case in CASES:
            per_conn.setdefault(case, []).append(connections(layout, case, args.conns))
    print(f"checkout {inproc.git_commit(layout.root)}, {args.runs} runs, {args.segments} segments, {args.conns} conns")
    print(f"{'case':<22}{'cpu_us/seg':>12}{'proc_us/seg':>13}{'proc_ms/MB':>12}{'vs off':>9}{'file B/seg':>12}")
    for kind in ("receive", "send"):
        base = statistics.median(r["proc_us"] for r in rows[f"{kind}/default"])
        for case in CASES:
            runs = rows[f"{kind}/{case}"]
            cpu = statistics.median(r["cpu_us"] for r in runs)
            proc = statistics.median(r["proc_us"] for r in runs)
            per_mb = proc * 1e6 / runs[0]["payload"] / 1000
            fb = runs[0]["file_bytes"] / (args.segments + args.warmup)
            print(f"{kind + '/' + case:<22}{cpu:>12.2f}{proc:>13.2f}{per_mb:>12.1f}{proc / base:>9.2f}{fb:>12.0f}")
    base_c = statistics.median(per_conn["default"])
    for case in CASES:
        c = statistics.median(per_conn[case])
        print(f"{'conn/' + case:<22}{'':>12}{c:>13.1f}{'':>12}{c / base_c:>9.2f}   (process CPU µs per connection)")
    return 0


def one(args: argparse.Namespace) -> int:
    """One case, for callgrind: *segments* of it after the warm-up."""
    layout = inproc.load(args.root)
    kind, _, case = args.one.partition("/")
    transfer(layout, kind, case, args.segments, args.warmup)
    return 0


def callgrind(args: argparse.Namespace) -> int:
    build = "pure" if os.environ.get("TCPSTACK_PURE_PYTHON") == "1" else "compiled"
    root = args.root or HERE.parent
    for case in args.cases.split(","):
        counts: dict[int, int] = {}
        for n in (args.small, args.large):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "callgrind.out"
                cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-W", "ignore"]
                cmd += [__file__, "--one", case, "--segments", str(n), "--warmup", str(args.warmup)]
                if args.root:
                    cmd += ["--root", str(args.root)]
                env = {**os.environ, "PYTHONHASHSEED": "0"}
                subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                m = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
                if m is None:
                    raise SystemExit("no instruction total in the callgrind output")
                counts[n] = int(m.group(1))
        per = (counts[args.large] - counts[args.small]) / (args.large - args.small)
        print(f"{root} {inproc.git_commit(Path(root))} build={build} {case}: {per:,.0f} instructions per segment")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=None, help="the checkout to measure (default: this one)")
    p.add_argument("--segments", type=int, default=20_000)
    p.add_argument("--warmup", type=int, default=2_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--callgrind", action="store_true", help="instructions per segment under callgrind")
    p.add_argument("--cases", default="receive/default,send/default", help="--callgrind: KIND/CASE,...")
    p.add_argument("--small", type=int, default=1000, help="--callgrind: segments of the short run")
    p.add_argument("--large", type=int, default=4000, help="--callgrind: segments of the long run")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        return one(args)
    if args.callgrind:
        return callgrind(args)
    return timed(args)


if __name__ == "__main__":
    sys.exit(main())
