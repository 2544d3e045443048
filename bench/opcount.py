"""Bytecodes and Python calls per TCP segment: a deterministic companion to bench/segment.py.

Run:  .venv/bin/python bench/opcount.py [--root CHECKOUT] [--segments 3000] [--cases receive/default,...]

On a shared machine the wall-clock and CPU-time figures of ``bench/segment.py`` move by tens of
percent from run to run (other virtual machines, CPU frequency), so a change of a few percent is
hard to see in them. This script runs the same scenarios (the same code: ``segment.receive`` and
``segment.send``) under ``sys.settrace`` with opcode events and counts the bytecodes executed,
and the Python function calls made, inside the timed region only (between the two
``perf_counter_ns`` calls that bracket the driver calls for one input), divided by the segments
timed. The counts do not depend on the machine's load; run it on two checkouts (each with its
own interpreter) to compare them (always the pure-Python modules: compiled code runs no
bytecodes, so this script sets ``TCPSTACK_PURE_PYTHON=1`` for itself)::

    /work/wt/before/.venv/bin/python bench/opcount.py --root /work/wt/before
    .venv/bin/python bench/opcount.py

A bytecode is not a fixed cost (a call or an allocation costs more than a load), so read a ratio
of counts as a check on the timings, not a replacement for them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from types import FrameType
from typing import Any

# Bytecodes are counted in interpreted code only: code compiled with mypyc runs none, so a
# compiled build's count would shrink by whatever is compiled and stop being comparable across
# checkouts and builds. The count is therefore always of the pure-Python modules (set before
# anything of the stack is imported; docs/architecture.md "Two builds").
os.environ["TCPSTACK_PURE_PYTHON"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import inproc
import segment


def count(layout: inproc.Layout, case: str, segments: int, warmup: int) -> dict[str, Any]:
    state = {"on": False, "ops": 0, "calls": 0, "marks": 0}

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        if event == "call":
            frame.f_trace_opcodes = True
            if state["on"]:
                state["calls"] += 1
            return tracer
        if event == "opcode" and state["on"]:
            state["ops"] += 1
        return tracer

    real = segment.perf_counter_ns

    def mark() -> int:  # the first call of a pair opens the timed region, the second closes it
        state["marks"] += 1
        state["on"] = state["marks"] % 2 == 1
        return real()

    segment.perf_counter_ns = mark  # type: ignore[assignment]
    kind, features = case.split("/")
    try:
        sys.settrace(tracer)
        result = getattr(segment, kind)(layout, features, segments, warmup)
    finally:
        sys.settrace(None)
        segment.perf_counter_ns = real
    timed = result["segments"]
    return {
        "segments": timed,
        "bytecodes_per_segment": state["ops"] / timed,
        "calls_per_segment": state["calls"] / timed,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=None, help="the checkout to measure (default: this one)")
    ap.add_argument("--segments", type=int, default=3000, help="timed segments per case (default 3000)")
    ap.add_argument("--warmup", type=int, default=300, help="untimed segments first (default 300)")
    ap.add_argument("--cases", default=",".join(segment.CASES), help="comma-separated subset of the cases")
    args = ap.parse_args()
    layout = inproc.load(args.root)
    out = {case: count(layout, case, args.segments, args.warmup) for case in args.cases.split(",")}
    print(json.dumps({"layout": layout.describe(), "cases": out}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
