"""The graphs of one connection (matplotlib, drawn without pyplot: no global state, no display).

Every artist that carries data has a ``gid`` naming what it shows, so that what was drawn can be
read back from the figure (tests/plot compare it with the capture and the probe):

- (a) time-sequence: ``tseq.segments`` and ``tseq.retransmissions`` (Line2D of vertical bars, one
  per segment, from its relative sequence number to the end of its payload: x, x, NaN, ... and
  low, high, NaN, ...), ``tseq.ack`` and ``tseq.window`` (Line2D steps: the ACK and ACK + window),
  ``tseq.sack`` (bars as the segments': one per SACK block), ``tseq.lost`` (Line2D markers: where
  the probe marked bytes lost);
- (b) throughput: ``tput.goodput`` and ``tput.sent`` (StepPatch, Mbit/s per interval),
  ``tput.flight`` (Line2D on the right-hand axis: bytes in flight as the capture sees them);
- (c) RTT: ``rtt.capture`` and ``rtt.probe`` (Line2D markers, ms), ``rtt.srtt`` and ``rtt.rto``
  (Line2D steps, ms; from the probe, or RFC 6298 run on the capture's samples);
- (d) congestion control, from the probe only: ``cwnd.cwnd``, ``cwnd.ssthresh``,
  ``cwnd.in_flight`` (Line2D steps, bytes), ``cwnd.phase.<phase>`` (PolyCollection: one
  rectangle per run of records in that phase), ``cwnd.decision`` (Line2D markers per kind of
  decision; the kind is in the artist's label).
"""

from __future__ import annotations

from array import array
from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tcpstack.plot.analysis import Analysis, decision_kind

__all__ = ["PHASE_COLORS", "draw"]

PHASE_COLORS = {
    "slow_start": "#b6e3b6",
    "css": "#f3e79b",
    "congestion_avoidance": "#bcd7f0",
    "fast_recovery": "#f7c08a",
    "rto_recovery": "#f29b9b",
}
#: Kinds of decision with a marker of their own (the most frequent); the others share one.
DECISION_KINDS = 8
_MARKERS = "ov^sDP*Xh"

_LEGEND: dict[str, Any] = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": "small", "frameon": False}


def draw(a: Analysis, title: str) -> Figure:
    """The figure of one connection: three graphs, four with probe records."""
    rows = 4 if a.probe is not None else 3
    fig = Figure(figsize=(13, 3.3 * rows), layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    fig.suptitle(title, fontsize="medium")
    _time_sequence(axes[0], a)
    _throughput(axes[1], a)
    _rtt(axes[2], a)
    if a.probe is not None:
        _cwnd(axes[3], a)
    axes[-1].set_xlabel("seconds since the connection's first frame")
    return fig


def _np(values: Any) -> npt.NDArray[np.float64]:
    """An ``array('d')`` (or a list) as a numpy array, without a copy where possible: a capture of
    a million segments must not cost a Python object per number here."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float64, copy=False)
    if isinstance(values, array) and values.typecode == "d":
        return np.frombuffer(values, dtype=np.float64)
    return np.asarray(values, dtype=np.float64)


def _bars(x: Any, low: Any, high: Any) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Vertical bars as one line broken by NaN: x0, x0, NaN, x1, x1, NaN... One path of 3n points
    costs 48 bytes a bar; a LineCollection would make a Path object of each."""
    xs = _np(x)
    n = len(xs)
    bx = np.full(3 * n, np.nan)
    by = np.full(3 * n, np.nan)
    bx[0::3] = xs
    bx[1::3] = xs
    by[0::3] = _np(low)
    by[1::3] = _np(high)
    return bx, by


def _time_sequence(ax: Axes, a: Analysis) -> None:
    ax.set_title("(a) time-sequence (tcptrace style)", loc="left", fontsize="medium")
    x, rel, length = _np(a.seg_x), _np(a.seg_rel), _np(a.seg_len)
    again = np.frombuffer(a.seg_retrans, dtype=np.uint8).astype(bool)
    for gid, sel, color, width, label in (
        ("tseq.segments", ~again, "#1f4e9c", 1.2, "segment"),
        ("tseq.retransmissions", again, "#d62728", 2.5, "retransmission"),
    ):
        bx, by = _bars(x[sel], rel[sel], rel[sel] + length[sel])
        n = int(sel.sum())
        ax.plot(bx, by, color=color, lw=width, solid_capstyle="butt", label=f"{label} ({n})", gid=gid, zorder=3)
    # A bar is a few pixels tall in a long transfer: an "R" beside each retransmission (as tcptrace does).
    ax.plot(
        x[again],
        rel[again] + length[again] / 2,
        linestyle="none",
        marker="$R$",
        ms=7,
        color="#d62728",
        zorder=4,
    )
    ax.plot(_np(a.ack_x), _np(a.ack_rel), drawstyle="steps-post", color="#2ca02c", lw=1, label="ACK", gid="tseq.ack")
    scale = "window scale unknown: unscaled" if a.window_scale is None else f"scale {a.window_scale}"
    ax.plot(
        _np(a.ack_x),
        _np(a.win_rel),
        drawstyle="steps-post",
        color="#bcbd22",
        lw=1,
        label=f"ACK + receive window ({scale})",
        gid="tseq.window",
    )
    bx, by = _bars(a.sack_x, a.sack_left, a.sack_right)
    ax.plot(
        bx,
        by,
        color="#9467bd",
        lw=2.5,
        alpha=0.7,
        solid_capstyle="butt",
        label=f"SACK block ({len(a.sack_x)})",
        gid="tseq.sack",
    )
    if a.probe is not None and a.probe.lost_x:
        ax.plot(
            a.probe.lost_x,
            a.probe.lost_y,
            "kx",
            ms=7,
            mew=1.5,
            label=f"marked lost (probe, {len(a.probe.lost_x)})",
            gid="tseq.lost",
        )
    base = "ISN" if a.base_from_syn else "first sequence number seen - 1"
    ax.set_ylabel(f"sequence number\n(relative to the {base})")
    ax.autoscale_view()
    ax.legend(**_LEGEND)


def _throughput(ax: Axes, a: Analysis) -> None:
    ax.set_title(f"(b) throughput per {_duration(a.interval)} interval", loc="left", fontsize="medium")
    ax.stairs(a.sent, a.edges, color="#ff7f0e", lw=1, label="sent (with retransmissions)", gid="tput.sent")
    ax.stairs(a.goodput, a.edges, color="#1f4e9c", lw=1.5, label="goodput (newly acknowledged)", gid="tput.goodput")
    ax.set_ylabel("Mbit/s")
    ax.set_ylim(bottom=0)
    twin = ax.twinx()
    ax.set_zorder(twin.get_zorder() + 1)  # the throughput steps in front of the flight line
    ax.patch.set_visible(False)
    twin.plot(
        _np(a.flight_x),
        _np(a.flight),
        drawstyle="steps-post",
        color="#aaaaaa",
        lw=0.6,
        label="bytes in flight (capture)",
        gid="tput.flight",
    )
    twin.set_ylabel("bytes in flight")
    twin.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], **{**_LEGEND, "bbox_to_anchor": (1.07, 1.0)})


