"""Per-connection series for ``tcpstack plot``: what the graphs draw, computed from a capture's
segments (:class:`tcpstack.plot.capture.Conn`) and, when there is one, the connection's probe
records (:class:`tcpstack.plot.probe.ProbeSeries`).

Every graph is about one direction, the *data direction*: the side that sent more payload bytes
(a download: the server). Times are seconds since the connection's first frame in the capture;
sequence numbers are relative to the data sender's ISN (its SYN's sequence number, so the first
data byte is 1), or, when the capture missed the SYN, to the first sequence number it sent minus
one; they are unwrapped past 2**32, so a transfer of more than 4 GiB keeps climbing.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from layers.tcp.rtt import RttEstimator
from tcpstack.plot.capture import ACK, FIN, SYN, Conn
from tcpstack.plot.probe import EVENTS, ProbeSeries

__all__ = ["Analysis", "ProbeView", "analyze", "decision_kind", "nice_interval"]

MOD = 1 << 32
HALF = 1 << 31
#: Throughput intervals: about this many across the connection's duration (1, 2 or 5 times a
#: power of ten seconds, at least :data:`MIN_INTERVAL`).
INTERVALS = 100
MIN_INTERVAL = 0.001
#: The RFC 6298 estimator run on the capture's samples when there is no probe: our stack's
#: bounds (layers/tcp/rtt.py: RTO at least 1 s as RFC 6298 (2.4) says, at most 60 s, G 1 ms).
MIN_RTO, MAX_RTO = 1.0, 60.0


def _signed(d: int) -> int:
    d &= MOD - 1
    return d - MOD if d >= HALF else d


class _Unwrap:
    """32-bit sequence numbers to integers relative to *base*, unwrapped: each value is taken as
    the nearest (within 2**31) to the previous one (RFC 9293 §3.4: modulo 2**32 arithmetic)."""

    __slots__ = ("base", "last")

    def __init__(self, base: int) -> None:
        self.base = base
        self.last = 0

    def __call__(self, value: int) -> int:
        self.last += _signed(value - self.base - self.last)
        return self.last


def nice_interval(duration: float) -> float:
    """The throughput interval for a connection of *duration* seconds."""
    target = max(duration / INTERVALS, MIN_INTERVAL)
    exp = math.floor(math.log10(target))
    for step in (1, 2, 5, 10):
        value = step * 10.0**exp
        if value >= target * (1 - 1e-9):
            return round(value, 12)
    return round(10.0 ** (exp + 1), 12)  # pragma: no cover


def decision_kind(text: str) -> str:
    """A decision's kind: its first part ("cwnd reduced" of "cwnd reduced, RFC 5681 §3.2, ...")."""
    return text.split(",", 1)[0].strip() or "?"


