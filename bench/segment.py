"""What one TCP segment costs in process: µs per segment received and per segment sent.

Run:  .venv/bin/python bench/segment.py [--segments 30000] [--runs 5] [--json] [--root CHECKOUT]

Sans-IO, no TUN, no root: one stack (memory link, ipv4 10.0.0.1, tcp) built from a
configuration dict, and a synthetic peer (10.0.0.2) that speaks to it with frames built by
``struct`` (bench/inproc.py), the way Linux would: its SYN offers MSS 1460, SACK, timestamps
and window scale 7, so the data segments carry 1448 bytes and a timestamp option when the
stack agrees to timestamps (1460 bytes without).

- **receive**: in-order data segments arrive at an established connection whose application
  reads each as it arrives (the listener's ``handle_event`` calls ``read()`` and tells the
  layer, as the streams API does). Timed per frame: ``receive_frame`` + ``frames_to_send``
  (the ACKs the stack generates) + ``dispatch_events`` (the application's read) +
  ``get_timer`` (and ``handle_timer`` when due), what a driver does for every frame.
- **send**: the application writes a large buffer (and writes more on every event, as space
  frees); the peer acknowledges every second segment at once (zero RTT, no loss). Timed: the
  same driver calls for each ACK frame; the figure is µs per data segment the stack sent.

Each case runs with the default plugin set (``default``) and with no features (``none``:
``default_features = false``, Reno). Per run and case a fresh stack; ``--warmup`` segments,
then ``--segments`` timed (the peer's frame building and parsing are outside the timed part),
by wall clock (``time.perf_counter_ns``) and by the thread's CPU time (``time.thread_time_ns``,
which leaves out the time spent waiting for a CPU: the steadier figure on a busy machine), in
batches of 1,000 segments; a run's figure is its median batch's µs per segment. The cases of a
run are interleaved; the table gives the median over ``--runs``. Every run checks that every
byte arrived and was read (receive), or that the stack sent what was written without a
retransmission (send), so a stack that loses data cannot look fast.

``--root`` names the checkout whose code is measured (default: this one); the script uses only
the public sans-IO API and the configuration dict, so it also runs on the code before issue 10
(bench/compare.py runs it interleaved on two checkouts). This is a benchmark, not a test: it
asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
from pathlib import Path
from time import perf_counter_ns, thread_time_ns
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import inproc
from inproc import ACK, MASK32, PORT, Layout, Listener, Seg, frame, handshake, ones_sum

CASES = ("receive/default", "receive/none", "send/default", "send/none")
DT = 12e-6  # virtual time per segment: 1448 bytes at about 1 Gbit/s
BATCH = 1000  # receive frames built (untimed) per batch
PEER_PORT = 40000


class Timing:
    """Wall-clock (``perf_counter_ns``) and CPU (``thread_time_ns``) time of the timed parts,
    summed per batch of about :data:`BATCH` segments. The figures are the median batch's µs
    per segment: a batch during which the process was preempted, or a garbage collection ran,
    weighs no more than any other. CPU time leaves out the time the process waited for a CPU,
    so on a busy machine it is the steadier figure of the two."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int, int]] = []  # (wall ns, CPU ns, segments)
        self.wall = self.cpu = self.segs = 0

    def add(self, wall: int, cpu: int, segs: int) -> None:
        self.wall += wall
        self.cpu += cpu
        self.segs += segs
        if self.segs >= BATCH:
            self.batches.append((self.wall, self.cpu, self.segs))
            self.wall = self.cpu = self.segs = 0

    def result(self) -> dict[str, float]:
        if self.segs:
            self.batches.append((self.wall, self.cpu, self.segs))
            self.wall = self.cpu = self.segs = 0
        segs = sum(b[2] for b in self.batches)
        return {
            "us": statistics.median(w / n for w, _, n in self.batches) / 1000,
            "cpu_us": statistics.median(c / n for _, c, n in self.batches) / 1000,
            "mean_us": sum(b[0] for b in self.batches) / segs / 1000,
            "segments": segs,
        }


