"""The probe: a per-connection time series of TCP's state (docs/observability.md, "The probe").

Feature ``probe`` (off by default): on every ACK the connection processes and every segment it
sends, the connection's :class:`ConnProbe` (the ``setup.probe`` slot,
:class:`~layers.tcp.policy.ConnectionProbe`) makes one record: SND.UNA, SND.MAX, cwnd, ssthresh,
the flight and RFC 6675's pipe, SACKed and lost bytes, SRTT/RTTVAR/RTO and the RTT sample, both
windows, retransmissions, the congestion-control phase, ECN marks, and the decisions taken since
the previous record (``tcp.decision`` events, seen through a debug tap of framework/lazylog.py
while some probe is active and rendered by ``describe_decision``). The fields and events are
those of docs/observability.md (the contract ``tcpstack plot`` reads).

Where records go: every stack with a TCP layer has one :class:`ProbeSink` (made in
``stack_configured``, reached by connections through ``setup.shared``), configured by
``[plugins.probe]`` (:class:`ProbeSettings`). It keeps the last ``ring`` records of each probed
connection in memory (``tcpstack probe`` reads them through the control socket) and, with
``path``, writes every record to a file (``.csv``: CSV, otherwise JSON lines) from a writer
thread: buffered, written every ``flush_interval`` seconds and when the stack closes; at most
``max_pending`` records wait for the disk, beyond that records are dropped, counted (``probe``
drops in ``tcpstack stats``) and logged. ``tcpstack up --probe FILE`` and
``open_stack(probe=FILE)`` turn the feature on for every connection and set ``path``.

Cost: nothing per segment when off (the connection tests its ``probe`` slot at two points: after
an arriving segment, on the slow path or the receive fast path, and after each batch of output); a
probed connection pays for one record per ACK and per segment sent, the decisions' keywords are
copied as they are taken and rendered only when a record is written or shown.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import csv
import io
import json
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import IO, TYPE_CHECKING, Final

import structlog

from framework.errors import ConfigError
from framework.lazylog import add_debug_tap, describe_decision, remove_debug_tap
from framework.plugins import hookimpl
from framework.registry import Registry
from framework.settings import check_output_path
from layers.tcp.extensions import add_feature
from layers.tcp.layer import TcpLayer
from layers.tcp.policy import TcpSetup
from layers.tcp.seq import seq_add, seq_diff, seq_gt
from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, CWR, ECE, FIN, PSH, RST, SYN, TcpRepr

if TYPE_CHECKING:
    from framework.stack import Stack
    from layers.tcp.connection import TcpConnection
    from layers.tcp.view import ConnectionView

NAME = "probe"
logger = structlog.get_logger("tcpstack.probe")

#: The columns of a record, in order (docs/observability.md, "The probe file").
FIELDS: Final[tuple[str, ...]] = (
    "t",
    "conn",
    "event",
    "local",
    "remote",
    "seq",
    "ack",
    "len",
    "flags",
    "snd_una",
    "snd_nxt",
    "cwnd",
    "ssthresh",
    "in_flight",
    "pipe",
    "sacked",
    "lost",
    "srtt",
    "rttvar",
    "rto",
    "rtt_sample",
    "snd_wnd",
    "rcv_wnd",
    "retrans",
    "phase",
    "ce",
    "ece",
    "decisions",
)
EVENTS: Final = ("open", "ack", "send", "close")
PHASES: Final = ("slow_start", "css", "congestion_avoidance", "fast_recovery", "rto_recovery")
#: An ssthresh at or above this is "infinite" (RFC 5681 §3.1: "arbitrarily high"; the built-in
#: algorithms start at 2**30): recorded as empty/null.
INFINITE_SSTHRESH: Final = 1 << 30
#: How a record's decisions are joined in a CSV cell.
CSV_JOIN: Final = " | "
_FLOAT_FIELDS: Final = frozenset({"t", "srtt", "rttvar", "rto", "rtt_sample"})
_FLOAT_AT: Final = tuple(i for i, name in enumerate(FIELDS) if name in _FLOAT_FIELDS)
_DECISIONS_AT: Final = FIELDS.index("decisions")
_NO_DECISIONS: Final[tuple[Decision, ...]] = ()
_FLAG_LETTERS: Final = ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (ACK, "A"), (ECE, "E"), (CWR, "C"))
_FLAGS: dict[int, str] = {}
_GONE: Final = (TcpState.CLOSED, TcpState.LISTEN)

Decision = tuple[str | None, dict[str, object]]
"""A decision as the tap saw it: the deciding plugin and a copy of the event's keywords, rendered
by ``describe_decision`` only when the record is written or shown."""
Value = float | int | str | tuple[Decision, ...] | list[str] | None
Record = tuple[Value, ...]
"""One record: the values of :data:`FIELDS` in order (floats unrounded, decisions a tuple), then
its serial number in the stack (``ProbeSink.records`` when it was made; what ``tcpstack probe
--watch`` asks from)."""
_N: Final = len(FIELDS)


def flags_text(flags: int) -> str:
    """TCP flags as letters in the order ``F S R P A E C``: ``SA``, ``PA``, ``FA``."""
    text = _FLAGS.get(flags)
    if text is None:
        text = _FLAGS[flags] = "".join(letter for bit, letter in _FLAG_LETTERS if flags & bit)
    return text


def endpoint(addr: bytes, port: int) -> str:
    """``10.0.0.2:80``, or ``[fd00::2]:80`` for an IPv6 address."""
    if len(addr) == 16:
        return f"[{IPv6Address(addr)}]:{port}"
    return f"{socket.inet_ntoa(addr)}:{port}" if len(addr) == 4 else f"{addr.hex()}:{port}"


check_path = check_output_path
"""The ``path`` setting's check (:func:`framework.settings.check_output_path`)."""


