#!/usr/bin/env python3
"""Regenerate the graphs docs/observability.md shows: run ``tcpstack demo`` (root: it creates a
network namespace and a TUN device), then copy the graphs it prints into docs/images/.

    sudo .venv/bin/python scripts/observability_figures.py

The demo's own working folder (capture, probe file, log) is kept and named at the end, so the
figures can be traced back to the run that made them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images"
NAMES = ("download", "upload", "download-with-loss", "fetch")


def main() -> int:
    r = subprocess.run(
        [sys.executable, "-m", "tcpstack.cli", "demo"], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    if r.returncode != 0:
        print("observability_figures: the demo failed; nothing copied", file=sys.stderr)
        return 1
    graph_line = re.compile(r"^\s+(\S+)\s+connection \d+\s+(\S+\.png)$", re.M)
    found = {m.group(1): Path(m.group(2)) for m in graph_line.finditer(r.stdout)}
    missing = [n for n in NAMES if n not in found]
    if missing:
        print(f"observability_figures: the demo printed no graph for {', '.join(missing)}", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        shutil.copyfile(found[name], OUT / f"demo-{name}.png")
        print(f"observability_figures: {OUT / f'demo-{name}.png'}")
    print(f"observability_figures: the run's files: {found[NAMES[0]].parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
