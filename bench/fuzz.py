"""Structure-aware fuzzing of a whole sans-IO stack that has live connections.

Run:  .venv/bin/python bench/fuzz.py [--frames 1000000] [--seed 1] [--quiet]

No root, no network: two in-process stacks (the "client" 10.0.0.1 and the fuzzed "server"
10.0.0.2, every default feature on) joined by an in-memory wire of a deterministic
:class:`~framework.simulation.Simulation` on a virtual clock. Before the fuzz starts the server
has listeners (ports 80, 81, 90) and live connections that stream checked data both ways at a
steady rate, some with other feature sets (no SACK, no timestamps or window scaling, ECN,
RACK-TLP, Reno), plus connections in other states: CLOSE-WAIT, FIN-WAIT-2, TIME-WAIT,
SYN-RECEIVED (half-open from an address no stack owns) and SYN-SENT (to such an address).

Then ``--frames`` frames are fed to the server's ``receive_frame``, 10 µs of virtual time
apart, the simulation running between batches so real traffic keeps flowing:

- TCP segments aimed at the live connections' 4-tuples (every state) and sequence space:
  sequence and acknowledgment numbers near ``RCV.NXT``/``SND.UNA``/``SND.NXT``, the window
  edges or anywhere, random flag combinations, well-formed and malformed options (MSS, window
  scale, SACK-permitted, SACK blocks around the send window, timestamps, unknown kinds, bad
  lengths, a bad data offset), payloads of 0 to 1460 bytes, mostly correct checksums;
- segments to the listeners (SYNs with options, stray ACKs, ...) and to closed ports;
- bit flips of frames the client really sent on the targeted connections (half of them with
  their checksums made valid again), and IPv4 header mutations (IHL and options, lengths,
  TTL, ECN, flags, fragment offset, protocol, odd addresses);
- IP fragments of such segments and of echo requests (shuffled, overlapping, missing);
- ICMP errors quoting the targeted connections (unreachable with every code, fragmentation
  needed with odd MTUs, time exceeded, parameter problem, source quench, unknown types);
- random bytes, and random bytes behind a valid-looking IPv4 header.

"Sentinel" connections (port 90) are never aimed at: at the end they must have delivered
every byte intact both ways, and a new connection must too. Targeted connections that die
(reset by a valid in-window RST, ...) are replaced, so there are always live targets.

Reported: frames/s, exceptions out of ``receive_frame``/timers/output (must be 0), the
``stack.internal_error`` counter (must be 0; the first traceback is printed with the frame to
reproduce it: same ``--seed``, frame index), memory (RSS and the stack's own tables)
before/after, drops by reason, and what became of the connections. A benchmark: it reports,
it asserts nothing (tests/bench/test_fuzz_short.py runs a short version as a test).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import random
import struct
import sys
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from bench import packets as P  # noqa: E402
from framework.simulation import Simulation, _Direction  # noqa: E402
from layers.tcp.events import (  # noqa: E402
    ConnectionClosed,
    ConnectionFailed,
    DataReceived,
    EofReceived,
)
from layers.tcp.handler import TcpLayer  # noqa: E402
from tcpstack.testing.pair import make_stack, tcp_layer  # noqa: E402

CLIENT = "10.0.0.1"
SERVER = "10.0.0.2"
C_IP, S_IP = P.addr(CLIENT), P.addr(SERVER)
NOBODY = [P.addr("10.0.0.9"), P.addr("10.0.0.77"), P.addr("10.0.0.200")]  # no stack owns these
ODD_ADDRS = [P.addr(a) for a in ("10.0.0.255", "255.255.255.255", "224.0.0.1", "127.0.0.1", "0.0.0.0", SERVER)]
TARGET_PORTS = (80, 81)
SENTINEL_PORT = 90
CLOSED_PORTS = (7, 9, 443, 1, 65535)

PATTERN_LEN = 65521  # prime, so streams with different shifts never line up
FRAME_DT = 1e-5  # virtual seconds between fuzzed frames
BATCH = 100  # frames between simulation runs
RATE = 600  # bytes each streaming side may write per batch (1 ms virtual): ~0.6 MB/s

#: Feature sets of the targeted streaming connections (client side; the server uses its default).
FEATURE_SETS: list[tuple[dict[str, Any] | None, str | None]] = [
    (None, None),
    ({"sack": False}, None),
    ({"timestamps": False, "window_scaling": False}, "reno"),
    ({"ecn": {}}, None),
    ({"rack_tlp": {}}, None),
    ({"delayed_ack": False, "nagle": False}, None),
]


def rss_kib() -> int:
    """This process's resident set (VmRSS, KiB) from /proc, or -1 where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