@dataclass(slots=True)
class ProbeFeatureSettings:
    """The ``probe`` feature has no per-connection settings: ``[plugins.probe]`` says where the
    records of the stack's probed connections go."""


@dataclass(slots=True)
class ProbeSettings:
    """``[plugins.probe]``: where the records of probed connections go (the feature ``probe``
    says which connections are probed)."""

    path: str | None = field(default=None, metadata={"check": check_path})
    """Write every record to this file (``*.csv``: CSV; anything else: JSON lines), created or
    truncated when the stack is built; ``tcpstack up --probe FILE`` sets it. ``None``: records are
    only held in memory (``ring``), for ``tcpstack probe``."""

    ring: int = field(default=4096, metadata={"min": 16, "max": 1_000_000})
    """Records held in memory per probed connection (the latest; ``tcpstack probe`` shows them):
    about 0.5 KB each."""

    keep_closed: int = field(default=16, metadata={"min": 0, "max": 100_000})
    """Closed connections whose records stay held (the most recently closed)."""

    max_pending: int = field(default=65536, metadata={"min": 16, "max": 10_000_000})
    """Records that may wait for the disk; beyond that records are dropped (counted as ``probe``
    drops in ``tcpstack stats`` and logged) rather than held without bound."""

    flush_interval: float = field(default=0.5, metadata={"min": 0.01, "max": 60.0})
    """Seconds between writes of the waiting records to ``path`` (they are also written when
    ``max_pending / 4`` wait, and when the stack closes)."""


# ====================================================================== decisions


#: Probes by connection label (``ConnInfo.label``, the ``conn`` of decision events), weakly:
#: the debug tap is installed while this is not empty.
_routes: dict[str, weakref.ref[ConnProbe]] = {}


def _tap(conn: str, plugin: str | None, event: str, kw: dict[str, object], /) -> None:
    if event != "tcp.decision":
        return
    ref = _routes.get(conn)
    probe = ref() if ref is not None else None
    if probe is not None:
        probe.decisions.append((plugin, dict(kw)))  # (the tap must not keep kw itself)