def receive(layout: Layout, features: str, segments: int, warmup: int) -> dict[str, Any]:
    """µs per in-order data segment received (and read by the application)."""
    stack = inproc.build(layout, features)
    tcp = stack.layer("tcp")
    app = Listener(tcp)
    tcp.listen(PORT, on_accept=app.accept)
    now = 1.0
    peer = handshake(stack, PEER_PORT, now)
    if len(app.conns) != 1:
        raise RuntimeError("the stack did not accept the connection")
    size = 1448 if peer.ts else 1460
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    psum = ones_sum(payload)
    timing = Timing()
    acks = 0
    sent = 0
    for timed in (False, True):
        todo = segments if timed else warmup
        while todo > 0:
            n = min(BATCH, todo)
            todo -= n
            batch = []
            for _ in range(n):
                batch.append(
                    frame(
                        PEER_PORT,
                        peer.snd_nxt,
                        peer.rcv_nxt,
                        ACK,
                        options=peer.options(),
                        payload=payload,
                        payload_sum=psum,
                    )
                )
                peer.snd_nxt = (peer.snd_nxt + size) & MASK32
                sent += 1
                if sent % 100 == 0:
                    peer.tsval += 1  # the peer's clock: 1 ms per 100 segments
            last: list[bytes] = []
            c0 = thread_time_ns()
            t0 = perf_counter_ns()
            for frm in batch:
                now += DT
                stack.receive_frame(frm, now=now)
                out = stack.frames_to_send(now=now)
                stack.dispatch_events()
                t = stack.get_timer()
                if t is not None and t <= now:
                    stack.handle_timer(now=now)
                    out += stack.frames_to_send(now=now)
                    stack.dispatch_events()
                if out:
                    last = out
                    if timed:
                        acks += len(out)
            t1 = perf_counter_ns()
            if timed:
                timing.add(t1 - t0, thread_time_ns() - c0, n)
            if last:
                tsval = Seg(last[-1]).tsval
                if tsval is not None:
                    peer.ts_recent = tsval
    if app.bytes_read != sent * size:
        raise RuntimeError(f"receive/{features}: the application read {app.bytes_read} of {sent * size} bytes")
    if acks == 0:
        raise RuntimeError(f"receive/{features}: the stack sent no ACK")
    return {**timing.result(), "payload": size, "frames_out": acks}


class Writer(Listener):
    """An application that keeps the send buffer full: it writes on every event."""

    def __init__(self, tcp: Any) -> None:
        super().__init__(tcp, on_event=self.write)
        self.block = memoryview(bytes(range(256)) * 256)  # 64 KiB, written again and again
        self.now = 0.0
        self.written = 0

    def write(self, conn: Any) -> None:
        n = conn.send(self.block, self.now)
        if n:
            self.written += n
            self.tcp.touch(conn)