def _rtt(ax: Axes, a: Analysis) -> None:
    ax.set_title("(c) round-trip time", loc="left", fontsize="medium")
    ms = _np(a.rtt) * 1000
    ax.plot(_np(a.rtt_x), ms, ".", ms=3, color="#1f4e9c", label=f"sample (capture, {len(ms)})", gid="rtt.capture")
    p = a.probe
    if p is not None:
        x, v = p.rtt_samples()
        ax.plot(x, v * 1000, "+", ms=4, color="#ff7f0e", label=f"sample (probe, {len(x)})", gid="rtt.probe")
        sx, srtt = p.values("srtt")
        rx, rto = p.values("rto")
        source = "probe"
    else:
        sx, srtt, rx, rto = _np(a.est_x), _np(a.est_srtt), _np(a.est_x), _np(a.est_rto)
        source = "RFC 6298 from the capture's samples"
    ax.plot(sx, srtt * 1000, drawstyle="steps-post", color="#2ca02c", label=f"srtt ({source})", gid="rtt.srtt")
    ax.plot(
        rx,
        rto * 1000,
        drawstyle="steps-post",
        color="#d62728",
        lw=1,
        label=f"RTO ({source})",
        gid="rtt.rto",
    )
    ax.set_ylabel("ms (log scale)")
    if bool((ms > 0).any()) or (p is not None and len(sx)):
        ax.set_yscale("log")
    ax.legend(**_LEGEND)


def _cwnd(ax: Axes, a: Analysis) -> None:
    p = a.probe
    assert p is not None
    ax.set_title("(d) congestion control (probe)", loc="left", fontsize="medium")
    runs: dict[str, list[tuple[float, float]]] = {}
    for start, end, name in p.phase_runs:
        runs.setdefault(name, []).append((start, end - start))
    share = p.phase_share()
    for name, spans in runs.items():
        ax.broken_barh(
            spans,
            (0, 1),
            transform=ax.get_xaxis_transform(),
            facecolors=PHASE_COLORS.get(name, "#dddddd"),
            alpha=0.6,
            linewidth=0,
            label=f"{name.replace('_', ' ')} ({share.get(name, 0):.0%})",
            gid=f"cwnd.phase.{name}",
        )
    for field, color, label in (
        ("cwnd", "#1f4e9c", "cwnd"),
        ("ssthresh", "#d62728", "ssthresh"),
        ("in_flight", "#7f7f7f", "bytes in flight"),
    ):
        x, v = p.values(field)
        ax.plot(
            x,
            v,
            drawstyle="steps-post",
            color=color,
            lw=1.2 if field == "cwnd" else 1,
            label=label,
            gid=f"cwnd.{field}",
        )
    kinds = Counter(decision_kind(text) for _, _, text in p.decisions)
    shown = [k for k, _ in kinds.most_common(DECISION_KINDS)]
    for n, kind in enumerate([*shown, None] if len(kinds) > len(shown) else shown):
        pts = [
            (x, y)
            for x, y, text in p.decisions
            if (decision_kind(text) == kind if kind else decision_kind(text) not in shown)
        ]
        label = f"decision: {kind} ({len(pts)})" if kind else f"other decisions ({len(pts)})"
        ax.plot(
            [q[0] for q in pts],
            [q[1] for q in pts],
            _MARKERS[n % len(_MARKERS)],
            ms=4,
            color="black",
            fillstyle="none",
            linestyle="none",
            label=label,
            gid="cwnd.decision",
        )
    ax.set_ylabel("bytes")
    ax.set_ylim(bottom=0)
    ax.legend(**_LEGEND)


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:g} s"
    return f"{seconds * 1000:g} ms"
