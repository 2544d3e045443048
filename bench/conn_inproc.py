"""What one sequential connection costs the stack in process: deterministic (callgrind) or timed.

Run (no root, no TUN):
    .venv/bin/python bench/conn_inproc.py [--root CHECKOUT] [--conns 2000] [--repeat 3]
        [--level info] [--callgrind [--small 200 --large 1200]] [--profile cumulative]

The sans-IO stack of bench/inproc.py (memory link, ipv4 10.0.0.1, tcp with the built-in
default plugin set, as ``tcpstack up`` without ``--config``), logging configured as ``tcpstack
up`` does it (``configure_logging(fmt="console", level=LEVEL)``, written to ``/dev/null``), a
listener on port 80 whose application closes when it sees the peer's FIN (what ``--serve
discard`` does), and the synthetic peer of bench/inproc.py doing what bench/peer.py ``conns``
does over TUN: SYN; the stack's SYN-ACK; ACK; FIN+ACK (``shutdown(SHUT_WR)``); the stack's
ACK+FIN; the peer's ACK of it (``close``). Each connection ends CLOSED at the stack (LAST-ACK,
then the ACK: no TIME-WAIT on the passive side). Before timing, ``--warmup`` connections run and
the heap is frozen (``gc.freeze``), as ``tcpstack up`` does after start-up.

Modes:

- default: CPU µs per connection (``time.process_time``), least of ``--repeat`` rounds of
  ``--conns`` connections. Noisy on a shared machine: interleave checkouts and compare ratios.
- ``--callgrind``: runs itself twice under ``valgrind --tool=callgrind`` (``--small`` and
  ``--large`` connections, one round each, ``PYTHONHASHSEED=0``) and prints the instructions
  per connection, ``(Ir(large) - Ir(small)) / (large - small)``: start-up cancels out and the
  count is deterministic up to a few hundredths of a percent (allocation addresses, the gc's
  timing). ``TCPSTACK_PURE_PYTHON=1`` in the environment measures the pure-Python build.
- ``--peer-only``: the same frames built and parsed by the synthetic peer, without the stack
  (with ``--callgrind``: the peer's instructions per connection, to subtract).
- ``--profile SORT``: one round under cProfile, the top 40 functions by SORT.

``--root`` measures another checkout (its ``tcpstack``, e.g. /work/main for before/after).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import inproc  # noqa: E402
from inproc import ACK, FIN, PORT, SYN, Conn, Listener, Seg, frame, syn_options  # noqa: E402


def drive(stack: Any, frm: bytes, now: float) -> list[bytes]:
    """One frame in, as tcpstack/io/driver.py's ``_on_readable`` and ``transmit`` do it: receive;
    then deliver the events (user code may close) before writing the output, and again after."""
    stack.receive_frame(frm, now=now)
    out: list[bytes] = []
    for _ in range(4):
        stack.dispatch_events()
        for f in stack.frames_to_write(now=now):
            out.append(f if isinstance(f, bytes) else b"".join(f))
        stack.dispatch_events()
        if not stack.has_pending_output():
            break
    return out


# A SYN-ACK and a FIN+ACK as the stack sends them (same lengths and options), for --peer-only.
_CANNED_SYNACK = frame(80, 5000, 6000, SYN | ACK, options=syn_options(7))
_CANNED_FIN = frame(80, 5001, 6001, FIN | ACK, options=inproc.ts_option(7, 8))


class Bench:
    """One stack listening on port 80 and the peer that opens and closes connections to it."""

    def __init__(self, root: Path | None, level: str) -> None:
        layout = inproc.load(root)
        from tcpstack.logging import configure_logging

        self.sink = open(os.devnull, "w")  # lives as long as the process
        configure_logging(fmt="console", level=level, stream=self.sink)
        self.stack = inproc.build(layout, "default")
        self.tcp = self.stack.layer("tcp")
        self.app = Listener(self.tcp, self._on_event)
        self.tcp.listen(PORT, on_accept=self.app.accept, backlog=1024)
        self.now = 1.0
        self.port = 10000

    def _on_event(self, conn: Any) -> None:
        # --serve discard: at end of file (the peer's FIN) the protocol closes the transport.
        if conn.eof_received and not conn.user_closed:
            conn.close(self.now)
            self.tcp.touch(conn)

    def one(self) -> None:
        """One connection, open to CLOSED."""
        self.now += 0.001
        self.port = self.port + 1 if self.port < 60000 else 10000
        port, stack = self.port, self.stack
        now = self.now
        iss, tsval = 1_000_000, 1000
        out = drive(stack, frame(port, iss, 0, SYN, window=64240, options=syn_options(tsval)), now)
        if len(out) != 1:
            raise RuntimeError(f"expected one SYN-ACK, got {len(out)} frames")
        sa = Seg(out[0])
        peer = Conn(port, iss + 1, sa.seq + 1, sa.tsval is not None, sa.tsval or 0, tsval)
        # RFC 7323 §2.2: the SYN's window is not scaled; afterwards the peer's is, by 7.
        drive(stack, frame(port, peer.snd_nxt, peer.rcv_nxt, ACK, window=0xFFFF, options=peer.options()), now)
        out = drive(stack, frame(port, peer.snd_nxt, peer.rcv_nxt, FIN | ACK, options=peer.options()), now)
        fins = [s for s in map(Seg, out) if s.flags & FIN]
        if len(fins) != 1:
            raise RuntimeError(f"expected the stack's FIN, got flags {[Seg(o).flags for o in out]}")
        if fins[0].tsval is not None:
            peer.ts_recent = fins[0].tsval
        drive(stack, frame(port, peer.snd_nxt + 1, fins[0].seq + 1, ACK, options=peer.options()), now)
        self.app.conns.clear()

    def peer_only(self) -> None:
        """What :meth:`one` costs the synthetic peer alone (its frames built and the stack's
        parsed, on canned values): subtract it to get the stack's own cost."""
        self.now += 0.001
        self.port = self.port + 1 if self.port < 60000 else 10000
        port = self.port
        iss, tsval = 1_000_000, 1000
        syn = frame(port, iss, 0, SYN, window=64240, options=syn_options(tsval))
        sa = Seg(_CANNED_SYNACK)
        peer = Conn(port, iss + 1, sa.seq + 1, sa.tsval is not None, sa.tsval or 0, tsval)
        frame(port, peer.snd_nxt, peer.rcv_nxt, ACK, window=0xFFFF, options=peer.options())
        frame(port, peer.snd_nxt, peer.rcv_nxt, FIN | ACK, options=peer.options())
        fins = [s for s in map(Seg, [_CANNED_FIN]) if s.flags & FIN]
        if fins[0].tsval is not None:
            peer.ts_recent = fins[0].tsval
        frame(port, peer.snd_nxt + 1, fins[0].seq + 1, ACK, options=peer.options())
        del syn

    def run(self, n: int, peer_only: bool = False) -> None:
        if peer_only:
            for _ in range(n):
                self.peer_only()
            return
        for _ in range(n):
            self.one()
        if len(self.tcp.connections) > 2:
            raise RuntimeError(f"{len(self.tcp.connections)} connections did not close")