def send(layout: Layout, features: str, segments: int, warmup: int) -> dict[str, Any]:
    """µs per data segment the stack sends while the peer's ACKs open the window."""
    stack = inproc.build(layout, features)
    tcp = stack.layer("tcp")
    app = Writer(tcp)
    tcp.listen(PORT, on_accept=app.accept)
    now = 1.0
    peer = handshake(stack, PEER_PORT, now)
    if len(app.conns) != 1:
        raise RuntimeError("the stack did not accept the connection")
    conn = app.conns[0]
    base = peer.rcv_nxt  # stream offset 0
    win = 0xFFFF
    high = 0  # highest stream offset the stack has sent
    acked = 0  # the peer's cumulative ACK, as a stream offset
    mss = 0
    data_segs = 0
    retransmits = 0
    timed_segs = 0
    timer = Timing()
    wall = cpu = 0
    app.now = now
    app.write(conn)
    pending = stack.frames_to_send(now=now)
    acks: list[int] = []
    timing = False
    while True:
        # The peer (untimed): read what the stack sent, then ACK every second full segment.
        out_segs = 0
        for f in pending:
            s = Seg(f)
            if s.length:
                data_segs += 1
                out_segs += 1
                mss = max(mss, s.length)
                end = ((s.seq - base) & MASK32) + s.length
                if end <= high:
                    retransmits += 1
                high = max(high, end)
            if s.tsval is not None:
                peer.ts_recent = s.tsval
        if timing:
            # The time of the driver calls for the last ACK, for the segments they sent.
            timer.add(wall, cpu, out_segs)
            timed_segs += out_segs
            if timed_segs >= segments:
                break
        elif data_segs >= warmup:
            timing = True
        last = acks[-1] if acks else acked
        while high - last >= 2 * mss:
            last += 2 * mss
            acks.append(last)
        if not acks and high > acked:
            acks.append(high)  # nothing else in flight to clock it: a Linux peer's delayed ACK
        if not acks:
            raise RuntimeError(f"send/{features}: the stack stopped sending at offset {high}")
        acked = acks.pop(0)
        peer.tsval += 1
        ack = frame(PEER_PORT, peer.snd_nxt, (base + acked) & MASK32, ACK, window=win, options=peer.options())
        now += 2 * DT
        app.now = now
        c0 = thread_time_ns()
        t0 = perf_counter_ns()
        stack.receive_frame(ack, now=now)
        pending = stack.frames_to_send(now=now)
        stack.dispatch_events()
        t = stack.get_timer()
        if t is not None and t <= now:
            stack.handle_timer(now=now)
            pending += stack.frames_to_send(now=now)
            stack.dispatch_events()
        wall = perf_counter_ns() - t0
        cpu = thread_time_ns() - c0
    if retransmits or app.written < high or conn.state.value != "ESTABLISHED":
        # A retransmission would mean the stack saw loss where there is none.
        raise RuntimeError(
            f"send/{features}: {retransmits} of {data_segs} data segments retransmitted, "
            f"{app.written} bytes written, {high} sent, state {conn.state.value}"
        )
    return {**timer.result(), "payload": mss, "written": app.written}


def measure(layout: Layout, cases: list[str], segments: int, warmup: int, runs: int) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in cases}
    for _ in range(runs):
        for case in cases:  # interleaved: a change of machine load weighs on every case alike
            kind, features = case.split("/")
            gc.collect()
            fn = receive if kind == "receive" else send
            results[case].append(fn(layout, features, segments, warmup))
    return results


def summary(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out = {}
    for case, samples in results.items():
        us = [s["us"] for s in samples]
        cpu = [s["cpu_us"] for s in samples]
        out[case] = {
            "median_us": statistics.median(us),
            "min_us": min(us),
            "max_us": max(us),
            "samples_us": us,
            "cpu_median_us": statistics.median(cpu),
            "cpu_samples_us": cpu,
            "segments": samples[0]["segments"],
            "payload": samples[0]["payload"],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=30_000, help="timed segments per case and run (default 30000)")
    ap.add_argument("--warmup", type=int, default=2_000, help="untimed segments first (default 2000)")
    ap.add_argument("--runs", type=int, default=5, help="runs; the table gives the median (default 5)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    ap.add_argument("--root", type=Path, default=None, help="the checkout to measure (default: this one)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if unknown := [c for c in cases if c not in CASES]:
        ap.error(f"unknown case(s) {unknown}; choose from {CASES}")
    if args.segments < 1 or args.runs < 1 or args.warmup < 0:
        ap.error("--segments and --runs must be at least 1, --warmup at least 0")
    layout = inproc.load(args.root)
    stats = summary(measure(layout, cases, args.segments, args.warmup, args.runs))
    report = {
        "benchmark": "segment",
        "unit": "us_per_segment",
        "layout": layout.describe(),
        "python": platform.python_version(),
        "runs": args.runs,
        "warmup": args.warmup,
        "cases": stats,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    lay = report["layout"]
    table = Table(
        title=f"µs per TCP segment in process ({lay['root']} @ {lay['commit']}, {lay['config_module']}), "
        f"median of {args.runs} run(s) of {args.segments} segments"
    )
    for col in ("case", "payload", "wall µs", "min", "max", "CPU µs", "segments/s (wall)"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for case, s in stats.items():
        table.add_row(
            case,
            str(s["payload"]),
            f"{s['median_us']:.2f}",
            f"{s['min_us']:.2f}",
            f"{s['max_us']:.2f}",
            f"{s['cpu_median_us']:.2f}",
            f"{1e6 / s['median_us']:,.0f}",
        )
    Console(width=130).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
