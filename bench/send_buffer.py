"""CPU per MB through the send buffer alone, in the send path's pattern: the application writes
64 KiB chunks while there is room, each "ACK" takes a view of the next two segments (the send
loop's views, dropped at once) and consumes 2 x 1448 bytes (``--ack N``: N segments; a large N
leaves mostly the copying to time).

Run:  .venv/bin/python bench/send_buffer.py [--mb 256] [--rounds 5] [--capacity 1048576]
      [--ack 2] [--ref main] [--root OTHER_CHECKOUT]

It times the ``SendBuffer`` of this checkout (compiled if the compiled build is current, pure
Python under ``TCPSTACK_PURE_PYTHON=1``). ``--ref GITREF`` also loads that revision's
``layers/tcp/buffers.py`` as pure Python, together with this checkout's module as pure Python,
and ``--root`` runs another checkout's interpreter and build in a subprocess: the variants run
interleaved, round by round (the machine's load drifts), and the best CPU time of each is
reported, with ratios to the first. CPU time (``time.process_time``), not wall clock; on a
shared machine read the ratios, not the absolute figures.

glibc serves large blocks with ``mmap`` at first and grows them with ``mremap`` (no copy), but
its threshold rises as blocks are freed, so in a running stack the buffers live on the heap,
where ``realloc`` copies: ``MALLOC_MMAP_THRESHOLD_=33554432`` in the environment reproduces that
here (docs/architecture.md "Send buffer copies").
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SEG = 1448


def run_pattern(cls: Any, capacity: int, total: int, ack: int = 2) -> float:
    """CPU seconds to push *total* bytes through a ``cls(capacity)``."""
    buf = cls(capacity)
    chunk = bytes(64 * 1024)
    written = 0
    t0 = time.process_time()
    while written < total:
        while buf.free:
            written += buf.write(chunk)
        while len(buf) > capacity // 2:  # the window: ACKs free room before the next write
            v = buf.view(ack * SEG, ack * SEG)
            v.release()
            buf.consume(ack * SEG)
    return time.process_time() - t0


def load_source(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(args: argparse.Namespace) -> None:
    """One round with the build of the checkout ``--tree`` (run with its interpreter); prints CPU
    seconds."""
    sys.path.insert(0, args.tree)
    from layers.tcp.buffers import SendBuffer

    print(json.dumps(run_pattern(SendBuffer, args.capacity, args.mb * 1_000_000, args.ack)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--capacity", type=int, default=1 << 20)
    ap.add_argument("--ack", type=int, default=2, help="segments each ACK acknowledges (default 2)")
    ap.add_argument("--ref", help="also time this git revision's SendBuffer and this checkout's, both pure Python")
    ap.add_argument("--root", action="append", default=[], help="also time another checkout (its own .venv)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tree", default=str(ROOT), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    variants: list[tuple[str, list[str] | Any]] = []
    for label, root in [("this checkout", ROOT)] + [(str(r), Path(r)) for r in args.root]:
        py = str(root / ".venv" / "bin" / "python")
        cmd = [
            py,
            __file__,
            "--child",
            "--tree",
            str(root),
            "--mb",
            str(args.mb),
            "--capacity",
            str(args.capacity),
            "--ack",
            str(args.ack),
        ]
        variants.append((label, cmd))
    if args.ref:
        tmp = Path(tempfile.mkdtemp())
        old = tmp / "old_buffers.py"
        old.write_text(
            subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{args.ref}:layers/tcp/buffers.py"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        sys.path.insert(0, str(ROOT))
        variants.append((f"{args.ref} (pure Python)", load_source(old, "old_buffers").SendBuffer))
        variants.append(
            (
                "this checkout (pure Python)",
                load_source(ROOT / "layers" / "tcp" / "buffers.py", "new_buffers").SendBuffer,
            )
        )
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for label, what in variants:
            if isinstance(what, list):
                cpu = float(subprocess.run(what, capture_output=True, text=True, check=True).stdout)
            else:
                cpu = run_pattern(what, args.capacity, args.mb * 1_000_000, args.ack)
            best[label] = min(best.get(label, cpu), cpu)
    first = next(iter(best.values()))
    for label, cpu in best.items():
        print(f"{label:40s} {cpu / args.mb * 1e3:8.3f} ms CPU per MB  ({cpu / first:.2f}x the first)")


if __name__ == "__main__":
    main()
