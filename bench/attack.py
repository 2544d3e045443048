"""Attacks on a running ``tcpstack up`` over TUN: a SYN flood and tiny out-of-order segments.

Run as root:  .venv/bin/python bench/attack.py [--quick] [--floods 2000,20000] [--ooo 1000,10000,100000]
              [--syn-rate 5000] [--ooo-rate 10000] [--tcp-setting KEY=VALUE]... [--config FILE] [--json FILE]

It builds its own network namespace (tcpstack.netns.Netns: ``tun0``, the kernel at 10.0.0.1,
``tcpstack up --serve echo --control PATH`` at 10.0.0.2) and removes it, the stack and every
helper process at the end, also on failure or Ctrl-C. Every packet stays inside that namespace.
The attackers run inside it (this script re-run as ``_synflood``/``_ooo``/``_client``/``_probe``
workers) with raw sockets (``IP_HDRINCL``, checksums computed by bench/packets.py).

1. SYN flood (a fresh stack): ``--floods`` spoofed SYNs each (default 2,000 then 20,000, on the
   same stack) to the echo port, from addresses of 10.0.0.0/24 that no host owns (.3-.254) with
   varied ports and Linux-like options, so the stack's SYN-ACKs go to the namespace's kernel,
   which drops them (not its address, forwarding off): nothing answers. The sender paces itself
   by the TUN device's transmit-drop counter (it slows down and sends again what the queue
   dropped, so every SYN reaches the stack). Halfway through each flood a legitimate client (a
   kernel socket from 10.0.0.1) connects and sends a line to the echo service: reported are the
   times from its first SYN to connect() returning and to its echo. Stack CPU time
   (/proc/PID/schedstat of each thread, /proc/PID/stat as a fallback) and memory (VmRSS, VmHWM)
   before and after each flood, the stack's counters that moved (``tcpstack stats``: SYN-cookie
   counters, backlog drops, ...), the connections by state (``tcpstack ss``), and the namespace
   kernel's counters (/proc/net/snmp) that show the stack's replies were dropped, never answered.
2. Out-of-order segments (a fresh stack, optionally with ``--tcp-setting``s; settings of the
   ``tcp`` layer that look like an out-of-order memory budget are set high automatically when
   the stack has them): for each N in ``--ooo``, an attacker at 10.0.0.77 (no host owns it; the
   stack's replies are read from an AF_PACKET socket on tun0) does its own handshake offering
   SACK-permitted and window scaling, then sends N one-byte segments at ISN+1+2k (k = 1..N:
   every other byte, holes everywhere) at ``--ooo-rate`` per second. Reported: stack CPU per
   segment, how far behind the stack fell (TUN drops, time from the last segment sent to the
   stack's last ACK), the stack's counters (pieces held and dropped where it counts them) and
   memory; meanwhile a kernel ``ping`` (every 0.1 s) and a new kernel connection's echo (every
   0.25 s) measure whether the stack still answers. The connection is reset afterwards.

Done-when targets of issue 9 are printed next to the figures (within 1 s for the client's
handshake and echo during the 20,000-SYN flood; memory after 20,000 SYNs within 1 MB of after
2,000; at 10,000 segments/s ping and a new connection's echo within 100 ms). A benchmark: it
reports, it asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import packets as P  # noqa: E402

ECHO_PORT = 7
DEVICE = "tun0"
ATTACKER = "10.0.0.77"
TX_DROPPED = f"/sys/class/net/{DEVICE}/statistics/tx_dropped"
ETH_P_IP = 0x0800
SO_RCVBUFFORCE = 33


# ====================================================================== workers (inside the namespace)


def _emit(**record: Any) -> None:
    print(json.dumps(record), flush=True)


def _tx_dropped() -> int:
    try:
        return int(Path(TX_DROPPED).read_text())
    except (OSError, ValueError):
        return -1


def _raw_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL implied
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    return s


def _echo(s: socket.socket, line: bytes) -> None:
    """Send *line* to the echo service and read it back whole."""
    s.sendall(line)
    got = b""
    while len(got) < len(line):
        chunk = s.recv(64)
        if not chunk:
            raise ConnectionError("closed before the echo")
        got += chunk


def worker_client(host: str, port: int, timeout: float) -> None:
    """A legitimate kernel client: connect, send a line, read the echo; times from the first SYN."""
    s = socket.socket()
    s.settimeout(timeout)
    t0 = time.perf_counter()
    try:
        s.connect((host, port))
        t1 = time.perf_counter()
        _echo(s, b"hello, echo\n")
        t2 = time.perf_counter()
        _emit(event="client", connect_s=t1 - t0, echo_s=t2 - t0)
    except OSError as exc:
        _emit(event="client", error=f"{type(exc).__name__}: {exc}", after_s=time.perf_counter() - t0)
    finally:
        s.close()


class Pacer:
    """Sends at a target rate, in batches every millisecond; backs off while the TUN device's
    transmit queue drops (its tx_dropped counter rises) and reports how many it dropped."""

    def __init__(self, rate: float) -> None:
        self.rate = self.max_rate = rate
        self.t_next = time.perf_counter()
        self.dropped_start = _tx_dropped()
        self.dropped_seen = self.dropped_start

    def batch(self) -> int:
        """Wait for the next slot; how many to send in it."""
        now = time.perf_counter()
        if now < self.t_next:
            time.sleep(self.t_next - now)
        self.t_next = max(self.t_next, time.perf_counter() - 0.01) + 0.001
        return max(1, round(self.rate / 1000))

    def new_drops(self) -> int:
        """Frames the queue dropped since the last call; slows down when there were some."""
        d = _tx_dropped()
        new = max(0, d - self.dropped_seen)
        self.dropped_seen = d
        if new:
            self.rate = max(200.0, self.rate * 0.7)
            self.t_next += 0.005  # let the reader catch up
        elif self.rate < self.max_rate:
            self.rate = min(self.max_rate, self.rate * 1.01 + 10)
        return new


def worker_synflood(count: int, start: int, rate: float, port: int, client_timeout: float, seed: int) -> None:
    """*count* spoofed SYNs from 10.0.0.3-254 (tuple *start*, *start*+1, ...); the legitimate
    client starts when half of them are in."""
    rng = random.Random(seed)
    raw = _raw_socket()
    dst = P.addr("10.0.0.2")
    pacer = Pacer(rate)
    delivered = sent = resent = 0
    i = start
    client: subprocess.Popen[str] | None = None
    t0 = time.perf_counter()
    while delivered < count:
        n = min(pacer.batch(), count - delivered)
        for _ in range(n):
            src = P.addr(f"10.0.0.{3 + i % 252}")
            sport = 1024 + (i // 252 * 7919 + i) % 64000
            i += 1
            opts = P.tcp_options(mss=1460, sack_perm=True, ts=(rng.getrandbits(32), 0), wscale=7)
            frame = P.tcp_frame(src, dst, sport, port, rng.getrandbits(32), 0, P.SYN, window=64240, options=opts)
            raw.sendto(frame, ("10.0.0.2", 0))
        sent += n
        dropped = pacer.new_drops()
        resent += dropped
        delivered += n - dropped  # what the queue dropped is sent again (new tuples)
        if client is None and delivered >= count // 2:
            client = subprocess.Popen(
                [sys.executable, __file__, "_client", "10.0.0.2", str(port), str(client_timeout)],
                stdout=subprocess.PIPE,
                text=True,
            )
    t1 = time.perf_counter()
    result: dict[str, Any] = {}
    if client is not None:
        out, _ = client.communicate(timeout=client_timeout + 10)
        lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        result = lines[-1] if lines else {"error": "the client printed nothing"}
    _emit(
        event="flood",
        syns=delivered,
        frames_sent=sent,
        tx_dropped=pacer.dropped_seen - pacer.dropped_start,
        resent=resent,
        seconds=t1 - t0,
        rate=delivered / (t1 - t0) if t1 > t0 else 0.0,
        next_tuple=i,
        client=result,
    )


def _packet_socket() -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    s.bind((DEVICE, ETH_P_IP))
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    s.setblocking(False)
    return s


def _sack_blocks(opts: bytes) -> int:
    """How many SACK blocks the TCP options carry."""
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        if kind == 5:
            return (opts[i + 1] - 2) // 8
        i += opts[i + 1]
    return 0


def worker_ooo(count: int, rate: float, port: int, sport: int, settle: float, seed: int) -> None:
    """Handshake from 10.0.0.77:*sport*, then *count* one-byte segments at ISN+1+2k, k=1..count."""
    rng = random.Random(seed)
    raw = _raw_socket()
    pkt = _packet_socket()
    me, peer = P.addr(ATTACKER), P.addr("10.0.0.2")
    isn = rng.getrandbits(32)
    syn = P.tcp_frame(
        me, peer, sport, port, isn, 0, P.SYN, window=64240, options=P.tcp_options(mss=1460, sack_perm=True, wscale=7)
    )

    def ours(frame: bytes) -> tuple[bytes, bytes, int, int, int, int, int, bytes] | None:
        t = P.parse_tcp(frame)
        if t is None or t[0] != peer or t[1] != me or t[2] != port or t[3] != sport:
            return None
        return t

    their_isn = None
    synack_opts = b""
    deadline = time.monotonic() + 10
    next_syn = 0.0
    while their_isn is None and time.monotonic() < deadline:
        if time.monotonic() >= next_syn:
            raw.sendto(syn, ("10.0.0.2", 0))
            next_syn = time.monotonic() + 1.0
        select.select([pkt], [], [], 0.05)
        while True:
            try:
                frame = pkt.recv(65536)
            except BlockingIOError:
                break
            t = ours(frame)
            if t is not None and t[6] & (P.SYN | P.ACK) == P.SYN | P.ACK and t[5] == (isn + 1) & 0xFFFFFFFF:
                their_isn, synack_opts = t[4], t[7]
    if their_isn is None:
        _emit(event="ooo", error="no SYN-ACK from the stack within 10 s")
        return
    ack = (their_isn + 1) & 0xFFFFFFFF
    raw.sendto(P.tcp_frame(me, peer, sport, port, isn + 1, ack, P.ACK, window=65535), ("10.0.0.2", 0))
    sack_ok = b"\x04\x02" in synack_opts
    wscale_ok = b"\x03\x03" in synack_opts
    time.sleep(0.2)
    pacer = Pacer(rate)
    pacer.new_drops = lambda: 0  # type: ignore[method-assign]  # fixed rate: the stack must keep up
    tx0 = _tx_dropped()
    acks = 0
    max_blocks = 0
    last_ack_t = 0.0
    k = 1
    t0 = time.perf_counter()

    def drain() -> None:
        nonlocal acks, max_blocks, last_ack_t
        while True:
            try:
                frame = pkt.recv(65536)
            except BlockingIOError:
                return
            t = ours(frame)
            if t is not None and t[6] & P.ACK:
                acks += 1
                last_ack_t = time.perf_counter()
                max_blocks = max(max_blocks, _sack_blocks(t[7]))

    while k <= count:
        n = min(pacer.batch(), count - k + 1)
        for _ in range(n):
            seq = isn + 1 + 2 * k
            raw.sendto(
                P.tcp_frame(me, peer, sport, port, seq, ack, P.ACK | P.PSH, window=65535, payload=b"x"),
                ("10.0.0.2", 0),
            )
            k += 1
        drain()
    t_sent = time.perf_counter()
    # Wait until the stack has answered everything it got: no new ACK for 2 s (or --settle s).
    end = t_sent + settle
    while time.perf_counter() < end:
        select.select([pkt], [], [], 0.1)
        drain()
        if time.perf_counter() - max(last_ack_t, t_sent) > 2.0:
            break
    _emit(
        event="ooo",
        segments=count,
        send_seconds=t_sent - t0,
        rate=count / (t_sent - t0) if t_sent > t0 else 0.0,
        tx_dropped=_tx_dropped() - tx0,
        acks=acks,
        max_sack_blocks=max_blocks,
        lag_s=max(0.0, last_ack_t - t_sent),
        sack_negotiated=sack_ok,
        wscale_negotiated=wscale_ok,
        settled=time.perf_counter() < end,
    )
    # Hold the pieces until the orchestrator has measured, then reset the connection.
    sys.stdin.readline()
    raw.sendto(P.tcp_frame(me, peer, sport, port, isn + 1, 0, P.RST, window=0), ("10.0.0.2", 0))
    time.sleep(0.2)
    _emit(event="reset")


def worker_probe(host: str, port: int, interval: float, timeout: float) -> None:
    """A new kernel connection to the echo service every *interval* s until stdin has a line."""
    while True:
        s = socket.socket()
        s.settimeout(timeout)
        t0 = time.perf_counter()
        try:
            s.connect((host, port))
            _echo(s, b"ping\n")
            _emit(event="probe", at=t0, latency_s=time.perf_counter() - t0)
        except OSError as exc:
            _emit(event="probe", at=t0, error=type(exc).__name__, after_s=time.perf_counter() - t0)
        finally:
            s.close()
        r, _, _ = select.select([sys.stdin], [], [], interval)
        if r:
            return


WORKERS = {"_client", "_synflood", "_ooo", "_probe"}


def run_worker(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "_client":
        worker_client(args[0], int(args[1]), float(args[2]))
    elif cmd == "_synflood":
        worker_synflood(int(args[0]), int(args[1]), float(args[2]), int(args[3]), float(args[4]), int(args[5]))
    elif cmd == "_ooo":
        worker_ooo(int(args[0]), float(args[1]), int(args[2]), int(args[3]), float(args[4]), int(args[5]))
    elif cmd == "_probe":
        worker_probe(args[0], int(args[1]), float(args[2]), float(args[3]))
    return 0


# ====================================================================== the orchestrator (root namespace)


def cpu_seconds(pid: int) -> float:
    """CPU time of the process: the sum of its threads' run time (/proc/PID/task/*/schedstat,
    nanoseconds), or utime+stime from /proc/PID/stat (clock ticks) where schedstat is missing."""
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM and VmSwap (KiB) from /proc/PID/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM", "VmSwap"):
            out[key] = int(line.split()[1])
    return out


@dataclasses.dataclass
class Snapshot:
    cpu: float
    rss: int
    hwm: int
    swap: int
    kernel: dict[str, int]
    counters: dict[str, int]
    states: dict[str, int]
    tx_dropped: int


class Lab:
    """The namespace, the stack in it, and how to measure it."""

    def __init__(self, tmp: Path) -> None:
        from tcpstack.netns import Netns

        self.tmp = tmp
        self.ns = Netns(prefix="tcps-attack")
        # The replies to spoofed addresses must die in this namespace's kernel, never be forwarded.
        self.ns.exec(["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        self.ctl = tmp / "control.sock"
        self.stack: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self, *extra: str) -> None:
        self.stop()
        self.runs += 1
        self.stack = self.ns.tcpstack(
            "--serve", f"echo:{ECHO_PORT}", "--control", str(self.ctl), *extra, tmp=self.tmp, label=f"stack{self.runs}"
        )

    def stop(self) -> None:
        if self.stack is not None and self.stack.poll() is None:
            self.stack.send_signal(signal.SIGTERM)
            try:
                self.stack.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.stack.kill()
                self.stack.wait()
        self.stack = None

    @property
    def pid(self) -> int:
        assert self.stack is not None
        return self.stack.pid

    def counters(self) -> dict[str, int]:
        """Every counter ``tcpstack stats`` reports, flattened (``drops.tcp.backlog_full``,
        ``events.frames_in``); empty if the stack does not answer in time."""
        from tcpstack.control import request

        try:
            reply = request(self.ctl, "stats", wait=30.0)
        except OSError:
            return {}
        out: dict[str, int] = {}
        for section in ("drops", "events"):
            for k, v in (reply.get(section) or {}).items():
                if isinstance(v, int):
                    out[f"{section}.{k}"] = v
        for k, v in reply.items():
            if isinstance(v, int) and f"events.{k}" not in out:
                out[k] = v
        return out

    def states(self) -> dict[str, int]:
        from tcpstack.control import request

        try:
            rows = request(self.ctl, "ss", wait=30.0).get("connections", [])
        except OSError:
            return {}
        return dict(Counter(r.get("state", "?") for r in rows))

    def connection(self, remote: str) -> dict[str, Any]:
        """The ``tcpstack ss`` row of the connection to *remote* (``IP:PORT``), or ``{}``."""
        from tcpstack.control import request

        try:
            rows = request(self.ctl, "ss", wait=30.0).get("connections", [])
        except OSError:
            return {}
        return next((r for r in rows if r.get("remote") == remote), {})

    def kernel_snmp(self) -> dict[str, int]:
        """The namespace kernel's counters that show whether anything answered the stack's
        replies to spoofed addresses: they should be dropped (Ip InAddrErrors), never answered
        (Tcp OutRsts, Icmp OutDestUnreachs)."""
        text = self.ns.exec(["cat", "/proc/net/snmp"], check=False).stdout.splitlines()
        table: dict[str, int] = {}
        for names, values in zip(text[::2], text[1::2], strict=False):
            proto = names.split(":", 1)[0]
            for k, v in zip(names.split()[1:], values.split()[1:], strict=False):
                table[f"{proto}.{k}"] = int(v)
        keys = ("Ip.InAddrErrors", "Ip.ForwDatagrams", "Tcp.OutRsts", "Icmp.OutDestUnreachs")
        return {k: table.get(k, -1) for k in keys}

    def tx_dropped(self) -> int:
        r = self.ns.exec(["cat", TX_DROPPED], check=False)
        try:
            return int(r.stdout.strip())
        except ValueError:
            return -1

    def snapshot(self) -> Snapshot:
        mem = memory_kib(self.pid)
        return Snapshot(
            cpu_seconds(self.pid),
            mem.get("VmRSS", -1),
            mem.get("VmHWM", -1),
            mem.get("VmSwap", 0),
            self.kernel_snmp(),
            self.counters(),
            self.states(),
            self.tx_dropped(),
        )

    def settle(self, limit: float = 30.0) -> None:
        """Wait until the stack has worked through its input: frames_in unchanged for 0.5 s."""
        end = time.monotonic() + limit
        last = None
        while time.monotonic() < end:
            now = self.counters().get("frames_in")
            if now is not None and now == last:
                return
            last = now
            time.sleep(0.5)

    def popen(self, *args: str, stdin: bool = False) -> subprocess.Popen[str]:
        """A worker of this script inside the namespace, its stdout a pipe (killed at close)."""
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.ns.name, sys.executable, __file__, *args],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            text=True,
        )
        self.ns.procs.append(p)  # type: ignore[arg-type]
        return p

    def close(self) -> None:
        self.stop()
        self.ns.close()


def diff(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v != before.get(k, 0)}


def last_json(text: str, event: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("event") == event:
                found = rec
    return found


INTERESTING = re.compile(r"cookie|backlog|syn|ooo|out_of_order|reorder|budget|sack|held|piece|renege|memory")


#: ``tcpstack ss`` fields every connection has had; others (pieces held, ...) are printed as found.
SS_COMMON = {
    "srtt_ms",
    "rto_ms",
    "cwnd",
    "ssthresh",
    "mss",
    "in_flight",
    "snd_wnd",
    "rcv_wnd",
    "send_queue",
    "recv_queue",
    "retransmits",
    "bytes_sent",
    "bytes_received",
}


def print_counters(moved: dict[str, int], indent: str = "    ") -> None:
    if not moved:
        print(f"{indent}(no counter moved, or the stack did not answer)")
        return
    first = {k: v for k, v in moved.items() if INTERESTING.search(k)}
    rest = {k: v for k, v in moved.items() if k not in first}
    for k, v in [*first.items(), *rest.items()]:
        print(f"{indent}{k:<44}{v:>+12,}")


def fmt_mem(s: Snapshot) -> str:
    swap = f", swapped out {s.swap / 1024:.1f} MiB" if s.swap else ""
    return f"RSS {s.rss / 1024:.1f} MiB, HWM {s.hwm / 1024:.1f} MiB{swap}"


def run_floods(lab: Lab, floods: list[int], rate: float, client_timeout: float, results: dict[str, Any]) -> None:
    lab.start()
    time.sleep(0.3)
    base = lab.snapshot()
    print(f"\n== SYN flood: spoofed SYNs to port {ECHO_PORT} from 10.0.0.3-254, paced from {rate:,.0f}/s")
    print(f"before            CPU {base.cpu:.2f} s, {fmt_mem(base)}")
    prev = base
    snaps = [base]
    tuple_next = 0
    out: list[dict[str, Any]] = []
    for i, n in enumerate(floods):
        p = lab.popen("_synflood", str(n), str(tuple_next), str(rate), str(ECHO_PORT), str(client_timeout), str(i + 1))
        stdout, _ = p.communicate(timeout=n / 100 + client_timeout + 120)
        rec = last_json(stdout, "flood")
        if not rec:
            print(f"flood of {n}: the sender failed (exit {p.returncode})")
            continue
        tuple_next = rec["next_tuple"]
        lab.settle()
        snap = lab.snapshot()
        snaps.append(snap)
        c = rec["client"]
        print(
            f"after {n:>7,} SYNs  sent in {rec['seconds']:.2f} s ({rec['rate']:,.0f}/s); TUN tx drops "
            f"{rec['tx_dropped']} (re-sent {rec['resent']}); device tx_dropped {prev.tx_dropped} -> {snap.tx_dropped}"
        )
        if "error" in c:
            print(f"    legitimate client: FAILED after {c.get('after_s', 0):.2f} s: {c['error']}")
        else:
            print(
                f"    legitimate client (from its first SYN): handshake {c['connect_s'] * 1000:.1f} ms, "
                f"echo {c['echo_s'] * 1000:.1f} ms"
            )
        print(
            f"    stack CPU {snap.cpu - prev.cpu:.2f} s ({(snap.cpu - prev.cpu) / max(1, n) * 1e6:.1f} µs a SYN; "
            f"{snap.cpu:.2f} s since it started), "
            f"{fmt_mem(snap)} ({(snap.rss - prev.rss) / 1024:+.2f} MiB)"
        )
        print(f"    connections by state: {snap.states}")
        k = diff(prev.kernel, snap.kernel)
        print(
            f"    namespace kernel: {k.get('Ip.InAddrErrors', 0):,} stack replies to unowned addresses dropped, "
            f"{k.get('Ip.ForwDatagrams', 0)} forwarded, {k.get('Tcp.OutRsts', 0)} RSTs and "
            f"{k.get('Icmp.OutDestUnreachs', 0)} ICMP unreachables sent"
        )
        print("    counters that moved:")
        print_counters(diff(prev.counters, snap.counters), "      ")
        out.append({"syns": n, "sender": rec, "snapshot": dataclasses.asdict(snap)})
        prev = snap
    results["floods"] = {"before": dataclasses.asdict(base), "runs": out}
    # The issue's done-when comparisons.
    by_n = {r["syns"]: r for r in out}
    big = max(floods)
    if big in by_n:
        c = by_n[big]["sender"]["client"]
        if "error" in c:
            verdict = f"client failed ({c['error']})"
        else:
            worst = max(c["connect_s"], c["echo_s"])
            verdict = f"{worst * 1000:.0f} ms ({'within' if worst <= 1.0 else 'NOT within'} 1 s)"
        print(f"done-when: client handshake+echo during the {big:,}-SYN flood: {verdict}")
    small = min(floods)
    if small in by_n and big in by_n and small != big:
        sa, sb = by_n[small]["snapshot"], by_n[big]["snapshot"]
        a, b = sa["rss"] + sa["swap"], sb["rss"] + sb["swap"]
        print(
            f"done-when: RSS+swap after {big:,} SYNs {b / 1024:.2f} MiB vs after {small:,} {a / 1024:.2f} MiB: "
            f"{(b - a) / 1024:+.2f} MiB ({'within' if abs(b - a) <= 1024 else 'NOT within'} 1 MB)"
        )


def budget_settings() -> dict[str, Any]:
    """Settings of the ``tcp`` layer that look like an out-of-order memory budget or piece limit,
    each set high (to its maximum, at most 256 MiB or 10**6 pieces), if this code has any."""
    from layers.tcp.handler import TcpSettings

    out: dict[str, Any] = {}
    for f in dataclasses.fields(TcpSettings):
        if not f.init or not re.search(r"ooo|out_of_order|reorder|budget", f.name):
            continue
        if f.type not in (int, "int"):
            continue
        cap = 1_000_000 if re.search(r"piece|segment|block|count", f.name) else 256 << 20
        out[f.name] = min(int(f.metadata.get("max", cap)), cap)
    return out


def write_config(path: Path, tcp: dict[str, Any]) -> None:
    lines = [
        "# written by bench/attack.py",
        "[[layers]]",
        'type = "tun"',
        f'device = "{DEVICE}"',
        "",
        "[[layers]]",
        'type = "ipv4"',
        'address = "10.0.0.2/24"',
        "",
        "[[layers]]",
        'type = "tcp"',
    ]
    for k, v in tcp.items():
        lines.append(f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}")
    path.write_text("\n".join(lines) + "\n")


def config_ok(path: Path) -> str | None:
    r = subprocess.run(
        [sys.executable, "-m", "tcpstack.cli", "config", "check", str(path)], capture_output=True, text=True, cwd=ROOT
    )
    return None if r.returncode == 0 else (r.stderr or r.stdout).strip()


def parse_setting(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value.strip()


def summarize(values: list[float]) -> str:
    if not values:
        return "none"
    v = sorted(values)
    return (
        f"median {statistics.median(v) * 1000:.1f} ms, p95 {v[int(0.95 * (len(v) - 1))] * 1000:.1f} ms, "
        f"max {v[-1] * 1000:.1f} ms"
    )


def run_ooo(
    lab: Lab, sizes: list[int], rate: float, settle: float, config: Path | None, extra: dict[str, Any], results: dict
) -> None:
    args: list[str] = []
    applied: dict[str, Any] = {}
    if config is not None:
        args = ["--config", str(config)]
        applied = {"config": str(config)}
    else:
        tcp = {**budget_settings(), **extra}
        if tcp:
            path = lab.tmp / "ooo.toml"
            write_config(path, tcp)
            problem = config_ok(path)
            if problem is None:
                args, applied = ["--config", str(path)], tcp
            else:
                print(f"(the stack rejects {tcp}: {problem}; running with its defaults)")
    lab.start(*args)
    time.sleep(0.3)
    print(
        f"\n== Out-of-order: one-byte segments with holes on one SACK connection, {rate:,.0f}/s "
        f"(tcp settings: {applied or 'defaults'})"
    )
    out = []
    for i, n in enumerate(sizes):
        before = lab.snapshot()
        ping = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns.name, "ping", "-n", "-O", "-i", "0.1", "-W", "1", "10.0.0.2"],
            stdout=subprocess.PIPE,
            text=True,
        )
        lab.ns.procs.append(ping)  # type: ignore[arg-type]
        probe = lab.popen("_probe", "10.0.0.2", str(ECHO_PORT), "0.25", "5", stdin=True)
        time.sleep(0.5)
        t_start = time.perf_counter()
        worker = lab.popen(
            "_ooo", str(n), str(rate), str(ECHO_PORT), str(20000 + i), str(settle), str(i + 1), stdin=True
        )
        assert worker.stdout is not None
        line = worker.stdout.readline()
        t_end = time.perf_counter()
        rec = json.loads(line) if line.startswith("{") else {"error": f"worker said {line!r}"}
        held = lab.snapshot()  # while the pieces are held
        row = lab.connection(f"{ATTACKER}:{20000 + i}")
        assert worker.stdin is not None
        worker.stdin.write("reset\n")
        worker.stdin.flush()
        worker.communicate(timeout=30)
        assert probe.stdin is not None
        probe.stdin.write("stop\n")
        probe.stdin.flush()
        probe_out, _ = probe.communicate(timeout=30)
        ping.send_signal(signal.SIGINT)
        ping_out, _ = ping.communicate(timeout=10)
        lab.settle()
        after = lab.snapshot()
        rtts = [float(m) / 1000 for m in re.findall(r"time=([\d.]+) ms", ping_out)]
        late = len(re.findall(r"no answer yet", ping_out))
        tx = re.search(r"(\d+) packets transmitted, (\d+) received", ping_out)
        probes = [json.loads(x) for x in probe_out.splitlines() if x.startswith("{")]
        during = [p for p in probes if t_start - 1 <= p["at"] <= t_end + 1] or probes
        lat = [p["latency_s"] for p in during if "latency_s" in p]
        failed = [p for p in during if "error" in p]
        print(f"N = {n:,}")
        if "error" in rec:
            print(f"    attacker failed: {rec['error']}")
            out.append({"n": n, "error": rec["error"]})
            continue
        cpu = held.cpu - before.cpu
        print(
            f"    sent in {rec['send_seconds']:.2f} s ({rec['rate']:,.0f}/s); "
            f"SACK {'on' if rec['sack_negotiated'] else 'OFF'}"
            f", window scaling {'on' if rec['wscale_negotiated'] else 'off'}; TUN tx drops {rec['tx_dropped']:,} "
            f"(segments the stack did not read in time)"
        )
        print(
            f"    stack: {rec['acks']:,} ACKs (at most {rec['max_sack_blocks']} SACK blocks), last one "
            f"{rec['lag_s'] * 1000:.0f} ms after the last segment"
            + ("" if rec["settled"] else " (still answering at --settle)")
        )
        print(
            f"    stack CPU {cpu:.2f} s: {cpu / n * 1e6:.1f} µs a segment sent"
            f" ({cpu / max(1, n - rec['tx_dropped']) * 1e6:.1f} µs a segment received)"
        )
        print(
            f"    memory with the pieces held: {fmt_mem(held)} ({(held.rss - before.rss) / 1024:+.2f} MiB); "
            f"after the reset {fmt_mem(after)}"
        )
        print("    counters that moved while held:")
        print_counters(diff(before.counters, held.counters), "      ")
        shown = {k: v for k, v in row.items() if k not in SS_COMMON and not isinstance(v, list | str)}
        print(
            f"    the connection in tcpstack ss: {row.get('state', 'not listed')}, recv_queue {row.get('recv_queue')}"
        )
        if shown:
            print("      " + ", ".join(f"{k} {v}" for k, v in shown.items()))
        k = diff(before.kernel, held.kernel)
        print(
            f"    namespace kernel: {k.get('Ip.InAddrErrors', 0):,} stack replies to {ATTACKER} dropped, "
            f"{k.get('Tcp.OutRsts', 0)} RSTs sent"
        )
        sent_pings = int(tx.group(1)) if tx else len(rtts)
        print(f"    ping meanwhile: {len(rtts)}/{sent_pings} answered ({late} not within 1 s); {summarize(rtts)}")
        print(f"    new connection's echo meanwhile: {len(lat)}/{len(during)} answered; {summarize(lat)}")
        worst = max([*rtts, *lat], default=float("inf"))
        if failed or len(rtts) < sent_pings:
            worst = float("inf")
        print(
            f"    done-when (ping and a new connection's echo within 100 ms meanwhile): "
            f"{'yes' if worst <= 0.1 else 'NO'}"
            + (f" (worst {worst * 1000:.0f} ms)" if worst != float("inf") else " (some went unanswered)")
        )
        out.append(
            {
                "n": n,
                "attacker": rec,
                "cpu_s": cpu,
                "before": dataclasses.asdict(before),
                "held": dataclasses.asdict(held),
                "after": dataclasses.asdict(after),
                "ss_row": row,
                "ping_rtts": rtts,
                "ping_sent": sent_pings,
                "probes": during,
            }
        )
    results["ooo"] = {"settings": applied, "runs": out}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in WORKERS:
        try:
            return run_worker(sys.argv[1:])
        except (KeyboardInterrupt, BrokenPipeError):  # Ctrl-C reaches the workers too
            return 130
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short smoke run: a 200-SYN flood and N = 1,000")
    ap.add_argument("--floods", help="comma-separated flood sizes (default 2000,20000; empty: no flood)")
    ap.add_argument("--ooo", help="comma-separated N of out-of-order segments (default 1000,10000,100000; empty: none)")
    ap.add_argument("--syn-rate", type=float, default=5000, help="highest SYN rate per second (default 5000)")
    ap.add_argument("--ooo-rate", type=float, default=10000, help="out-of-order segments per second (default 10000)")
    ap.add_argument("--client-timeout", type=float, default=30, help="legitimate client's timeout (default 30 s)")
    ap.add_argument("--settle", type=float, default=120, help="longest wait for the stack after sending (120 s)")
    ap.add_argument(
        "--tcp-setting", action="append", default=[], help="KEY=VALUE for the out-of-order stack's tcp layer"
    )
    ap.add_argument("--config", type=Path, help="run the out-of-order stack with this configuration file instead")
    ap.add_argument("--json", type=Path, help="also write every figure to this file")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/attack.py: needs root (network namespaces, TUN, raw sockets)", file=sys.stderr)
        return 1

    def sizes(text: str | None, default: list[int]) -> list[int]:
        if text is None:
            return default
        return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]

    floods = sizes(args.floods, [200] if args.quick else [2000, 20000])
    ooo = sizes(args.ooo, [1000] if args.quick else [1000, 10000, 100000])
    extra = dict(parse_setting(s) for s in args.tcp_setting)
    tmp = Path(tempfile.mkdtemp(prefix="tcpstack-attack-"))
    results: dict[str, Any] = {}
    lab = None
    ok = False
    try:
        lab = Lab(tmp)
        if floods:
            run_floods(lab, floods, args.syn_rate, args.client_timeout, results)
        if ooo:
            run_ooo(lab, ooo, args.ooo_rate, args.settle, args.config, extra, results)
        ok = True
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        ok = True  # nothing failed: no stack log to show
        return 130
    finally:
        if lab is not None:
            lab.close()
        if not ok:
            for err in sorted(tmp.glob("stack*.err")):
                print(f"--- the end of {err.name}:", file=sys.stderr)
                print("\n".join(err.read_text(errors="replace").splitlines()[-15:]), file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
