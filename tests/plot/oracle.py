"""What the graphs must show, derived independently of tcpstack.plot: the capture read with
scapy, the probe file read with json/csv, and each series computed here in the plainest way.
Plus reading back what a figure drew, by the artists' gids (tcpstack/plot/draw.py)."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import StepPatch
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.utils import PcapReader

MOD = 1 << 32


@dataclass
class OSeg:
    t: float
    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    ack: int
    flags: int
    win: int
    length: int
    sack: list[tuple[int, int]]
    wscale: int | None


def read_segments(path: Path) -> list[OSeg]:
    """Every well-formed TCP segment of the file (scapy)."""
    out = []
    with PcapReader(str(path)) as reader:
        for pkt in reader:
            if TCP not in pkt:
                continue
            tcp = pkt[TCP]
            if tcp.dataofs is None or tcp.dataofs < 5:
                continue
            if IP in pkt:
                ip = pkt[IP]
                length = ip.len - 4 * ip.ihl - 4 * tcp.dataofs
            elif IPv6 in pkt:
                ip = pkt[IPv6]
                length = ip.plen - 4 * tcp.dataofs
            else:
                continue
            sack: list[tuple[int, int]] = []
            wscale = None
            for name, value in tcp.options:
                if name == "SAck":
                    sack += [(value[i], value[i + 1]) for i in range(0, len(value) - 1, 2)]
                if name == "WScale":
                    wscale = value
            out.append(
                OSeg(
                    float(pkt.time), (ip.src, tcp.sport), (ip.dst, tcp.dport), tcp.seq, tcp.ack,
                    int(tcp.flags), tcp.window, length, sack, wscale,
                )
            )  # fmt: skip
    return out


def conversation(segs: list[OSeg], a: tuple[str, int], b: tuple[str, int]) -> list[OSeg]:
    return [s for s in segs if {s.src, s.dst} == {a, b}]


@dataclass
class Expected:
    """The series of one connection's data direction, in the graphs' units (x: seconds since the
    connection's first frame; sequence numbers relative to the sender's ISN)."""

    sender: tuple[str, int]
    t0: float
    isn: int
    segments: list[tuple[float, int, int]] = field(default_factory=list)  # (x, rel seq, rel end)
    retransmissions: list[tuple[float, int, int]] = field(default_factory=list)
    acks: list[tuple[float, int]] = field(default_factory=list)
    windows: list[tuple[float, int]] = field(default_factory=list)
    sacks: list[tuple[float, int, int]] = field(default_factory=list)
    rtt: list[tuple[float, float]] = field(default_factory=list)
    sent_bytes: list[tuple[float, int]] = field(default_factory=list)
    acked_bytes: list[tuple[float, int]] = field(default_factory=list)  # (x, newly acknowledged payload bytes)


def expected(conv: list[OSeg]) -> Expected:
    payload: Counter[tuple[str, int]] = Counter()
    for s in conv:
        payload[s.src] += s.length
    sender = max(payload, key=lambda k: payload[k])
    syn = next(s for s in conv if s.src == sender and s.flags & 0x02)  # the first, if it was sent again
    other_syn = next(s for s in conv if s.src != sender and s.flags & 0x02)
    scale = other_syn.wscale if (syn.wscale is not None and other_syn.wscale is not None) else 0
    e = Expected(sender=sender, t0=conv[0].t, isn=syn.seq)

    def rel(v: int) -> int:
        return (v - e.isn) % MOD

    highest = None
    data_end = max(rel(s.seq) + s.length for s in conv if s.src == sender and s.length)
    delivered = 0
    for s in conv:
        x = s.t - e.t0
        if s.src == sender:
            if s.length:
                start, end = rel(s.seq), rel(s.seq) + s.length
                again = highest is not None and start < highest  # bytes sent before
                (e.retransmissions if again else e.segments).append((x, start, end))
                e.sent_bytes.append((x, s.length))
                highest = end if highest is None else max(highest, end)
        elif s.flags & 0x10:
            a = rel(s.ack)
            e.acks.append((x, a))
            e.windows.append((x, a + (s.win << (0 if s.flags & 0x02 else scale))))
            e.sacks += [(x, rel(left), rel(right)) for left, right in s.sack]
            now = min(max(a, 1), data_end) - 1
            if now > delivered:
                e.acked_bytes.append((x, now - delivered))
                delivered = now
    e.rtt = rtt_samples(conv, e)
    return e


def rtt_samples(conv: list[OSeg], e: Expected) -> list[tuple[float, float]]:
    """One sample per ACK that advances: from the newest first transmission it covers to the
    ACK; none when a byte it newly covers was ever retransmitted (Karn)."""
    first: list[tuple[int, float]] = []  # (rel end, t) of first transmissions
    again: list[tuple[int, int]] = []
    highest = None
    una = None
    out = []
    for s in conv:
        rel_seq = (s.seq - e.isn) % MOD
        if s.src == e.sender and s.length:
            if highest is not None and rel_seq < highest:
                again.append((rel_seq, rel_seq + s.length))
            else:
                first.append((rel_seq + s.length, s.t))
            highest = max(highest or 0, rel_seq + s.length)
        elif s.src != e.sender and s.flags & 0x10:
            a = (s.ack - e.isn) % MOD
            if una is None:
                una = a
                continue
            if a <= una:
                continue
            covered = [t for end, t in first if una < end <= a]
            tainted = any(lo < a and hi > una for lo, hi in again)
            if covered and not tainted:
                out.append((s.t - e.t0, s.t - max(covered)))
            una = a
    return out


def rfc6298(samples: list[float]) -> list[tuple[float, float]]:
    """(srtt, rto) after each sample: RFC 6298 §2 with RTO >= 1 s, <= 60 s, G = 1 ms."""
    out = []
    srtt = rttvar = None
    for r in samples:
        if srtt is None or rttvar is None:
            srtt, rttvar = r, r / 2
        else:
            rttvar = 0.75 * rttvar + 0.25 * abs(srtt - r)
            srtt = 0.875 * srtt + 0.125 * r
        out.append((srtt, min(max(srtt + max(0.001, 4 * rttvar), 1.0), 60.0)))
    return out


# ====================================================================== the probe file


def probe_records(path: Path, conn: int) -> list[dict[str, Any]]:
    """The records of *conn*, with numbers as numbers and absent values as None."""
    rows: list[dict[str, Any]] = []
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rec: dict[str, Any] = {}
                for k, v in row.items():
                    if k in ("event", "local", "remote", "flags", "phase"):
                        rec[k] = v or None
                    elif k == "decisions":
                        rec[k] = [d for d in v.split(" | ") if d] if v else []
                    else:
                        rec[k] = float(v) if v != "" else None
                rows.append(rec)
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if int(r["conn"]) == conn]


def phase_runs(records: list[dict[str, Any]], t0: float) -> list[tuple[float, float, str]]:
    runs: list[tuple[float, float, str]] = []
    for r in records:
        if not r["phase"]:
            continue
        x = r["t"] - t0
        if runs and runs[-1][2] == r["phase"]:
            runs[-1] = (runs[-1][0], x, r["phase"])
        else:
            if runs:
                runs[-1] = (runs[-1][0], x, runs[-1][2])
            runs.append((x, x, r["phase"]))
    return runs


# ====================================================================== the figure


def artists(fig: Figure, gid: str) -> list[Any]:
    found = []
    for ax in fig.axes:
        for art in [*ax.lines, *ax.collections, *ax.patches]:
            if art.get_gid() == gid:
                found.append(art)
    return found


def the(fig: Figure, gid: str) -> Any:
    [art] = artists(fig, gid)
    return art


def line_points(fig: Figure, gid: str) -> list[tuple[float, float]]:
    found = artists(fig, gid)
    if not found:
        return []
    [line] = found
    assert isinstance(line, Line2D)
    return list(zip(map(float, line.get_xdata()), map(float, line.get_ydata()), strict=True))


def bars(fig: Figure, gid: str) -> list[tuple[float, float, float]]:
    """Vertical bars drawn as one Line2D broken by NaN (x, x, NaN / low, high, NaN), as (x, low, high)."""
    line = the(fig, gid)
    assert isinstance(line, Line2D)
    xs, ys = [float(v) for v in line.get_xdata()], [float(v) for v in line.get_ydata()]
    assert len(xs) == len(ys) and len(xs) % 3 == 0
    out = []
    for i in range(0, len(xs), 3):
        assert xs[i] == xs[i + 1] and math.isnan(xs[i + 2]) and math.isnan(ys[i + 2])
        out.append((xs[i], ys[i], ys[i + 1]))
    return out


def spans(fig: Figure, gid: str) -> list[tuple[float, float]]:
    """The rectangles of a broken_barh PolyCollection as (start, end) in data x."""
    coll = the(fig, gid)
    assert isinstance(coll, PolyCollection)
    out = []
    for path in coll.get_paths():
        xs = [v[0] for v in path.vertices]
        out.append((float(min(xs)), float(max(xs))))
    return out


def stairs(fig: Figure, gid: str) -> tuple[list[float], list[float]]:
    patch = the(fig, gid)
    assert isinstance(patch, StepPatch)
    values, edges, _ = patch.get_data()
    return [float(v) for v in values], [float(e) for e in edges]


def close(a: list[tuple[float, ...]], b: list[tuple[float, ...]], tol: float = 1e-6) -> bool:
    if len(a) != len(b):
        return False
    return all(
        len(p) == len(q) and all(math.isclose(x, y, abs_tol=tol) for x, y in zip(p, q, strict=True))
        for p, q in zip(a, b, strict=True)
    )


def check_figure(fig: Figure, exp: Expected, conv: list[OSeg]) -> None:
    """Every capture-derived series of *fig* equals the oracle's (assertions)."""
    assert close(bars(fig, "tseq.segments"), exp.segments)
    assert close(bars(fig, "tseq.retransmissions"), exp.retransmissions)
    assert close(line_points(fig, "tseq.ack"), exp.acks)
    assert close(line_points(fig, "tseq.window"), exp.windows)
    assert close(bars(fig, "tseq.sack"), exp.sacks)
    assert close(line_points(fig, "rtt.capture"), [(x, r * 1000) for x, r in exp.rtt], tol=1e-6)
    good, edges = stairs(fig, "tput.goodput")
    sent, _ = stairs(fig, "tput.sent")
    step = edges[1] - edges[0]
    assert edges[0] == 0 and edges[-1] >= max(s.t for s in conv) - exp.t0
    for series, events in ((good, exp.acked_bytes), (sent, exp.sent_bytes)):
        per_bin = [0] * len(series)
        for x, n in events:
            per_bin[min(max(int(x / step), 0), len(series) - 1)] += n
        assert all(math.isclose(v * step * 1e6 / 8, n, abs_tol=1e-6) for v, n in zip(series, per_bin, strict=True))


