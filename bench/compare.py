"""bench/segment.py on two checkouts, interleaved: the per-segment cost before and after a change.

Run:  .venv/bin/python bench/compare.py --before /work/wt/before --after . [--rounds 5] [--segments 30000]

Both sides run *this* checkout's bench/segment.py (the same measuring code), each with its own
interpreter (``CHECKOUT/.venv/bin/python`` unless ``--before-python``/``--after-python``) and
``--root CHECKOUT``, so each measures its own code. A round runs one side, then the other
(the order alternating from round to round, so a drift of machine load during the run weighs
on both sides alike); each run is ``segment.py --runs 1 --json`` in a fresh process. The table
gives, per case and clock (wall, and the process's CPU time, which leaves out waiting for a
CPU on a busy machine), the median µs per segment of each side over the rounds, the ratio
after/before of the medians, and the spread of the per-round ratios. ``--json`` prints the
raw figures. The issue 10 criterion: every ratio at most 1.05 with at least 5 rounds. On a
machine busy with other work the wall-clock figures scatter; ``--nice -15`` (root) keeps both
sides on a CPU most of the time, and the CPU-time ratio is the one to read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

SEGMENT = Path(__file__).resolve().parent / "segment.py"


def run_side(python: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [python, str(SEGMENT), "--json", "--runs", "1", "--root", str(root)]
    cmd += ["--segments", str(args.segments), "--warmup", str(args.warmup), "--cases", args.cases]
    if args.cpu is not None:
        cmd = ["taskset", "-c", str(args.cpu), *cmd]
    if args.nice is not None:
        cmd = ["nice", "-n", str(args.nice), *cmd]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=root)
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, help="checkout measured as 'before'")
    ap.add_argument("--after", type=Path, help="checkout measured as 'after'")
    ap.add_argument("--before-python", help="interpreter for 'before' (default: BEFORE/.venv/bin/python)")
    ap.add_argument("--after-python", help="interpreter for 'after' (default: AFTER/.venv/bin/python)")
    ap.add_argument("--rounds", type=int, default=5, help="runs of each side, interleaved (default 5)")
    ap.add_argument("--segments", type=int, default=30_000, help="timed segments per case and run (default 30000)")
    ap.add_argument("--warmup", type=int, default=2_000, help="untimed segments first (default 2000)")
    ap.add_argument("--cases", default="receive/default,receive/none,send/default,send/none")
    ap.add_argument("--cpu", type=int, default=None, help="pin both sides to this CPU (taskset)")
    ap.add_argument(
        "--nice",
        type=int,
        default=None,
        help="run both sides at this niceness (e.g. -15 as root, on a machine busy with other work)",
    )
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table instead")
    ap.add_argument("--load", type=Path, help="do not run: show the JSON a previous --json run printed")
    args = ap.parse_args(argv)
    if args.load is not None:
        result = json.loads(args.load.read_text())
    elif args.before is None or args.after is None:
        ap.error("--before and --after are required (or --load)")
    elif args.rounds < 1:
        ap.error("--rounds must be at least 1")
    else:
        result = compare(ap, args)
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.markdown:
        print(markdown(result))
    else:
        show(result)
    return 0


def compare(ap: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    sides = {}
    for name, root, python in (
        ("before", args.before, args.before_python),
        ("after", args.after, args.after_python),
    ):
        root = root.resolve()
        python = python or str(root / ".venv" / "bin" / "python")
        if not Path(python).exists():
            ap.error(f"no interpreter {python} for '{name}' (run scripts/setup in {root}, or pass --{name}-python)")
        sides[name] = (python, root)

    reports: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for i in range(args.rounds):
        order = ("before", "after") if i % 2 == 0 else ("after", "before")
        for name in order:
            python, root = sides[name]
            reports[name].append(run_side(python, root, args))
            print(f"round {i + 1}/{args.rounds}: {name} done", file=sys.stderr)

    cases = list(reports["before"][0]["cases"])
    result: dict[str, Any] = {
        "benchmark": "segment-compare",
        "rounds": args.rounds,
        "segments": args.segments,
        "nice": args.nice,
        "before": reports["before"][0]["layout"],
        "after": reports["after"][0]["layout"],
        "cases": {},
    }
    for case in cases:
        row: dict[str, Any] = {}
        for clock, key in (("", "median_us"), ("cpu_", "cpu_median_us")):
            b = [r["cases"][case][key] for r in reports["before"]]
            a = [r["cases"][case][key] for r in reports["after"]]
            ratios = [x / y for x, y in zip(a, b, strict=True)]
            row |= {
                f"{clock}before_us": b,
                f"{clock}after_us": a,
                f"{clock}before_median_us": statistics.median(b),
                f"{clock}after_median_us": statistics.median(a),
                f"{clock}ratio": statistics.median(a) / statistics.median(b),
                f"{clock}round_ratio_min": min(ratios),
                f"{clock}round_ratio_max": max(ratios),
            }
        result["cases"][case] = row
    return result


def _rows(result: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    rows = []
    for case, c in result["cases"].items():
        for clock, name in (("", "wall"), ("cpu_", "CPU")):
            rows.append(
                (
                    case,
                    name,
                    f"{c[clock + 'before_median_us']:.2f}",
                    f"{c[clock + 'after_median_us']:.2f}",
                    f"{c[clock + 'ratio']:.3f}",
                    f"{c[clock + 'round_ratio_min']:.3f}-{c[clock + 'round_ratio_max']:.3f}",
                )
            )
    return rows


COLUMNS = ("case", "clock", "before µs", "after µs", "after/before", "per-round ratios")


def _title(result: dict[str, Any]) -> str:
    bl, al = result["before"], result["after"]
    return (
        f"µs per segment, before {bl['root']} @ {bl['commit']} vs after {al['root']} @ {al['commit']}, "
        f"median of {result['rounds']} interleaved rounds of {result['segments']} segments"
    )


def markdown(result: dict[str, Any]) -> str:
    lines = [_title(result), "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(result)]
    return "\n".join(lines)


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=_title(result))
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("case", "clock") else "right")
    for row in _rows(result):
        table.add_row(*row)
    Console(width=150).print(table)


if __name__ == "__main__":
    raise SystemExit(main())
