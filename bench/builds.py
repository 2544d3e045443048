"""The compiled build against the pure-Python build, interleaved in one run.

Run:  .venv/bin/python bench/builds.py [--rounds 5] [--segments 10000] [--json]

Each round runs, in fresh processes, alternately with the compiled modules and with
``TCPSTACK_PURE_PYTHON=1`` (the order alternates per round): the Internet checksum of 1448
bytes (``framework.checksum.internet_checksum``, µs per call, the thread's CPU time over 20,000
calls, median of 5 batches), and bench/segment.py (one run per round; its CPU-time figure, µs
per segment, for each case). The table gives the medians over the rounds and compiled/pure
ratios. Needs a current compiled build (scripts/build_compiled.py); a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHECKSUM = """
import json, os, statistics, time
from framework import _compiled
from framework.checksum import internet_checksum
data = os.urandom(1448)
n = 20_000
batches = []
for _ in range(5):
    t = time.thread_time_ns()
    for _ in range(n):
        internet_checksum(data)
    batches.append((time.thread_time_ns() - t) / n / 1000)
print(json.dumps({"compiled": _compiled.active(), "us": statistics.median(batches)}))
"""


def _run(code_or_argv: list[str], pure: bool) -> dict[str, object]:
    env = {**os.environ}
    env.pop("TCPSTACK_PURE_PYTHON", None)
    if pure:
        env["TCPSTACK_PURE_PYTHON"] = "1"
    done = subprocess.run(
        [sys.executable, *code_or_argv], capture_output=True, text=True, env=env, cwd=ROOT, check=True
    )
    return dict(json.loads(done.stdout))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--segments", type=int, default=10_000, help="bench/segment.py --segments (default 10000)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results: dict[str, dict[str, list[float]]] = {"compiled": {}, "pure": {}}
    for round_no in range(args.rounds):
        order = ("compiled", "pure") if round_no % 2 == 0 else ("pure", "compiled")
        for build in order:
            pure = build == "pure"
            got = _run(["-c", _CHECKSUM], pure)
            if bool(got["compiled"]) == pure:
                raise SystemExit(f"bench/builds.py: the {build} run did not use the {build} build")
            results[build].setdefault("checksum_1448", []).append(float(got["us"]))  # type: ignore[arg-type]
            seg = _run(
                ["bench/segment.py", "--json", "--runs", "1", "--segments", str(args.segments), "--warmup", "1000"],
                pure,
            )
            for case, stats in dict(seg["cases"]).items():  # type: ignore[call-overload]
                results[build].setdefault(f"segment_{case}", []).append(float(stats["cpu_median_us"]))
    table = {
        key: {
            "compiled_us": statistics.median(results["compiled"][key]),
            "pure_us": statistics.median(results["pure"][key]),
            "ratio": statistics.median(results["compiled"][key]) / statistics.median(results["pure"][key]),
            "compiled_samples": results["compiled"][key],
            "pure_samples": results["pure"][key],
        }
        for key in results["compiled"]
    }
    if args.json:
        print(json.dumps({"benchmark": "builds", "rounds": args.rounds, "unit": "cpu_us", "results": table}, indent=2))
        return 0
    print(f"{'measure':<28}{'compiled µs':>12}{'pure µs':>10}{'ratio':>8}   (CPU time, median of {args.rounds} rounds)")
    for key, row in table.items():
        print(f"{key:<28}{row['compiled_us']:>12.2f}{row['pure_us']:>10.2f}{row['ratio']:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
