"""The graphs of one connection (matplotlib, drawn without pyplot: no global state, no display).

Every artist that carries data has a ``gid`` naming what it shows, so that what was drawn can be
read back from the figure (tests/plot compare it with the capture and the probe):

- (a) time-sequence: ``tseq.segments`` and ``tseq.retransmissions`` (LineCollection: one vertical
  bar per segment, from its relative sequence number to the end of its payload), ``tseq.ack`` and
  ``tseq.window`` (Line2D steps: the ACK and ACK + window), ``tseq.sack`` (LineCollection: one bar
  per SACK block), ``tseq.lost`` (Line2D markers: where the probe marked bytes lost);
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

from collections import Counter
from typing import Any

from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
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


def _bars(x: Any, low: Any, high: Any) -> list[list[tuple[float, float]]]:
    return [[(xi, lo), (xi, hi)] for xi, lo, hi in zip(x, low, high, strict=True)]


def _time_sequence(ax: Axes, a: Analysis) -> None:
    ax.set_title("(a) time-sequence (tcptrace style)", loc="left", fontsize="medium")
    new = [i for i, r in enumerate(a.seg_retrans) if not r]
    again = [i for i, r in enumerate(a.seg_retrans) if r]
    for gid, idx, color, width, label in (
        ("tseq.segments", new, "#1f4e9c", 1.2, "segment"),
        ("tseq.retransmissions", again, "#d62728", 2.5, "retransmission"),
    ):
        segs = [[(a.seg_x[i], a.seg_rel[i]), (a.seg_x[i], a.seg_rel[i] + a.seg_len[i])] for i in idx]
        lc = LineCollection(segs, colors=color, linewidths=width, label=f"{label} ({len(segs)})", gid=gid, zorder=3)
        ax.add_collection(lc)
    # A bar is a few pixels tall in a long transfer: an "R" beside each retransmission (as tcptrace does).
    ax.plot(
        [a.seg_x[i] for i in again],
        [a.seg_rel[i] + a.seg_len[i] / 2 for i in again],
        linestyle="none",
        marker="$R$",
        ms=7,
        color="#d62728",
        zorder=4,
    )
    ax.plot(a.ack_x, a.ack_rel, drawstyle="steps-post", color="#2ca02c", lw=1, label="ACK", gid="tseq.ack")
    scale = "window scale unknown: unscaled" if a.window_scale is None else f"scale {a.window_scale}"
    ax.plot(
        a.ack_x,
        a.win_rel,
        drawstyle="steps-post",
        color="#bcbd22",
        lw=1,
        label=f"ACK + receive window ({scale})",
        gid="tseq.window",
    )
    sack = LineCollection(
        _bars(a.sack_x, a.sack_left, a.sack_right),
        colors="#9467bd",
        linewidths=2.5,
        alpha=0.7,
        label=f"SACK block ({len(a.sack_x)})",
        gid="tseq.sack",
    )
    ax.add_collection(sack)
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
    twin.plot(
        a.flight_x,
        a.flight,
        drawstyle="steps-post",
        color="#7f7f7f",
        lw=0.8,
        alpha=0.8,
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
    ms = [r * 1000 for r in a.rtt]
    ax.plot(a.rtt_x, ms, ".", ms=3, color="#1f4e9c", label=f"sample (capture, {len(ms)})", gid="rtt.capture")
    p = a.probe
    if p is not None:
        x, v = p.rtt_samples()
        ax.plot(
            x, [s * 1000 for s in v], "+", ms=4, color="#ff7f0e", label=f"sample (probe, {len(x)})", gid="rtt.probe"
        )
        sx, srtt = p.values("srtt")
        rx, rto = p.values("rto")
        source = "probe"
    else:
        sx, srtt, rx, rto = a.est_x, a.est_srtt, a.est_x, a.est_rto
        source = "RFC 6298 from the capture's samples"
    ax.plot(
        sx, [s * 1000 for s in srtt], drawstyle="steps-post", color="#2ca02c", label=f"srtt ({source})", gid="rtt.srtt"
    )
    ax.plot(
        rx,
        [s * 1000 for s in rto],
        drawstyle="steps-post",
        color="#d62728",
        lw=1,
        label=f"RTO ({source})",
        gid="rtt.rto",
    )
    ax.set_ylabel("ms (log scale)")
    if any(v > 0 for v in ms) or (p is not None and sx):
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