def check_probe_figure(fig: Figure, records: list[dict[str, Any]], t0: float, isn: int) -> None:
    """Every probe-derived series of *fig* equals the probe's *records* of its connection
    (assertions): cwnd, ssthresh, in flight, srtt, RTO and RTT samples, one phase rectangle per
    run of records in a phase, one decision marker per decision, and a lost mark wherever the
    probe's ``lost`` grew (at SND.UNA relative to *isn*, the data sender's ISN)."""

    def series(key: str, scale: float = 1.0, event: str | None = None) -> list[tuple[float, float]]:
        return [
            (r["t"] - t0, r[key] * scale)
            for r in records
            if r[key] is not None and (event is None or r["event"] == event)
        ]

    for name in ("cwnd", "ssthresh", "in_flight"):
        assert close(line_points(fig, f"cwnd.{name}"), series(name)), name
    assert close(line_points(fig, "rtt.srtt"), series("srtt", 1000))
    assert close(line_points(fig, "rtt.rto"), series("rto", 1000))
    assert close(line_points(fig, "rtt.probe"), series("rtt_sample", 1000, "ack"))
    runs = phase_runs(records, t0)
    for name in {n for _, _, n in runs}:
        assert close(sorted(spans(fig, f"cwnd.phase.{name}")), [(a, b) for a, b, n in runs if n == name]), name
    drawn: Counter[tuple[float, str]] = Counter()
    for line in artists(fig, "cwnd.decision"):
        kind = line.get_label().removeprefix("decision: ").rsplit(" (", 1)[0]
        drawn.update((round(float(x), 9), kind) for x in line.get_xdata())
    want = Counter((round(r["t"] - t0, 9), text.split(",")[0]) for r in records for text in r["decisions"])
    assert drawn == want
    lost, prev = [], 0.0
    for r in records:
        if r["lost"] is not None:
            if r["lost"] > prev:
                lost.append((r["t"] - t0, float((r["snd_una"] - isn) % (1 << 32))))
            prev = r["lost"]
    assert close(line_points(fig, "tseq.lost"), lost)
