"""A connection's summary, and the self-contained HTML page of ``tcpstack plot -o OUT.html``
(the figures embedded as PNG data, a style sheet inline, no script and no external file)."""

from __future__ import annotations

import base64
import html
import io
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from matplotlib.figure import Figure

from tcpstack.plot.analysis import Analysis, decision_kind
from tcpstack.plot.capture import format_endpoint

__all__ = ["Section", "render_page", "summary"]


@dataclass(slots=True)
class Section:
    """One connection of the page."""

    anchor: str
    title: str
    rows: list[tuple[str, str]]
    figure: Figure


def _ms(values: Iterable[float]) -> str:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "no samples"
    return (
        f"{min(vals) * 1000:.3f} / {sum(vals) / len(vals) * 1000:.3f} / {max(vals) * 1000:.3f} ms "
        f"(min / avg / max of {len(vals)})"
    )


def summary(a: Analysis, ident: str, ends: tuple[str, str], local_side: int | None) -> list[tuple[str, str]]:
    """The summary rows of one connection: (label, text)."""
    c = a.conn
    name = [format_endpoint(c.ends[0]), format_endpoint(c.ends[1])]
    if local_side is not None:
        name[local_side] += " (local)"
    d, r = a.data_side, a.ack_side
    rows = [
        ("connection", ident),
        ("addresses", f"{ends[0]} - {ends[1]}"),
        ("data direction", f"{name[d]} → {name[r]}"),
        ("start", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(c.first_t)) + f".{int(c.first_t % 1 * 1e6):06d} UTC"),
        ("duration", f"{a.duration:.6f} s"),
    ]
    for side in (d, r):
        rows.append(
            (
                f"{name[side]} → {name[1 - side]}",
                f"{c.payload[side]} payload bytes in {c.segments[side]} segments; "
                f"retransmitted {a.retrans_segments[side]} segments ({a.retrans_bytes[side]} bytes)",
            )
        )
    rows.append(
        (
            "goodput",
            f"{a.unique_bytes} bytes"
            + (f", {a.unique_bytes * 8 / a.duration / 1e6:.3f} Mbit/s" if a.duration > 0 else ""),
        )
    )
    rows.append(("RTT (capture)", _ms(a.rtt)))
    hs = []
    for side in (0, 1):
        if c.syn_seen[side]:
            ws, mss = c.wscale[side], c.mss[side]
            hs.append(
                f"{name[side]}: MSS {mss if mss is not None else '-'}, "
                f"window scale {ws if ws is not None else 'none'}, SACK {'permitted' if c.sack_ok[side] else 'no'}"
            )
    rows.append(("handshake", "; ".join(hs) if hs else "not in the capture"))
    p = a.probe
    if p is not None:
        s = p.series
        rows.append(("RTT (probe)", _ms(p.rtt_samples()[1])))
        share = p.phase_share()
        rows.append(("phases (probe)", ", ".join(f"{k.replace('_', ' ')} {v:.1%}" for k, v in share.items()) or "-"))
        cwnd = [v for v in s.column("cwnd") if not math.isnan(v)]
        retrans = [v for v in s.column("retrans") if not math.isnan(v)]
        sacked = [v for v in s.column("sacked") if not math.isnan(v)]
        lost = [v for v in s.column("lost") if not math.isnan(v)]
        ce = [v for v in s.column("ce") if not math.isnan(v)]
        ece = [v for v in s.column("ece") if not math.isnan(v)]
        features = []
        if sacked and max(sacked) > 0:
            features.append(f"SACK (up to {int(max(sacked))} bytes SACKed)")
        if lost and max(lost) > 0:
            features.append(f"loss marking (up to {int(max(lost))} bytes marked lost)")
        if (ce and max(ce) > 0) or (ece and max(ece) > 0):
            features.append(f"ECN ({int(max(ce, default=0))} CE received, {int(max(ece, default=0))} ECE ACKs)")
        rows.append(("features seen (probe)", ", ".join(features) or "none of SACK, loss marking, ECN at work"))
        rows.append(
            (
                "probe",
                f"{len(s)} records; cwnd max {int(max(cwnd, default=0))} bytes, last {int(cwnd[-1]) if cwnd else '-'}; "
                f"{int(retrans[-1]) if retrans else 0} segments retransmitted",
            )
        )
        kinds = Counter(decision_kind(text) for _, _, text in p.decisions)
        rows.append(("decisions (probe)", ", ".join(f"{k} x{n}" for k, n in kinds.most_common()) or "none"))
    return rows


def png_data(fig: Figure, dpi: int = 90) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; vertical-align: top; font-size: 0.9em; }
th { background: #f4f4f4; }
img { max-width: 100%; border: 1px solid #ddd; }
section { margin-bottom: 3em; }
.note { color: #666; font-size: 0.9em; }
"""


def render_page(title: str, notes: Sequence[str], sections: Sequence[Section]) -> str:
    """The HTML page: an index of the connections, then each one's summary and graphs."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    parts += [f'<p class="note">{e(n)}</p>' for n in notes]
    parts.append("<table><tr><th>connection</th><th>addresses</th><th>data</th></tr>")
    for sec in sections:
        rows = dict(sec.rows)
        parts.append(
            f'<tr><td><a href="#{e(sec.anchor)}">{e(rows.get("connection", ""))}</a></td>'
            f"<td>{e(rows.get('addresses', ''))}</td><td>{e(rows.get('goodput', ''))}</td></tr>"
        )
    parts.append("</table>")
    for sec in sections:
        parts.append(f'<section id="{e(sec.anchor)}"><h2>{e(sec.title)}</h2><table>')
        parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in sec.rows]
        parts.append("</table>")
        parts.append(f'<img alt="{e(sec.title)}: graphs" src="data:image/png;base64,{png_data(sec.figure)}">')
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