def callgrind(args: argparse.Namespace) -> int:
    counts: dict[int, int] = {}
    for n in (args.small, args.large):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "callgrind.out"
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-W", "ignore"]
            cmd += [__file__, "--conns", str(n), "--repeat", "1", "--warmup", str(args.warmup), "--level", args.level]
            if args.peer_only:
                cmd.append("--peer-only")
            if args.root:
                cmd += ["--root", str(args.root)]
            env = {**os.environ, "PYTHONHASHSEED": "0"}
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            m = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
            if m is None:
                raise SystemExit("no instruction total in the callgrind output")
            counts[n] = int(m.group(1))
    per = (counts[args.large] - counts[args.small]) / (args.large - args.small)
    build = "pure" if os.environ.get("TCPSTACK_PURE_PYTHON") == "1" else "compiled"
    root = args.root or HERE.parent
    what = "the peer alone" if args.peer_only else f"{inproc.git_commit(Path(root))} build={build} level={args.level}"
    print(f"{root} {what}: {per:,.0f} instructions per connection")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=None, help="the checkout to measure (default: this one)")
    p.add_argument("--conns", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--level", default="info", help="the log level (tcpstack up's default: info)")
    p.add_argument("--callgrind", action="store_true", help="instructions per connection under callgrind")
    p.add_argument("--small", type=int, default=200, help="--callgrind: connections of the short run")
    p.add_argument("--large", type=int, default=1200, help="--callgrind: connections of the long run")
    p.add_argument("--profile", metavar="SORT", help="one round under cProfile, sorted by SORT")
    p.add_argument("--peer-only", action="store_true", help="the synthetic peer's own cost (no stack work)")
    args = p.parse_args(argv)
    if args.callgrind:
        return callgrind(args)
    bench = Bench(args.root, args.level)
    bench.run(args.warmup, args.peer_only)
    gc.collect()
    gc.freeze()  # as `tcpstack up` does once started (tcpstack.cli.freeze_startup_heap)
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        bench.run(args.conns)
        prof.disable()
        pstats.Stats(prof).sort_stats(args.profile).print_stats(40)
        return 0
    best = float("inf")
    for _ in range(args.repeat):
        t = time.process_time()
        bench.run(args.conns, args.peer_only)
        best = min(best, (time.process_time() - t) / args.conns * 1e6)
    build = "pure" if os.environ.get("TCPSTACK_PURE_PYTHON") == "1" else "compiled"
    print(f"{args.root or HERE.parent} build={build} level={args.level}: {best:.1f} µs per connection (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