class Stream:
    """One end of one connection: writes a deterministic byte pattern at a steady rate and
    checks every byte it reads against the pattern the other end writes."""

    def __init__(self, fz: Fuzzer, tcp: TcpLayer, out_shift: int, in_shift: int, *, target: bool) -> None:
        self.fz = fz
        self.tcp = tcp
        self.out_shift, self.in_shift = out_shift, in_shift
        self.target = target
        self.conn: Any = None
        self.sent = 0
        self.received = 0
        self.mismatch = 0  # reads that differ from the pattern
        self.eof = False
        self.failed: str | None = None
        self.closed = False
        self.writing = True
        self.allowance = 0

    def attach(self, conn: Any) -> None:
        self.conn = conn
        conn.listener = self

    def pump(self) -> None:
        conn = self.conn
        if conn is None or not self.writing or self.failed or self.closed:
            return
        if conn.state.name not in ("SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "CLOSE_WAIT"):
            return
        n = self.allowance
        if n <= 0:
            return
        data = self.fz.pattern(self.out_shift, self.sent, n)
        took = conn.send(data, self.fz.sim.now)
        self.sent += took
        self.allowance -= took
        self.tcp.touch(conn)

    def handle_event(self, conn: Any, event: object) -> None:
        if isinstance(event, DataReceived | EofReceived):
            data = conn.read()
            if data:
                if data != self.fz.pattern(self.in_shift, self.received, len(data)):
                    self.mismatch += 1
                self.received += len(data)
            if isinstance(event, EofReceived):
                self.eof = True
            self.tcp.touch(conn)
        elif isinstance(event, ConnectionFailed):
            self.failed = str(getattr(event, "reason", event))
        elif isinstance(event, ConnectionClosed):
            self.closed = True
        else:
            self.pump()

    @property
    def alive(self) -> bool:
        return self.conn is not None and not self.failed and not self.closed and self.conn.state.name == "ESTABLISHED"


@dataclass
class Pair:
    """The two :class:`Stream` ends of one connection."""

    client: Stream
    server: Stream
    port: int
    kind: str  # "sentinel", "target", or a state name for the odd ones


class CaptureSimulation(Simulation):
    """A simulation that keeps the last frames the client sent on targeted connections."""

    def __init__(self, fz: Fuzzer) -> None:
        super().__init__()
        self.fz = fz
        self.captured: deque[bytes] = deque(maxlen=512)
        self.from_server: deque[bytes] = deque(maxlen=64)

    def _send(self, d: _Direction, frame: bytes) -> None:
        if d.dst is self.fz.server:
            if len(frame) >= 24 and frame[9] == P.PROTO_TCP and frame[0] == 0x45:
                sport = int.from_bytes(frame[20:22], "big")
                if (sport, int.from_bytes(frame[22:24], "big")) not in self.fz.sentinel_ports:
                    self.captured.append(bytes(frame))
        elif len(self.from_server) < 64 or self.fz.rng.random() < 0.01:
            self.from_server.append(bytes(frame))
        super()._send(d, frame)


@dataclass
class Report:
    frames: int = 0
    seconds: float = 0.0
    receive_seconds: float = 0.0
    exceptions: int = 0
    internal_errors: int = 0
    client_internal_errors: int = 0
    first_error: str | None = None
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    tables_before: dict[str, int] = field(default_factory=dict)
    tables_after: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    sentinels_ok: bool = False
    sentinel_detail: list[str] = field(default_factory=list)
    new_connection_ok: bool = False
    targets_replaced: int = 0
    targets_alive: int = 0
    target_mismatches: int = 0
    states_after: dict[str, int] = field(default_factory=dict)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


class _ErrorLog:
    """A structlog processor that keeps the first error with its traceback and drops the rest."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, logger: object, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        if len(self.errors) < 5:
            tb = traceback.format_exc() if event_dict.get("exc_info") else ""
            self.errors.append(f"{event_dict.get('event')} {event_dict!r}\n{tb}")
        raise structlog.DropEvent


class Fuzzer:
    """The two stacks, their connections, and the frame generators (seeded)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        prng = random.Random(seed ^ 0x5EED)
        pat = bytes(prng.getrandbits(8) for _ in range(PATTERN_LEN))
        self._pat2 = pat + pat
        self.client = make_stack(f"{CLIENT}/24", default_features=True)
        # A long MSL keeps the TIME-WAIT connection in place for the whole run.
        self.server = make_stack(f"{SERVER}/24", default_features=True, msl=240.0)
        self.ct, self.st = tcp_layer(self.client), tcp_layer(self.server)
        self.sim = CaptureSimulation(self)
        self.sim.wire(self.client, self.server, delay=0.0005)
        self.pairs: list[Pair] = []
        self.sentinel_ports: set[tuple[int, int]] = set()
        self.sentinel_keys: set[tuple[bytes, int, int]] = set()
        self._pending_server: dict[int, deque[Stream]] = {}
        self._shift = 0
        self.replaced = 0
        self.kinds: Counter[str] = Counter()
        self.exceptions = 0
        self.first_exception: str | None = None
        self._targets: list[Any] = []
        self._due: list[tuple[float, Callable[[], None]]] = []
        self._making: list[tuple[float, str]] = []
        self.stack_seconds = 0.0
        self._feature_i = 0
        for port in (*TARGET_PORTS, SENTINEL_PORT):
            self._pending_server[port] = deque()
            self.st.listen(port, on_accept=self._make_accept(port))

    # ------------------------------------------------------------------ data

    def pattern(self, shift: int, offset: int, n: int) -> bytes:
        out = []
        while n > 0:
            start = (shift + offset) % PATTERN_LEN
            k = min(n, PATTERN_LEN)
            out.append(self._pat2[start : start + k])
            offset += k
            n -= k
        return b"".join(out)

    # ------------------------------------------------------------------ connections

    def _make_accept(self, port: int) -> Any:
        def accept(conn: Any) -> None:
            q = self._pending_server[port]
            key = (conn.remote[0], conn.remote[1], conn.local[1])
            for s in q:  # the server end of a pair we opened
                if s.conn is None and getattr(s, "key", None) == key:
                    q.remove(s)
                    s.attach(conn)
                    s.pump()
                    return
            # A connection the fuzz itself opened (a handshake completed by forged segments):
            # the application closes it at once, as a server does with a client it does not
            # want, so these go through FIN-WAIT and time out instead of piling up idle.
            s = Stream(self, self.st, 0, 0, target=True)
            s.writing = False
            s.attach(conn)
            conn.close(self.sim.now)
            self.st.touch(conn)

        return accept

    def open(self, port: int, kind: str, features: dict[str, Any] | None = None, cc: str | None = None) -> Pair:
        self._shift += 7919
        a, b = self._shift % PATTERN_LEN, (self._shift * 3 + 1) % PATTERN_LEN
        client = Stream(self, self.ct, a, b, target=kind != "sentinel")
        server = Stream(self, self.st, b, a, target=kind != "sentinel")
        opts = None
        if features is not None or cc is not None:
            opts = replace(self.ct.settings.default_options(), features=dict(features or {}), congestion_control=cc)
        conn = self.ct.connect(S_IP, port, now=self.sim.now, options=opts)
        client.attach(conn)
        server.key = (C_IP, conn.local[1], port)  # type: ignore[attr-defined]
        self._pending_server[port].append(server)
        pair = Pair(client, server, port, kind)
        self.pairs.append(pair)
        if kind == "sentinel":
            self.sentinel_ports.add((conn.local[1], port))
            self.sentinel_keys.add((C_IP, conn.local[1], port))
        return pair

    def tick(self, seconds: float) -> None:
        """Give every streaming end its allowance and run the simulation for *seconds*."""
        for p in self.pairs:
            for s in (p.client, p.server):
                if s.writing:
                    s.allowance = min(s.allowance + RATE, 8 * RATE)
                    s.pump()
        while self._due and self._due[0][0] <= self.sim.now:
            self._due.pop(0)[1]()
        try:
            self.sim.run(until=self.sim.now + seconds)
        except Exception:
            self._exception("simulation", b"")

    def setup(self) -> None:
        """Listeners, streaming connections, and connections in other states."""
        for _ in range(3):
            self.open(SENTINEL_PORT, "sentinel")
        for features, cc in FEATURE_SETS:
            self.open(TARGET_PORTS[self._feature_i % 2], "target", features, cc)
            self._feature_i += 1
        self.ensure_states()
        for _ in range(100):
            self.tick(0.001)

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        self._due.append((self.sim.now + delay, action))

    def ensure_states(self) -> None:
        """Make sure the server has a connection in each of CLOSE-WAIT, FIN-WAIT-2, TIME-WAIT,
        SYN-SENT and SYN-RECEIVED (the fuzz resets them now and then): start a new one where
        one is missing and none is on its way."""
        states = {c.state.name for c in self.st.connections.values()}
        pending = {kind for _, kind in self._making}
        self._making = [(t, k) for t, k in self._making if t > self.sim.now]

        def shut(stream: Stream) -> None:
            if stream.conn is not None and stream.conn.state.name in ("ESTABLISHED", "CLOSE_WAIT"):
                stream.writing = False
                stream.conn.shutdown(self.sim.now)
                stream.tcp.touch(stream.conn)

        def close(stream: Stream) -> None:
            if stream.conn is not None:
                stream.writing = False
                stream.conn.close(self.sim.now)
                stream.tcp.touch(stream.conn)

        if "CLOSE_WAIT" not in states and "CLOSE_WAIT" not in pending:
            p = self.open(80, "CLOSE_WAIT")  # the client half-closes: the server is in CLOSE-WAIT
            self._later(0.02, lambda: shut(p.client))
            self._making.append((self.sim.now + 0.05, "CLOSE_WAIT"))
        if "FIN_WAIT_2" not in states and "FIN_WAIT_2" not in pending:
            p = self.open(81, "FIN_WAIT_2")  # the server half-closes: FIN-WAIT-2 while it reads
            self._later(0.02, lambda: shut(p.server))
            self._making.append((self.sim.now + 0.05, "FIN_WAIT_2"))
        if "TIME_WAIT" not in states and "TIME_WAIT" not in pending:
            p = self.open(80, "TIME_WAIT")  # the server closes first, then the client
            self._later(0.02, lambda: close(p.server))
            self._later(0.03, lambda: close(p.client))
            self._making.append((self.sim.now + 0.05, "TIME_WAIT"))
        if "SYN_SENT" not in states:
            # The server connects to an address no stack owns: its SYNs go unanswered.
            self.st.connect(NOBODY[0], 5555 + self.rng.randrange(1000), now=self.sim.now)
        if "SYN_RECEIVED" not in states:
            self._half_open()

    def _half_open(self) -> None:
        """SYN-RECEIVED: SYNs from addresses no stack owns (their SYN-ACKs go nowhere)."""
        for i in range(4):
            src = NOBODY[i % len(NOBODY)]
            syn = P.tcp_frame(
                src,
                S_IP,
                40000 + self.rng.randrange(20000),
                TARGET_PORTS[i % 2],
                self.rng.getrandbits(32),
                0,
                P.SYN,
                options=P.tcp_options(mss=1460, wscale=7, sack_perm=True, ts=(self.rng.getrandbits(32), 0)),
            )
            self.feed(syn, "setup")

    def refresh(self) -> None:
        """Replace streaming targets that died; re-read the live connections to aim at."""
        for p in list(self.pairs):
            if p.kind != "target":
                if p.kind != "sentinel" and p.client.closed and (p.server.closed or p.server.conn is None):
                    self.pairs.remove(p)  # an odd-state connection that is over: forget it
                continue
            if p.client.failed or p.client.closed or p.server.failed or p.server.closed:
                self.pairs.remove(p)
                p.client.writing = p.server.writing = False
                features, cc = FEATURE_SETS[self._feature_i % len(FEATURE_SETS)]
                self.open(TARGET_PORTS[self._feature_i % 2], "target", features, cc)
                self._feature_i += 1
                self.replaced += 1
        self._targets = [c for k, c in self.st.connections.items() if k not in self.sentinel_keys]

    # ------------------------------------------------------------------ feeding

    def _exception(self, where: str, frame: bytes) -> None:
        self.exceptions += 1
        if self.first_exception is None:
            self.first_exception = f"{where} at frame {self.kinds.total()} (seed {self.seed}): {frame.hex()}\n"
            self.first_exception += traceback.format_exc()

    def feed(self, frame: bytes, kind: str) -> None:
        self.kinds[kind] += 1
        t0 = time.perf_counter()
        try:
            self.server.receive_frame(frame, now=self.sim.now)
        except Exception:
            self._exception("receive_frame", frame)
        self.stack_seconds += time.perf_counter() - t0
        errors = self.server.stats.drops.get(("stack", "internal_error"), 0)
        if errors and self._first_internal is None:
            self._first_internal = f"{kind} frame {self.kinds.total()} (seed {self.seed}): {frame.hex()}"

    _first_internal: str | None = None

    # ------------------------------------------------------------------ generators

    def _target(self) -> Any:
        if self._targets and self.rng.random() < 0.9:
            return self.rng.choice(self._targets)
        return None

    def _seq_near(self, base: int, wnd: int) -> int:
        r = self.rng
        k = r.randrange(8)
        if k == 0:
            return r.getrandbits(32)
        if k == 1:
            return base + wnd + r.randrange(-2, 3)
        if k == 2:
            return base - (1 << 31) + r.randrange(-2, 3)
        if k == 3:
            return base + r.randrange(0, max(1, wnd))
        if k == 4:
            return base - r.randrange(1, 70000)
        return base + r.randrange(-3, 4)

    def _options(self, conn: Any) -> tuple[bytes, int | None]:
        """Options (well-formed or not) and sometimes a wrong data offset."""
        r = self.rng
        if r.random() < 0.35:
            return b"", (r.randrange(16) if r.random() < 0.05 else None)
        parts: list[bytes] = []
        una = getattr(conn, "snd_una", 0) if conn is not None else r.getrandbits(32)
        nxt = getattr(conn, "snd_nxt", una) if conn is not None else una
        well_formed = r.random() < 0.7  # most option sets parse, so segments reach the connection
        for _ in range(r.randrange(1, 5)):
            k = r.choice((0, 1, 2, 3, 4, 5, 9)) if well_formed else r.randrange(12)
            if k == 0:
                parts.append(struct.pack("!BBH", 2, 4, r.choice([0, 1, 88, 536, 1460, 65535, r.getrandbits(16)])))
            elif k == 1:
                parts.append(bytes((3, 3, r.choice([0, 7, 14, 15, 255]))))
            elif k == 2:
                parts.append(b"\x04\x02")
            elif k in (3, 4):
                blocks = []
                for _ in range(r.randrange(1, 5)):
                    left = r.choice([una, nxt, una + r.randrange(-100, 100000), r.getrandbits(32)])
                    right = left + r.choice([0, 1, 1448, r.randrange(1, 70000), -r.randrange(1, 100)])
                    blocks.append(struct.pack("!II", left & 0xFFFFFFFF, right & 0xFFFFFFFF))
                parts.append(bytes((5, 2 + 8 * len(blocks))) + b"".join(blocks))
            elif k == 5:
                parts.append(struct.pack("!BBII", 8, 10, r.getrandbits(32), r.choice([0, r.getrandbits(32)])))
            elif k == 6:
                parts.append(bytes((r.randrange(9, 256), r.choice([0, 1, 2, 3, 40, 255]))))
            elif k == 7:
                parts.append(bytes((r.choice([2, 3, 4, 5, 8]), r.choice([0, 1, 3, 6, 9, 11, 255]))))
            elif k == 8:
                parts.append(b"\x00" + bytes(r.getrandbits(8) for _ in range(r.randrange(4))))
            elif k == 9:
                parts.append(b"\x01" * r.randrange(1, 4))
            else:
                parts.append(bytes(r.getrandbits(8) for _ in range(r.randrange(1, 12))))
        opts = b"".join(parts)[:40]
        opts += b"\x00" * (-len(opts) % 4)
        return opts, (r.randrange(16) if r.random() < 0.05 else None)

    _FLAGS = (
        P.ACK,
        P.ACK,
        P.ACK | P.PSH,
        P.ACK | P.FIN,
        P.RST,
        P.RST | P.ACK,
        P.SYN,
        P.SYN | P.ACK,
        P.ACK | P.URG,
        P.ACK | P.ECE,
        P.ACK | P.CWR,
        0,
        P.FIN | P.SYN | P.RST | P.PSH | P.URG,
        P.SYN | P.FIN,
    )

    def _payload(self) -> bytes:
        r = self.rng
        k = r.random()
        if k < 0.5:
            return b""
        if k < 0.65:
            return bytes((r.getrandbits(8),))
        if k < 0.9:
            return r.randbytes(r.randrange(2, 200))
        return r.randbytes(r.randrange(200, 1461))

    def gen_tcp_target(self) -> bytes:
        """A segment on a live connection's 4-tuple, in or near its sequence space."""
        r = self.rng
        conn = self._target()
        if conn is None:
            return self.gen_tcp_other()
        remote, rport = conn.remote
        lport = conn.local[1]
        rcv_nxt = getattr(conn, "rcv_nxt", 0)
        wnd = max(1, (getattr(conn, "rcv_adv", rcv_nxt) - rcv_nxt) & 0xFFFFFFFF)
        una = getattr(conn, "snd_una", 0)
        nxt = getattr(conn, "snd_nxt", una)
        seq = self._seq_near(rcv_nxt, wnd if wnd < 1 << 30 else 65535)
        ack = r.choice([una, nxt, nxt + 1, una - 1, una + r.randrange(0, max(1, (nxt - una) & 0xFFFFFFFF) + 1)])
        if r.random() < 0.1:
            ack = r.getrandbits(32)
        flags = r.getrandbits(8) if r.random() < 0.25 else r.choice(self._FLAGS)
        opts, doff = self._options(conn)
        return P.ipv4(
            remote,
            S_IP,
            P.PROTO_TCP,
            P.tcp(
                remote,
                S_IP,
                rport,
                lport,
                seq,
                ack,
                flags,
                window=r.choice([0, 1, 512, 65535, r.getrandbits(16)]),
                options=opts,
                payload=self._payload(),
                urgent=r.getrandbits(16) if flags & P.URG or r.random() < 0.05 else 0,
                data_offset=doff,
                reserved=r.getrandbits(4) if r.random() < 0.05 else 0,
                good_checksum=r.random() < 0.9,
            ),
            ident=r.getrandbits(16),
            tos=r.getrandbits(2) if r.random() < 0.2 else 0,
        )

    def gen_tcp_other(self) -> bytes:
        """A segment to a listener or a closed port, from the client, a nobody or an odd address."""
        r = self.rng
        k = r.random()
        src = C_IP if k < 0.4 else r.choice(NOBODY) if k < 0.9 else r.choice(ODD_ADDRS)
        dport = r.choice((*TARGET_PORTS, SENTINEL_PORT, *CLOSED_PORTS)) if r.random() < 0.9 else r.getrandbits(16)
        sport = r.getrandbits(16)
        while src == C_IP and (sport, dport) in self.sentinel_ports:
            sport = r.getrandbits(16)
        flags = r.choice((P.SYN, P.SYN, P.SYN, P.ACK, P.SYN | P.ACK, P.RST, P.FIN, P.SYN | P.ECE | P.CWR))
        if r.random() < 0.2:
            flags = r.getrandbits(8)
        if flags & P.SYN and r.random() < 0.7:
            opts = P.tcp_options(
                mss=r.choice([536, 1460, 65535, 0]),
                wscale=r.choice([None, 0, 7, 14, 15]),
                sack_perm=r.random() < 0.7,
                ts=(r.getrandbits(32), 0) if r.random() < 0.7 else None,
            )
            doff = None
        else:
            opts, doff = self._options(None)
        return P.ipv4(
            src,
            S_IP,
            P.PROTO_TCP,
            P.tcp(
                src,
                S_IP,
                sport,
                dport,
                r.getrandbits(32),
                r.getrandbits(32),
                flags,
                window=r.getrandbits(16),
                options=opts,
                payload=self._payload() if r.random() < 0.3 else b"",
                data_offset=doff,
                good_checksum=r.random() < 0.95,
            ),
            ident=r.getrandbits(16),
        )

    def gen_bitflip(self) -> bytes:
        r = self.rng
        pool = self.sim.captured if self.sim.captured and r.random() < 0.9 else self.sim.from_server
        if not pool:
            return self.gen_random()
        buf = bytearray(r.choice(pool))
        for _ in range(r.randrange(1, 4)):
            buf[r.randrange(len(buf))] ^= 1 << r.randrange(8)
        frame = bytes(buf)
        if r.random() < 0.5:
            frame = P.fix_tcp_checksum(frame)
        if self._is_sentinel(frame):
            return self.gen_random()
        return frame

    def _is_sentinel(self, frame: bytes) -> bool:
        if len(frame) < 24 or frame[9] != P.PROTO_TCP:
            return False
        ihl = (frame[0] & 0x0F) * 4
        if len(frame) < ihl + 4:
            return False
        key = (
            frame[12:16],
            int.from_bytes(frame[ihl : ihl + 2], "big"),
            int.from_bytes(frame[ihl + 2 : ihl + 4], "big"),
        )
        return key in self.sentinel_keys

    def gen_ip_mutation(self) -> bytes:
        r = self.rng
        base = bytearray(self.gen_tcp_target() if r.random() < 0.7 else self._echo())
        k = r.randrange(10)
        if k == 0:  # IP options, IHL to match (or not)
            opts = r.choice(
                [
                    b"\x01\x01\x01\x00",
                    b"\x07\x07\x04\x00\x00\x00\x00\x00",
                    b"\x44\x0c\x05\x00" + bytes(8),
                    b"\x82\x0b" + bytes(9) + b"\x00",
                    bytes((r.getrandbits(8), r.getrandbits(8))) + bytes(2),
                    r.randbytes(4 * r.randrange(1, 11)),
                ]
            )
            opts += b"\x00" * (-len(opts) % 4)
            ihl = 5 + len(opts) // 4 if r.random() < 0.8 else r.randrange(16)
            base = bytearray(bytes([0x40 | (ihl & 0xF)]) + base[1:20] + opts + base[20:])
            base[2:4] = (len(base) & 0xFFFF).to_bytes(2, "big")
        elif k == 1:
            base[0] = (base[0] & 0xF0) | r.randrange(16)
        elif k == 2:
            base[2:4] = r.choice([0, 19, 20, 40, len(base) - 1, len(base) + 1, 65535]).to_bytes(2, "big")
        elif k == 3:
            base[8] = r.choice([0, 1, 255])
        elif k == 4:
            base[1] = r.getrandbits(8)
        elif k == 5:
            base[6:8] = r.choice([0x8000, 0x2000, 0x6000, r.getrandbits(16), 0x1FFF]).to_bytes(2, "big")
        elif k == 6:
            base[9] = r.choice([0, 1, 2, 17, 41, 255])
        elif k == 7:
            base[12:16] = r.choice(ODD_ADDRS)
        elif k == 8:
            base[16:20] = r.choice([*ODD_ADDRS, P.addr("10.0.0.3"), C_IP])
        else:
            base[0] = r.choice([0x45, 0x46, 0x60, 0x00, 0xF5])
        frame = bytes(base)
        if r.random() < 0.8:
            frame = P.fix_ip_checksum(frame)
        if self._is_sentinel(frame):
            return self.gen_random()
        return frame

    def _echo(self) -> bytes:
        r = self.rng
        data = r.randbytes(r.choice([0, 8, 56, r.randrange(0, 3000)]))
        src = C_IP if r.random() < 0.8 else r.choice(NOBODY + ODD_ADDRS)
        return P.ipv4(
            src, S_IP, P.PROTO_ICMP, P.icmp(8, 0, r.randbytes(4), data), ident=r.getrandbits(16), flags_frag=0
        )

    def gen_fragments(self) -> list[bytes]:
        r = self.rng
        whole = self.gen_tcp_target() if r.random() < 0.6 else self._echo()
        if len(whole) < 36:
            return [whole]
        src, proto = whole[12:16], whole[9]
        payload = whole[20:]
        ident = r.randrange(8)
        cuts = sorted({8 * r.randrange(1, max(2, len(payload) // 8)) for _ in range(r.randrange(1, 4))})
        cuts = [c for c in cuts if c < len(payload)]
        bounds = [0, *cuts, len(payload)]
        frags = []
        for a, b in itertools.pairwise(bounds):
            more = 0x2000 if b < len(payload) else 0
            off = a // 8
            if r.random() < 0.05:
                off = r.randrange(8192)
            piece = payload[a:b]
            if r.random() < 0.05:
                piece = r.randbytes(len(piece))
            frags.append(P.ipv4(src, S_IP, proto, piece, ident=ident, flags_frag=more | off))
        if r.random() < 0.3:
            frags.append(r.choice(frags))  # a duplicate
        if r.random() < 0.2 and len(frags) > 1:
            frags.pop(r.randrange(len(frags)))  # a missing piece: it waits for the timeout
        if r.random() < 0.5:
            r.shuffle(frags)
        return [f for f in frags if not self._is_sentinel(f)]

    def gen_icmp_error(self) -> bytes:
        """An ICMP error quoting a datagram the server sent on a live connection (or not)."""
        r = self.rng
        conn = self._target()
        if conn is not None:
            una = getattr(conn, "snd_una", 0)
            nxt = getattr(conn, "snd_nxt", una)
            seq = r.choice([una, nxt, una + r.randrange(0, max(1, (nxt - una) & 0xFFFFFFFF) + 1), r.getrandbits(32)])
            remote, rport, lport = conn.remote[0], conn.remote[1], conn.local[1]
        else:
            seq, remote, rport, lport = r.getrandbits(32), C_IP, r.getrandbits(16), r.getrandbits(16)
        quoted_tcp = struct.pack("!HHI", lport, rport, seq & 0xFFFFFFFF) + struct.pack("!IBBH", 0, 0x50, P.ACK, 65535)
        quoted = P.ipv4(S_IP, remote, r.choice([P.PROTO_TCP] * 9 + [1]), quoted_tcp, ident=r.getrandbits(16))
        quoted = quoted[: r.choice([28, 28, 40, 40, 24, 20, 8])]
        type_, code = r.choice([(3, r.randrange(16)), (3, 4), (3, 4), (11, r.randrange(2)), (12, 0), (4, 0), (5, 1)])
        if r.random() < 0.05:
            type_, code = r.getrandbits(8), r.getrandbits(8)
        rest = b"\0\0" + r.choice([0, 1, 68, 296, 576, 1000, 1280, 1500, 65535, r.getrandbits(16)]).to_bytes(2, "big")
        if type_ == 12:
            rest = bytes((r.getrandbits(8), 0, 0, 0))
        sender = r.choice([remote, P.addr("10.0.0.254"), C_IP])
        msg = P.icmp(type_, code, rest, quoted, good_checksum=r.random() < 0.95)
        return P.ipv4(sender, S_IP, P.PROTO_ICMP, msg, ident=r.getrandbits(16))

    def gen_random(self) -> bytes:
        r = self.rng
        if r.random() < 0.5:
            return r.randbytes(r.choice([0, 1, 19, 20, r.randrange(0, 120), r.randrange(0, 1600)]))
        n = r.randrange(20, 200)
        buf = bytearray(r.randbytes(n))
        buf[0] = 0x45
        buf[2:4] = n.to_bytes(2, "big")
        buf[6:8] = b"\0\0" if r.random() < 0.8 else buf[6:8]
        buf[9] = r.choice([1, 6, 6, 17, r.getrandbits(8)])
        buf[12:16] = r.choice([C_IP, *NOBODY])
        buf[16:20] = S_IP
        frame = P.fix_ip_checksum(bytes(buf))
        return self.gen_tcp_other() if self._is_sentinel(frame) else frame

    # ------------------------------------------------------------------ the run

    def one(self) -> None:
        """Generate and feed one frame (or a few fragments)."""
        k = self.rng.random()
        if k < 0.40:
            self.feed(self.gen_tcp_target(), "tcp_target")
        elif k < 0.52:
            self.feed(self.gen_tcp_other(), "tcp_other")
        elif k < 0.62:
            self.feed(self.gen_bitflip(), "bitflip")
        elif k < 0.70:
            self.feed(self.gen_ip_mutation(), "ip_mutation")
        elif k < 0.78:
            for f in self.gen_fragments():
                self.feed(f, "fragment")
        elif k < 0.90:
            self.feed(self.gen_icmp_error(), "icmp_error")
        elif k < 0.93:
            self.feed(self._echo(), "icmp_echo")
        else:
            self.feed(self.gen_random(), "random")

    def tables(self) -> dict[str, int]:
        """Sizes of the stack's own tables: what would grow without bound if something leaked."""
        st = self.st
        ip = self.server.layer("ipv4")
        reasm = getattr(ip, "reassembler", None)
        # Read defensively: the tables are internals that other work may rename (-1: not found).
        return {
            "connections": len(st.connections),
            "half_open": sum(c.state.name == "SYN_RECEIVED" for c in st.connections.values()),
            "timer_heap": len(getattr(st, "_timers", None) or ()) if hasattr(st, "_timers") else -1,
            "timer_map": len(getattr(st, "_timer_of", None) or ()) if hasattr(st, "_timer_of") else -1,
            "reassembly_datagrams": len(reasm) if reasm is not None else -1,
            "reassembly_bytes": getattr(reasm, "bytes_held", -1),
        }

    def run(self, frames: int, *, progress: bool = False) -> Report:
        rep = Report()
        rep.rss_before_kib = rss_kib()
        rep.tables_before = self.tables()
        drops_before = Counter({f"{a}.{b}": n for (a, b), n in self.server.stats.drops.items()})
        self.refresh()
        t0 = time.perf_counter()
        done = 0
        next_report = 100_000
        next_states = 2000
        while done < frames:
            n = min(BATCH, frames - done)
            before = self.kinds.total()
            while self.kinds.total() - before < n:
                self.one()
                self.sim.now += FRAME_DT
            done += self.kinds.total() - before
            self.tick(0.0)
            self.refresh()
            if done >= next_states:
                next_states += 2000
                self.ensure_states()
            if progress and done >= next_report:
                next_report += 100_000
                el = time.perf_counter() - t0
                print(f"  {done:>9,} frames  {done / el:>8,.0f}/s  rss {rss_kib() / 1024:.1f} MiB", flush=True)
        rep.seconds = time.perf_counter() - t0
        rep.receive_seconds = self.stack_seconds
        rep.frames = done
        # Quiet period: let retransmissions, timers and the streams settle, then check.
        for p in self.pairs:
            p.client.writing = p.server.writing = False
        for _ in range(200):
            self.tick(0.001)
        self.sim.run(until=self.sim.now + 2.0)
        rep.exceptions = self.exceptions
        rep.internal_errors = self.server.stats.drops.get(("stack", "internal_error"), 0)
        rep.client_internal_errors = self.client.stats.drops.get(("stack", "internal_error"), 0)
        rep.rss_after_kib = rss_kib()
        rep.tables_after = self.tables()
        after = Counter({f"{a}.{b}": n for (a, b), n in self.server.stats.drops.items()})
        rep.drops = dict((after - drops_before).most_common())
        rep.kinds = dict(self.kinds)
        rep.targets_replaced = self.replaced
        ok = True
        for p in self.pairs:
            if p.kind == "sentinel":
                c, s = p.client, p.server
                good = (
                    c.mismatch == 0
                    and s.mismatch == 0
                    and not c.failed
                    and not s.failed
                    and c.received == s.sent
                    and s.received == c.sent
                    and c.sent > 0
                    and s.sent > 0
                )
                rep.sentinel_detail.append(
                    f"port {c.conn.local[1]}: client sent {c.sent} received {c.received}, server sent {s.sent} "
                    f"received {s.received}, mismatches {c.mismatch}/{s.mismatch}, failures {c.failed}/{s.failed}"
                )
                ok = ok and good
            elif p.kind == "target":
                rep.targets_alive += p.client.alive and p.server.alive
                rep.target_mismatches += p.client.mismatch + p.server.mismatch
        rep.sentinels_ok = ok
        rep.new_connection_ok = self.check_new_connection()
        rep.states_after = dict(Counter(c.state.name for c in self.st.connections.values()))
        rep.first_error = self.first_exception
        return rep

    def check_new_connection(self, size: int = 100_000) -> bool:
        """A connection opened after the fuzz carries *size* bytes each way intact."""
        p = self.open(SENTINEL_PORT, "fresh")
        p.client.writing = p.server.writing = True
        for _ in range(20000):
            if p.client.sent >= size and p.server.sent >= size:
                break
            for s in (p.client, p.server):
                s.allowance = min(size - s.sent, 16 * RATE)
                s.pump()
            self.sim.run(until=self.sim.now + 0.001)
        p.client.writing = p.server.writing = False
        self.sim.run(until=self.sim.now + 5.0)
        c, s = p.client, p.server
        return (
            c.sent == s.sent == size
            and c.received == s.received == size
            and c.mismatch == 0
            and s.mismatch == 0
            and not c.failed
            and not s.failed
        )


def quiet_logs() -> _ErrorLog:
    """Drop logging below ERROR (rendering millions of drop lines would dominate); keep errors."""
    errors = _ErrorLog()
    structlog.configure(
        processors=[errors],
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        cache_logger_on_first_use=False,
    )
    return errors


def fuzz(frames: int, seed: int, *, progress: bool = False) -> tuple[Report, _ErrorLog]:
    """Set up, fuzz *frames* frames with *seed*, settle and check; the report and the error log."""
    errors = quiet_logs()
    fz = Fuzzer(seed)
    fz.setup()
    rep = fz.run(frames, progress=progress)
    if rep.first_error is None and errors.errors:
        rep.first_error = errors.errors[0]
    if fz._first_internal is not None:
        rep.first_error = f"{fz._first_internal}\n{rep.first_error or ''}"
    return rep, errors


def print_report(rep: Report, seed: int) -> None:
    print(f"fuzzed frames        {rep.frames:,} in {rep.seconds:.1f} s: {rep.frames_per_s:,.0f} frames/s (seed {seed})")
    print(
        f"in receive_frame     {rep.receive_seconds:.1f} s ({rep.receive_seconds / max(1, rep.frames) * 1e6:.1f} µs "
        "a frame; the rest: generating frames and the live traffic)"
    )
    print("frame kinds          " + ", ".join(f"{k} {n:,}" for k, n in sorted(rep.kinds.items())))
    print(f"exceptions raised    {rep.exceptions}")
    print(f"stack.internal_error {rep.internal_errors} (client stack: {rep.client_internal_errors})")
    print(
        f"memory (RSS)         {rep.rss_before_kib / 1024:.1f} MiB before, {rep.rss_after_kib / 1024:.1f} MiB after "
        f"({(rep.rss_after_kib - rep.rss_before_kib) / 1024:+.1f} MiB)"
    )
    print(
        "stack tables         " + ", ".join(f"{k} {rep.tables_before[k]} -> {v}" for k, v in rep.tables_after.items())
    )
    print("connections after    " + ", ".join(f"{k} {n}" for k, n in sorted(rep.states_after.items())))
    print(
        f"targeted streams     {rep.targets_replaced} replaced after being reset/closed by the fuzz, "
        f"{rep.targets_alive} alive at the end, {rep.target_mismatches} reads with injected data"
    )
    print(f"sentinels intact     {'yes' if rep.sentinels_ok else 'NO'}")
    for line in rep.sentinel_detail:
        print(f"    {line}")
    print(f"new connection       {'intact both ways' if rep.new_connection_ok else 'FAILED'}")
    total = sum(rep.drops.values())
    print(f"drops by reason      {total:,} in all")
    for reason, n in rep.drops.items():
        print(f"    {reason:<40}{n:>10,}")
    if rep.first_error:
        print("first error:\n" + rep.first_error)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1_000_000, help="frames to feed (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)
    rep, _ = fuzz(args.frames, args.seed, progress=not args.quiet)
    print_report(rep, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