def _route(label: str, probe: ConnProbe) -> None:
    if not _routes:
        add_debug_tap(_tap)

    def gone(ref: weakref.ref[ConnProbe]) -> None:
        _unroute(label, ref)

    _routes[label] = weakref.ref(probe, gone)


def _unroute(label: str, ref: weakref.ref[ConnProbe] | None = None, probe: ConnProbe | None = None) -> None:
    current = _routes.get(label)
    if current is None or (ref is not None and current is not ref) or (probe is not None and current() is not probe):
        return
    del _routes[label]
    if not _routes:
        remove_debug_tap(_tap)


def tap_active() -> bool:
    """Whether the probe's debug tap is installed (some probe is active)."""
    return bool(_routes)


# ====================================================================== one connection


class ConnProbe:
    """The probe of one connection: makes its records, keeps the last ``ring`` of them, and hands
    each to the stack's :class:`ProbeSink` (none for a connection built outside a TCP layer)."""

    __slots__ = (
        "__weakref__",
        "ce",
        "closed",
        "count",
        "decisions",
        "ece",
        "label",
        "last_now",
        "local",
        "number",
        "opened",
        "remote",
        "ring",
        "samples",
        "sink",
        "snd_max",
    )

    def __init__(self, setup: TcpSetup, sink: ProbeSink | None, ring: int = 4096) -> None:
        info = setup.info
        self.sink = sink
        self.number = info.number
        self.label = info.label
        self.local = endpoint(*info.local)
        self.remote = endpoint(*info.remote)
        self.ring: collections.deque[Record] = collections.deque(maxlen=ring)
        self.count = 0  # records made: the ring holds [count - len(ring), count)
        self.decisions: list[Decision] = []  # taken since the previous record (the debug tap)
        self.samples = 0  # RTT samples of the estimator already reported
        self.ce = 0  # CE-marked segments received (RFC 3168 §5)
        self.ece = 0  # ECE-flagged ACKs received (RFC 3168 §6.1.2)
        self.opened = False
        self.closed = False
        self.snd_max: int | None = None  # SND.MAX as of the last record
        self.last_now = 0.0
        _route(self.label, self)

    @property
    def first(self) -> int:
        """The index of the oldest record still held."""
        return self.count - len(self.ring)

    def records(self) -> list[Record]:
        """The records held, oldest first."""
        return list(self.ring)

    def dicts(self) -> list[dict[str, Value]]:
        """The records held as ``{field: value}`` (JSON-ready: floats rounded to the microsecond)."""
        return [record_dict(r) for r in self.ring]

    # ------------------------------------------------------------------ the connection's calls

    def on_segment(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None:
        if seg.ip_ecn == 3:
            self.ce += 1  # RFC 3168 §5: CE codepoint
        flags = seg.flags
        if not flags & ACK or self.closed:
            return
        if flags & ECE and not flags & SYN:
            self.ece += 1  # RFC 3168 §6.1.2 (an ECN-setup SYN-ACK is no echo)
        if not self.opened:
            self._open(conn)
        rtt = conn.rtt
        sample = None
        if rtt.samples != self.samples:
            self.samples = rtt.samples
            sample = rtt.latest
        self._record(conn, now, "ack", seg.seq, seg.ack, len(seg.payload), flags_text(flags), sample, conn.snd_max)

    def on_output(self, conn: ConnectionView, segs: list[TcpRepr], now: float) -> None:
        if self.closed:
            return
        if not self.opened:
            self._open(conn)
        if segs:
            final = conn.snd_max
            running = self.snd_max if self.snd_max is not None else conn.snd_una
            last = len(segs) - 1
            for i, seg in enumerate(segs):
                if i == last:
                    running = final  # SND.MAX after the batch
                else:
                    end = seq_add(seg.seq, seg.seg_len)
                    if seq_gt(end, running):
                        running = end if not seq_gt(end, final) else final
                self._record(
                    conn, now, "send", seg.seq, seg.ack, len(seg.payload), flags_text(seg.flags), None, running
                )
        if conn.state in _GONE:
            self.on_delete(conn, now)

    def on_delete(self, conn: ConnectionView, now: float) -> None:
        if self.closed:
            return
        if not self.opened:
            self._open(conn)
        self._record(conn, now, "close", None, None, None, None, None, conn.snd_max)
        self.closed = True
        _unroute(self.label, probe=self)
        if self.sink is not None:
            self.sink.closed_probe(self)

    # ------------------------------------------------------------------ records

    def _open(self, conn: ConnectionView) -> None:
        """The ``open`` record, before the connection's first other record."""
        self.opened = True
        irs = None if conn.state is TcpState.SYN_SENT else conn.irs  # the IRS once the peer's SYN is in
        self._record(conn, conn.created_at, "open", conn.iss, irs, None, None, None, conn.snd_max)

    def _record(
        self,
        conn: ConnectionView,
        now: float,
        event: str,
        seq: int | None,
        ack: int | None,
        length: int | None,
        flags: str | None,
        rtt_sample: float | None,
        snd_max: int,
    ) -> None:
        cc = conn.cc
        rtt = conn.rtt
        una = conn.snd_una
        cwnd = cc.cwnd
        ssthresh = cc.ssthresh
        in_flight = seq_diff(snd_max, una)
        if in_flight < 0:
            in_flight = 0
        sb = conn.scoreboard
        if sb is None or in_flight == 0 or not (sb.sacked or sb.lost or sb.rexmit):
            pipe, sacked, lost = in_flight, 0, 0  # (SetPipe() gives just that: nothing SACKed, lost or resent)
        else:
            sacked = sb.sacked.total
            pipe = sb.pipe(sb.una + in_flight)  # RFC 6675 §4 SetPipe()
            # Unsacked bytes deemed lost (IsLost, or marked by RACK): out of the pipe unless resent.
            lost = in_flight - sacked - (pipe - sb.rexmit.total)
            if lost < 0:
                lost = 0
        if self.decisions:
            decisions: tuple[Decision, ...] = tuple(self.decisions)
            self.decisions.clear()
        else:
            decisions = _NO_DECISIONS
        rcv_wnd = seq_diff(conn.rcv_adv, conn.rcv_nxt)
        sink = self.sink
        if sink is not None:
            sink.records += 1
            serial = sink.records
            offset = sink.stack.time_offset if sink.stack is not None else 0.0
        else:
            serial = self.count + 1
            offset = 0.0
        record = (
            now + offset,
            self.number,
            event,
            self.local if event == "open" else None,
            self.remote if event == "open" else None,
            seq,
            ack,
            length,
            flags,
            una,
            snd_max,
            cwnd,
            ssthresh if ssthresh < INFINITE_SSTHRESH else None,
            in_flight,
            pipe,
            sacked,
            lost,
            rtt.srtt,
            rtt.rttvar if rtt.srtt is not None else None,
            rtt.current(),
            rtt_sample,
            conn.snd_wnd,
            rcv_wnd if rcv_wnd > 0 else 0,
            conn.retransmits,
            conn.phase,  # (the connection's own rule, as tcpstack ss shows it)
            self.ce,
            self.ece,
            decisions,
            serial,
        )
        self.snd_max = snd_max
        self.last_now = now
        self.ring.append(record)
        self.count += 1
        if sink is not None:
            sink.emit(record)


def record_dict(record: Record) -> dict[str, Value]:
    """A record as ``{field: value}``, JSON-ready (times in seconds rounded to the microsecond,
    ``decisions`` a list)."""
    return dict(zip(FIELDS, json_row(record), strict=True))


def json_row(record: Record) -> list[Value]:
    """A record's values, JSON-ready (floats rounded to the microsecond, decisions a list)."""
    row = list(record[:_N])
    for i in _FLOAT_AT:
        v = row[i]
        if isinstance(v, float):
            row[i] = round(v, 6)
    decisions = row[_DECISIONS_AT]
    if isinstance(decisions, tuple):
        row[_DECISIONS_AT] = [describe_decision(plugin, kw) for plugin, kw in decisions]
    return row


_JSON_TEMPLATE: Final = "{" + ",".join(f'"{name}":%s' for name in FIELDS) + "}\n"
_encode_list = json.JSONEncoder(ensure_ascii=False).encode


def json_line(record: Record) -> str:
    """A record as one line of JSON (the object :func:`record_dict` gives), about twice as fast as
    ``json.dumps`` of it: its strings (event, flags, phase, addresses) need no escaping."""
    out: list[str] = []
    for v in record[:_N]:
        if v is None:
            out.append("null")
        elif type(v) is str:
            out.append('"' + v + '"')
        elif type(v) is float:
            out.append(repr(round(v, 6)))
        elif type(v) is tuple:
            out.append(_encode_list([describe_decision(p, kw) for p, kw in v]) if v else "[]")
        else:
            out.append(repr(v))
    return _JSON_TEMPLATE % tuple(out)


def csv_row(record: Record) -> list[Value]:
    """A record's CSV cells: an absent value is an empty cell, decisions joined with `` | ``."""
    row = json_row(record)
    decisions = row[_DECISIONS_AT]
    row[_DECISIONS_AT] = CSV_JOIN.join(decisions) if isinstance(decisions, list) else ""
    return ["" if v is None else v for v in row]


# ====================================================================== the file


class RecordWriter:
    """Writes records to a text stream from a thread of its own: buffered, every *interval*
    seconds (sooner when a quarter of *max_pending* wait) and at :meth:`close`. At most
    *max_pending* records wait; :meth:`put` drops (and counts) any beyond that."""

    def __init__(
        self,
        stream: IO[str],
        fmt: str,
        *,
        max_pending: int = 65536,
        interval: float = 0.5,
        owns_stream: bool = True,
        name: str = "probe",
    ) -> None:
        if fmt not in ("csv", "jsonl"):
            raise ValueError(f"unknown probe format {fmt!r} (csv or jsonl)")
        self.stream = stream
        self.fmt = fmt
        self.name = name
        self.max_pending = max_pending
        self.interval = interval
        self.owns_stream = owns_stream
        self.written = 0
        self.dropped = 0
        self.error: str | None = None
        self._queue: collections.deque[Record] = collections.deque()
        self._wake_at = max(1, max_pending // 4)
        self._wake = threading.Event()
        self._stop = False
        self._csv = csv.writer(stream) if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(FIELDS)
        self._thread = threading.Thread(target=self._run, name=f"tcpstack-{name}-writer", daemon=True)
        self._thread.start()
        _writers.add(self)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def put(self, record: Record) -> bool:
        """Queue *record*; ``False`` if it was dropped (too many wait, or writing failed)."""
        q = self._queue
        n = len(q)
        if n >= self.max_pending or self.error is not None:
            self.dropped += 1
            return False
        q.append(record)
        if n + 1 == self._wake_at:
            self._wake.set()
        return True

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stop = self._stop
            self._write_waiting()
            if stop:
                return

    def _write_waiting(self) -> None:
        q = self._queue
        if not q or self.error is not None:
            return
        out = io.StringIO()
        n = 0
        if self._csv is not None:
            w = csv.writer(out)
            while q:
                w.writerow(csv_row(q.popleft()))
                n += 1
        else:
            while q:
                out.write(json_line(q.popleft()))
                n += 1
        try:
            self.stream.write(out.getvalue())
            self.stream.flush()
        except (OSError, ValueError) as exc:  # a full disk, a closed stream: stop writing, count the rest
            self.error = str(exc)
            self.dropped += n
            q.clear()
            return
        self.written += n

    def close(self) -> None:
        """Write what waits, stop the thread, close the stream if it is ours. Idempotent."""
        if self._stop:
            return
        self._stop = True
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=30.0)
        if self._thread.is_alive():  # (a disk that does not answer in 30 s: give up on it)
            return
        self._write_waiting()
        _writers.discard(self)
        with contextlib.suppress(OSError, ValueError):
            if self.owns_stream:
                self.stream.close()
            else:
                self.stream.flush()


_writers: weakref.WeakSet[RecordWriter] = weakref.WeakSet()


@atexit.register
def _close_writers() -> None:
    """At exit, write what waits (a stack that was never closed: an embedding that exits)."""
    for writer in list(_writers):
        writer.close()


def format_for(path: str) -> str:
    """``csv`` for a ``*.csv`` path, else ``jsonl``."""
    return "csv" if path.lower().endswith(".csv") else "jsonl"


def open_writer(path: str, settings: ProbeSettings) -> RecordWriter:
    """A :class:`RecordWriter` on a new file at *path*."""
    stream = open(path, "w", encoding="utf-8", newline="" if format_for(path) == "csv" else None)
    return RecordWriter(
        stream, format_for(path), max_pending=settings.max_pending, interval=settings.flush_interval, owns_stream=True
    )


# ====================================================================== the stack's sink


class ProbeSink:
    """The probe of one stack: its probed connections (live and the recently closed), the file
    writer, and callbacks. Made in ``stack_configured``; in ``TcpLayer.shared["probe"]``."""

    DROP_LOG_INTERVAL = 5.0
    """Seconds between two warnings about dropped records."""

    def __init__(self, settings: ProbeSettings, stack: Stack | None = None) -> None:
        self.settings = settings
        self.stack = stack
        self.live: dict[int, ConnProbe] = {}
        self.closed: collections.OrderedDict[int, ConnProbe] = collections.OrderedDict()
        self.writer: RecordWriter | None = None
        self.callbacks: list[Callable[[dict[str, Value]], object]] = []
        self.records = 0  # records made: the serial number of the latest
        self._dropped_logged = 0
        self._drop_logged_at = float("-inf")
        self._closed = False
        if settings.path is not None:
            try:
                self.writer = open_writer(settings.path, settings)
            except OSError as exc:
                raise ConfigError([f"plugins.probe.path: cannot open {settings.path}: {exc.strerror or exc}"]) from None

    # ------------------------------------------------------------------ outputs

    def add_callback(self, callback: Callable[[dict[str, Value]], object]) -> None:
        """Call *callback* with every record (a dict, :func:`record_dict`) as it is made, on the
        stack's thread: keep it quick."""
        self.callbacks.append(callback)

    def add_stream(self, stream: IO[str], fmt: str = "jsonl") -> None:
        """Write every record to the text *stream* as well (JSON lines, or ``fmt="csv"``), from the
        writer thread; the stream is flushed, not closed, when the stack closes."""
        if self.writer is not None:
            raise ValueError("this stack's probe already writes to a file")
        s = self.settings
        self.writer = RecordWriter(stream, fmt, max_pending=s.max_pending, interval=s.flush_interval, owns_stream=False)

    def emit(self, record: Record) -> None:
        writer = self.writer
        if writer is not None and not writer.put(record):
            self._dropped()
        for callback in self.callbacks:
            try:
                callback(record_dict(record))
            except Exception:  # the application's code: one bad call must not stop the stack
                logger.exception("probe.callback_failed")

    def _dropped(self) -> None:
        if self.stack is not None:
            self.stack.stats.drop("probe", "writer_behind")
        now = time.monotonic()
        if now - self._drop_logged_at >= self.DROP_LOG_INTERVAL:
            writer = self.writer
            assert writer is not None
            self._drop_logged_at = now
            logger.warning(
                "probe.dropped",
                records=writer.dropped,
                since_last=writer.dropped - self._dropped_logged,
                why=writer.error or f"{writer.max_pending} records already wait for the disk",
            )
            self._dropped_logged = writer.dropped

    # ------------------------------------------------------------------ connections

    def new_probe(self, setup: TcpSetup) -> ConnProbe:
        probe = ConnProbe(setup, self, self.settings.ring)
        self.live[probe.number] = probe
        return probe

    def closed_probe(self, probe: ConnProbe) -> None:
        if self.live.get(probe.number) is probe:
            del self.live[probe.number]
        keep = self.settings.keep_closed
        if keep:
            self.closed[probe.number] = probe
            while len(self.closed) > keep:
                self.closed.popitem(last=False)

    def probes(self) -> list[ConnProbe]:
        """Every probe whose records are held: the recently closed, then the live, by number."""
        return sorted([*self.closed.values(), *self.live.values()], key=lambda p: p.number)

    def find(self, number: int) -> ConnProbe | None:
        return self.live.get(number) or self.closed.get(number)

    def close(self, connections: Iterable[TcpConnection] = ()) -> None:
        """The stack closes: a ``close`` record for each of its *connections* still probed (at
        the time of its last record), then the file is written and closed. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for conn in list(connections):
            probe = conn.probe
            if isinstance(probe, ConnProbe) and not probe.closed:
                probe.on_delete(conn, probe.last_now)
        for probe in list(self.live.values()):  # (connections the layer no longer holds)
            probe.closed = True
            _unroute(probe.label, probe=probe)
            self.closed_probe(probe)
        if self.writer is not None:
            self.writer.close()
            if self.writer.dropped:
                logger.warning("probe.dropped", records=self.writer.dropped, written=self.writer.written)

    def summary(self) -> dict[str, object]:
        w = self.writer
        return {
            "records": self.records,
            "path": self.settings.path,
            "written": w.written if w is not None else None,
            "dropped": w.dropped if w is not None else 0,
            "pending": w.pending if w is not None else 0,
        }


def sink_of(stack: Stack) -> ProbeSink | None:
    """The probe sink of *stack* (``None``: no TCP layer, or the probe plugin is disabled)."""
    for handler in stack.pipeline.handlers:
        if isinstance(handler, TcpLayer):
            sink = handler.shared.get(NAME)
            return sink if isinstance(sink, ProbeSink) else None
    return None


def _tcp_layers(stack: Stack) -> Iterable[TcpLayer]:
    return (h for h in stack.pipeline.handlers if isinstance(h, TcpLayer))


# ====================================================================== hooks


@hookimpl
def stack_register(registry: Registry) -> None:
    add_feature(registry, NAME, ProbeFeatureSettings, doc="the probe: a record per ACK and per segment sent")
    registry.add_settings(NAME, ProbeSettings)


@hookimpl
def stack_configured(stack: Stack) -> None:
    layers = list(_tcp_layers(stack))
    if not layers:
        return
    settings = stack.config.plugin_settings(NAME) if stack.config is not None else None
    sink = ProbeSink(settings if isinstance(settings, ProbeSettings) else ProbeSettings(), stack)
    for layer in layers:
        layer.shared[NAME] = sink


@hookimpl
def stack_closed(stack: Stack) -> None:
    for layer in _tcp_layers(stack):
        sink = layer.shared.get(NAME)
        if isinstance(sink, ProbeSink):
            sink.close(layer.connections.values())


@hookimpl
def tcp_connection_setup(setup: TcpSetup) -> None:
    if setup.trial or setup.features.get(NAME) is None:
        return
    setup.claim("probe", by=NAME)
    sink = setup.shared.get(NAME)
    if isinstance(sink, ProbeSink):
        setup.probe = sink.new_probe(setup)
    else:  # a connection built outside a TCP layer (the sans-IO kit): records held in its ring only
        setup.probe = ConnProbe(setup, None)
