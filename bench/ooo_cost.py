"""What one out-of-order segment costs, by how many out-of-order pieces the connection holds.

Run:  .venv/bin/python bench/ooo_cost.py [--rounds 2000] [--sizes 10,1000,10000,100000]

In process and sans-IO (no TUN, no namespaces): one stack (memory link, ipv4, tcp with SACK and
window scaling), connections opened by crafted frames from a "peer" that then sends one-byte
segments with a hole before each, the attack of issue 9 item 2. For each size N a connection
is filled with N such pieces (not timed). Then, ``--rounds`` times, on each connection in turn
(so a change of machine load weighs on every size alike), one more one-byte out-of-order
segment above the others is timed (the frame through the whole stack, from the IPv4 parse to
the SACK-carrying duplicate ACK it is answered with), and an untimed in-order byte fills the
lowest hole and the application reads, so N stays as it is. The table gives the median, 90th
percentile and mean µs per timed segment and the median's ratio to the smallest N, all
measured in the same run, with the pieces held, the segments dropped, what the pieces cost by
the stack's accounting (payload + PIECE_OVERHEAD each) and the growth of the process's RSS
while the pieces were stored.

A last row sends 100,000 pieces to a connection with the default budget (twice the receive
buffer) to show the budget at work: how many were held and how many dropped.

This is a benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from framework.checksum import internet_checksum  # noqa: E402
from tcpstack.logging import configure_logging  # noqa: E402
from tcpstack.testing import decode, make_stack, tcp_layer  # noqa: E402

LOCAL = bytes([10, 0, 0, 1])
PEER = bytes([10, 0, 0, 2])
PEER_PORT = 40000
PORT = 80
IRS = 1_000_000
ACK, SYN = 0x10, 0x02


def frame(seq: int, ack: int, flags: int, payload: bytes = b"", options: bytes = b"", window: int = 65535) -> bytes:
    """An IPv4 frame from the peer carrying one TCP segment (built with struct, not our emitter)."""
    options += b"\0" * (-len(options) % 4)
    doff = (20 + len(options)) // 4
    tcp = struct.pack("!HHIIBBHHH", PEER_PORT, PORT, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, doff << 4, flags, window, 0, 0)
    raw = tcp + options + payload
    csum = internet_checksum(PEER + LOCAL + struct.pack("!BBH", 0, 6, len(raw)) + raw)
    raw = raw[:16] + csum.to_bytes(2, "big") + raw[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(raw), 0, 0x4000, 64, 6, 0, PEER, LOCAL)
    ip = ip[:10] + internet_checksum(ip).to_bytes(2, "big") + ip[12:]
    return ip + raw


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4  # resident pages of 4 KiB


class Peer:
    """One stack and one connection to its port 80, opened with SACK and window scaling."""

    def __init__(self, *, recv_buffer: int, ooo_budget: int | None, ooo_memory: int) -> None:
        tcp: dict[str, object] = {"features": {"sack": {}, "window_scaling": {}}, "recv_buffer": recv_buffer}
        tcp["ooo_memory"] = ooo_memory
        if ooo_budget is not None:
            tcp["ooo_budget"] = ooo_budget
        self.stack = make_stack("10.0.0.1/24", **tcp)
        self.tcp = tcp_layer(self.stack)
        self.tcp.listen(PORT)
        self.now = 0.0
        opts = struct.pack("!BBH", 2, 4, 1460) + bytes([4, 2, 1, 3, 3, 7])  # MSS, SACK-permitted, NOP, wscale 7
        [synack] = self.send(frame(IRS, 0, SYN, options=opts))
        self.ours = synack.seq + 1
        self.send(frame(IRS + 1, self.ours, ACK, window=65535))
        self.conn = self.tcp.connections[(PEER, PEER_PORT, PORT)]

    def send(self, frm: bytes) -> list:
        self.stack.receive_frame(frm, now=self.now)
        return [decode(f)[1] for f in self.stack.frames_to_send(now=self.now)]

    def piece(self, offset: int) -> bytes:
        """A one-byte segment at stream offset *offset*."""
        return frame(IRS + 1 + offset, self.ours, ACK, b"x")

    def drops(self) -> int:
        return sum(n for (layer, reason), n in self.stack.stats.drops.items() if reason.startswith("ooo_"))


class Held:
    """A connection holding *n* one-byte pieces at offsets 1, 3, ..., 2n - 1 (a hole before each)."""

    def __init__(self, n: int, rounds: int) -> None:
        # Room for n pieces two bytes apart plus the rounds: the window must reach the highest.
        self.peer = Peer(recv_buffer=max(1 << 20, 4 * (n + rounds) + 4096), ooo_budget=1 << 32, ooo_memory=1 << 40)
        gc.collect()
        rss0 = rss_kib()
        for i in range(n):
            self.peer.send(self.peer.piece(2 * i + 1))
        self.rss = rss_kib() - rss0
        self.top = 2 * n - 1
        self.hole = 0
        self.times: list[float] = []

    def round(self) -> None:
        """Time one more piece above the others; then fill the lowest hole (untimed) so the
        count stays as it is, and let the application read."""
        peer, now = self.peer, self.peer.now
        self.top += 2
        timed, fill = peer.piece(self.top), peer.piece(self.hole)
        t0 = time.perf_counter_ns()
        peer.stack.receive_frame(timed, now=now)
        peer.stack.frames_to_send(now=now)
        self.times.append((time.perf_counter_ns() - t0) / 1000)
        peer.stack.receive_frame(fill, now=now)  # one piece leaves
        peer.stack.frames_to_send(now=now)
        peer.conn.read()
        self.hole += 2


def measure(sizes: list[int], rounds: int) -> list[dict[str, float]]:
    """All sizes at once, their rounds interleaved, so a change of machine load (or CPU clock)
    during the run weighs on every size alike."""
    held = [Held(n, rounds) for n in sizes]
    for h in held:  # warm-up, not counted
        for _ in range(min(rounds, 200)):
            h.round()
        h.times.clear()
    for _ in range(rounds):
        for h in held:
            h.round()
    out = []
    for h in held:
        buf = h.peer.conn.rcvbuf
        out.append(
            {
                "median": statistics.median(h.times),
                "mean": statistics.fmean(h.times),
                "p90": statistics.quantiles(h.times, n=10)[-1],
                "held": buf.ooo_pieces,
                "dropped": h.peer.drops(),
                "cost": buf.ooo_cost,
                "rss": h.rss,
            }
        )
    return out


def default_budget(n: int) -> dict[str, float]:
    peer = Peer(recv_buffer=1 << 19, ooo_budget=None, ooo_memory=64 << 20)
    gc.collect()
    rss0 = rss_kib()
    t0 = time.perf_counter()
    window = peer.conn.rcvbuf.capacity
    sent = 0
    for i in range(n):
        off = 2 * i + 1
        if off >= window:
            break
        peer.send(peer.piece(off))
        sent += 1
    elapsed = time.perf_counter() - t0
    buf = peer.conn.rcvbuf
    return {
        "sent": sent,
        "held": buf.ooo_pieces,
        "dropped": peer.drops(),
        "cost": buf.ooo_cost,
        "budget": buf.budget,
        "rss": rss_kib() - rss0,
        "us": elapsed / max(sent, 1) * 1e6,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2000, help="timed segments per size (default 2000)")
    ap.add_argument("--sizes", default="10,1000,10000,100000", help="pieces held (default 10,1000,10000,100000)")
    ap.add_argument("--default-budget-pieces", type=int, default=100_000)
    args = ap.parse_args()
    configure_logging(level="warning", stream=sys.stderr)  # every drop is logged at debug level
    sizes = [int(x) for x in args.sizes.split(",")]
    print(f"one-byte out-of-order segments, SACK on, {args.rounds} timed segments per size")
    cols = ("held", "median µs", "p90 µs", "mean µs", "ratio", "pieces", "dropped", "cost KiB", "RSS KiB")
    print(" ".join(f"{c:>{w}}" for c, w in zip(cols, (8, 10, 8, 9, 6, 8, 8, 9, 8), strict=True)))
    base = None
    for n, r in zip(sizes, measure(sizes, args.rounds), strict=True):
        base = base or r["median"]
        print(
            f"{n:>8} {r['median']:>10.1f} {r['p90']:>8.1f} {r['mean']:>9.1f} {r['median'] / base:>6.2f} {r['held']:>8} "
            f"{r['dropped']:>8} {r['cost'] / 1024:>9.0f} {r['rss']:>8}"
        )
    d = default_budget(args.default_budget_pieces)
    print(
        f"\ndefault budget ({d['budget'] / 1024:.0f} KiB, recv_buffer 512 KiB): {d['sent']} one-byte pieces sent, "
        f"{d['held']} held, {d['dropped']} dropped, cost {d['cost'] / 1024:.0f} KiB, RSS +{d['rss']} KiB, "
        f"{d['us']:.1f} µs per segment"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