@dataclass(slots=True)
class ProbeView:
    """A connection's probe records placed on the capture's axes (x: seconds since the
    connection's first frame; sequence numbers relative to the capture's base)."""

    series: ProbeSeries
    x: array[float]
    local_is_data_sender: bool
    lost_x: list[float] = field(default_factory=list)
    lost_y: list[float] = field(default_factory=list)
    lost_bytes: list[float] = field(default_factory=list)
    phase_runs: list[tuple[float, float, str]] = field(default_factory=list)
    """(start x, end x, phase) of each run of records in one phase; a run ends where the next begins."""
    decisions: list[tuple[float, float, str]] = field(default_factory=list)
    """(x, cwnd at that record, decision text) for each decision."""

    def values(self, name: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The (x, value) points of a field, leaving out records where it is absent."""
        col = np.frombuffer(self.series.column(name), dtype=np.float64)
        keep = ~np.isnan(col)
        return np.frombuffer(self.x, dtype=np.float64)[keep], col[keep]

    def rtt_samples(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The RTT samples of the ``ack`` records."""
        col = np.frombuffer(self.series.column("rtt_sample"), dtype=np.float64)
        keep = ~np.isnan(col) & (np.frombuffer(self.series.event, dtype=np.int8) == EVENTS.index("ack"))
        return np.frombuffer(self.x, dtype=np.float64)[keep], col[keep]

    def phase_share(self) -> dict[str, float]:
        """Each phase's share of the time the runs cover."""
        total: dict[str, float] = {}
        for start, end, name in self.phase_runs:
            total[name] = total.get(name, 0.0) + end - start
        span = sum(total.values())
        return {k: v / span for k, v in total.items()} if span > 0 else {k: 0.0 for k in total}


@dataclass(slots=True)
class Analysis:
    conn: Conn
    data_side: int
    t0: float
    base: int
    base_from_syn: bool
    window_scale: int | None
    """The shift applied to the ACKing side's windows (``None``: unknown, the capture missed a
    SYN, so windows are drawn unscaled)."""
    # (a) the time-sequence graph
    seg_x: array[float] = field(default_factory=lambda: array("d"))
    seg_rel: array[float] = field(default_factory=lambda: array("d"))
    seg_len: array[float] = field(default_factory=lambda: array("d"))
    seg_retrans: array[int] = field(default_factory=lambda: array("B"))
    ack_x: array[float] = field(default_factory=lambda: array("d"))
    ack_rel: array[float] = field(default_factory=lambda: array("d"))
    win_rel: array[float] = field(default_factory=lambda: array("d"))
    """ACK + the window (scaled), the right edge of what the receiver allows."""
    sack_x: array[float] = field(default_factory=lambda: array("d"))
    sack_left: array[float] = field(default_factory=lambda: array("d"))
    sack_right: array[float] = field(default_factory=lambda: array("d"))
    # (b) throughput
    interval: float = 0.0
    edges: list[float] = field(default_factory=list)
    goodput: list[float] = field(default_factory=list)
    """Mbit/s per interval: payload bytes newly acknowledged (the ACK's advance over payload)."""
    sent: list[float] = field(default_factory=list)
    """Mbit/s per interval: payload bytes sent, retransmissions included."""
    flight_x: array[float] = field(default_factory=lambda: array("d"))
    flight: array[float] = field(default_factory=lambda: array("d"))
    """Bytes in flight as the capture sees them: highest sequence sent + 1 minus highest ACK."""
    # (c) RTT
    rtt_x: array[float] = field(default_factory=lambda: array("d"))
    rtt: array[float] = field(default_factory=lambda: array("d"))
    """Seconds: from a data segment to the first ACK covering it (taken per ACK that advances,
    for the newest segment it covers; none when it covers a retransmitted byte: Karn)."""
    est_x: array[float] = field(default_factory=lambda: array("d"))
    est_srtt: array[float] = field(default_factory=lambda: array("d"))
    est_rto: array[float] = field(default_factory=lambda: array("d"))
    # the summary
    retrans_segments: list[int] = field(default_factory=lambda: [0, 0])
    retrans_bytes: list[int] = field(default_factory=lambda: [0, 0])
    unique_bytes: int = 0
    probe: ProbeView | None = None

    @property
    def ack_side(self) -> int:
        return 1 - self.data_side

    @property
    def duration(self) -> float:
        return self.conn.last_t - self.conn.first_t


def data_side_of(conn: Conn) -> int:
    """The side that sent more payload (ties: the passive opener, else side 0)."""
    if conn.payload[0] != conn.payload[1]:
        return 0 if conn.payload[0] > conn.payload[1] else 1
    return conn.syn_ack_side or 0


def analyze(conn: Conn, probe: ProbeSeries | None = None, local_side: int | None = None) -> Analysis:
    """The series of *conn* (and of its probe records, if given; *local_side* is the capture
    side that is the probed stack's end)."""
    d = data_side_of(conn)
    sides, seqs, acks, flags_a = conn.seg_side, conn.seg_seq, conn.seg_ack, conn.seg_flags
    base_from_syn = conn.syn_seen[d]
    if base_from_syn:
        base = conn.isn[d]
    else:
        first = next((i for i in range(len(conn)) if sides[i] == d), None)
        if first is not None:
            base = (seqs[first] - 1) % MOD
        else:
            first_ack = next((i for i in range(len(conn)) if flags_a[i] & ACK), None)
            base = (acks[first_ack] - 1) % MOD if first_ack is not None else 0
    scale = conn.window_scale(1 - d)
    a = Analysis(conn=conn, data_side=d, t0=conn.first_t, base=base, base_from_syn=base_from_syn, window_scale=scale)
    _capture_series(a)
    _throughput(a)
    _estimate(a)
    if probe is not None and len(probe):
        a.probe = _probe_view(a, probe, local_side == d)
    return a


def _capture_series(a: Analysis) -> None:
    conn, d, t0 = a.conn, a.data_side, a.t0
    r = 1 - d
    seq_u = (_Unwrap(a.base), _Unwrap(conn.isn[r] if conn.syn_seen[r] else conn.seg_seq[0]))  # data side, other
    ack_u = _Unwrap(a.base)
    max_data_end: list[int | None] = [None, None]  # per side: highest end of payload sent so far (relative)
    snd_max: int | None = None  # data side: highest sequence sent + 1 (SYN and FIN count)
    una: int | None = None  # highest ACK from the other side
    outstanding: list[tuple[int, float]] = []  # (end, time) of first transmissions not yet acked
    out_head = 0
    retrans_ranges: list[tuple[int, int]] = []  # retransmitted bytes not yet acked: Karn (RFC 6298 §3)
    sack_i = 0
    sack_at, sack_left, sack_right = conn.sack_at, conn.sack_left, conn.sack_right
    n_sack = len(sack_at)
    scale = a.window_scale or 0
    for i in range(len(conn)):
        side, t, flags, seq, ln = conn.seg_side[i], conn.seg_t[i], conn.seg_flags[i], conn.seg_seq[i], conn.seg_len[i]
        x = t - t0
        rel = seq_u[0 if side == d else 1](seq)
        if ln:
            prev = max_data_end[side]
            again = prev is not None and rel < prev  # repeats bytes sent before: a retransmission
            if again:
                a.retrans_segments[side] += 1
                a.retrans_bytes[side] += ln
            if side == d:
                a.seg_x.append(x)
                a.seg_rel.append(rel)
                a.seg_len.append(ln)
                a.seg_retrans.append(1 if again else 0)
                if again:
                    retrans_ranges.append((rel, rel + ln))
                else:
                    outstanding.append((rel + ln, t))
            end = rel + ln
            if prev is None or end > prev:
                max_data_end[side] = end
        if side == d:
            top = rel + ln + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
            if snd_max is None or top > snd_max:
                snd_max = top
            if una is not None:
                a.flight_x.append(x)
                a.flight.append(max(snd_max - una, 0))
        elif flags & ACK:
            ack_abs = conn.seg_ack[i]
            ack = ack_u(ack_abs)
            a.ack_x.append(x)
            a.ack_rel.append(ack)
            # RFC 7323 §2.2: a SYN's window is never scaled.
            a.win_rel.append(ack + (conn.seg_win[i] << (0 if flags & SYN else scale)))
            while sack_i < n_sack and sack_at[sack_i] < i:
                sack_i += 1
            while sack_i < n_sack and sack_at[sack_i] == i:
                a.sack_x.append(x)
                a.sack_left.append(ack + _signed(sack_left[sack_i] - ack_abs))
                a.sack_right.append(ack + _signed(sack_right[sack_i] - ack_abs))
                sack_i += 1
            if una is None:
                una = ack
                while out_head < len(outstanding) and outstanding[out_head][0] <= una:
                    out_head += 1
            elif ack > una:
                newest: float | None = None
                while out_head < len(outstanding) and outstanding[out_head][0] <= ack:
                    newest = outstanding[out_head][1]
                    out_head += 1
                tainted = any(s < ack and e > una for s, e in retrans_ranges)
                if newest is not None and not tainted:
                    a.rtt_x.append(x)
                    a.rtt.append(t - newest)
                retrans_ranges = [(s, e) for s, e in retrans_ranges if e > ack]
                una = ack
            if out_head > 4096:  # keep the list short
                del outstanding[:out_head]
                out_head = 0
            if snd_max is not None:
                a.flight_x.append(x)
                a.flight.append(max(snd_max - una, 0))
    a.unique_bytes = max(0, (max_data_end[d] or 1) - 1)


def _throughput(a: Analysis) -> None:
    duration = max(a.duration, 0.0)
    a.interval = interval = nice_interval(duration)
    n = max(1, math.ceil(duration / interval))
    good = [0] * n
    sent = [0] * n

    def bin_of(x: float) -> int:
        return min(max(int(x / interval), 0), n - 1)

    for x, ln in zip(a.seg_x, a.seg_len, strict=True):
        sent[bin_of(x)] += int(ln)
    end = int(max((r + ln for r, ln in zip(a.seg_rel, a.seg_len, strict=True)), default=1))
    delivered = 0
    for x, ack in zip(a.ack_x, a.ack_rel, strict=True):
        now = min(max(int(ack), 1), end) - 1
        if now > delivered:
            good[bin_of(x)] += now - delivered
            delivered = now
    scale = 8 / interval / 1e6
    a.edges = [k * interval for k in range(n + 1)]
    a.goodput = [v * scale for v in good]
    a.sent = [v * scale for v in sent]


def _estimate(a: Analysis) -> None:
    """RFC 6298 §2 run on the capture's samples, with our stack's estimator (layers/tcp/rtt.py)."""
    est = RttEstimator(min_rto=MIN_RTO, max_rto=MAX_RTO)
    for x, r in zip(a.rtt_x, a.rtt, strict=True):
        est.sample(r)
        if est.srtt is not None:
            a.est_x.append(x)
            a.est_srtt.append(est.srtt)
            a.est_rto.append(est.rto)


def _probe_view(a: Analysis, s: ProbeSeries, local_is_data_sender: bool) -> ProbeView:
    x = array("d", (t - a.t0 for t in s.t))
    view = ProbeView(series=s, x=x, local_is_data_sender=local_is_data_sender)
    lost, una, cwnd = s.column("lost"), s.column("snd_una"), s.column("cwnd")
    unwrap = _Unwrap(a.base)
    prev_lost = 0.0
    last_cwnd = 0.0
    cwnd_at: list[float] = []
    for i, xi in enumerate(x):
        rel = None if math.isnan(una[i]) else unwrap(int(una[i]))
        if not math.isnan(lost[i]):
            # The probe's scoreboard marked more bytes lost: drawn at SND.UNA (the first hole) on
            # the time-sequence graph when the probed end is the data sender.
            if lost[i] > prev_lost and local_is_data_sender and rel is not None:
                view.lost_x.append(xi)
                view.lost_y.append(float(rel))
                view.lost_bytes.append(lost[i] - prev_lost)
            prev_lost = lost[i]
        if not math.isnan(cwnd[i]):
            last_cwnd = cwnd[i]
        cwnd_at.append(last_cwnd)
    run_start: float | None = None
    run_phase = -1
    last_x = 0.0
    for xi, ph in zip(x, s.phase, strict=True):
        if ph < 0:
            continue
        if ph != run_phase:
            if run_start is not None:
                view.phase_runs.append((run_start, xi, s.phase_names[run_phase]))
            run_start, run_phase = xi, ph
        last_x = xi
    if run_start is not None:
        view.phase_runs.append((run_start, last_x, s.phase_names[run_phase]))
    for index, decisions in s.decisions:
        for text in decisions:
            view.decisions.append((x[index], cwnd_at[index], text))
    return view
