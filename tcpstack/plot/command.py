"""``tcpstack plot CAPTURE [--probe FILE] [--conn ID]... -o OUT.png|OUT.svg|OUT.html``.

Connection IDs: with a probe file, the probe's ``conn`` numbers (its ``open`` records give each
one's socket pair and ISS, matched to the capture's connections); without one, the connections
numbered 1, 2, ... in order of first appearance in the capture. A socket pair
``LOCAL-REMOTE`` (either order; IPv6 in brackets) names a connection either way.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from tcpstack.plot.capture import (
    Capture,
    CaptureError,
    Conn,
    Endpoint,
    format_endpoint,
    normalize_address,
    read_capture,
)
from tcpstack.plot.probe import OpenRecord, ProbeError, ProbeFile, read_probe

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tcpstack.plot.analysis import Analysis

__all__ = [
    "FORMATS",
    "MAX_CONNECTIONS",
    "Drawn",
    "PlotError",
    "Result",
    "figures",
    "page",
    "parse_conn_id",
    "parse_endpoint",
    "plot",
    "run",
]

#: The page shows at most this many connections unless they are named with --conn: the largest.
MAX_CONNECTIONS = 20
FORMATS = (".png", ".svg", ".html")
EXIT_FAILURE, EXIT_USAGE = 1, 2


class PlotError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


_ENDPOINT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>[0-9.]+)):(?P<port>\d{1,5})$")


def parse_endpoint(text: str) -> Endpoint:
    """``10.0.0.2:80`` or ``[fd00::2]:80`` (raises ValueError)."""
    m = _ENDPOINT.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not ADDRESS:PORT (IPv6 in brackets: [fd00::1]:80)")
    port = int(m["port"])
    if port > 65535:
        raise ValueError(f"{text!r}: port {port} is not in 0-65535")
    addr = m["v6"] or m["v4"]
    try:
        return normalize_address(addr), port
    except ValueError:
        raise ValueError(f"{text!r}: {addr!r} is not an IP address") from None


def parse_conn_id(text: str) -> int | tuple[Endpoint, Endpoint]:
    """A connection number, or the two ends of a socket pair ``LOCAL-REMOTE`` (raises ValueError):
    the one connection-ID syntax of ``ss``, ``probe`` and ``plot`` (:func:`tcpstack.ssfilter.parse_conn_id`)."""
    from tcpstack.ssfilter import FilterError
    from tcpstack.ssfilter import parse_conn_id as parse_id

    try:
        cid = parse_id(text)
    except FilterError as exc:
        raise ValueError(str(exc)) from None
    if cid.number is not None:
        return cid.number
    assert cid.local is not None and cid.remote is not None
    return (str(cid.local[0]), cid.local[1]), (str(cid.remote[0]), cid.remote[1])


@dataclass(slots=True)
class Entry:
    """A connection of the capture with its ID (and its probe ``open`` record, if any)."""

    conn: Conn
    number: int | None
    opened: OpenRecord | None
    local_side: int | None

    @property
    def pair(self) -> str:
        """``LOCAL-REMOTE`` with a probe's open record; otherwise the passive opener first."""
        if self.local_side is not None:
            ends = self.conn.ends[self.local_side], self.conn.ends[1 - self.local_side]
        else:
            ends = self.conn.server_first()
        return f"{format_endpoint(ends[0])}-{format_endpoint(ends[1])}"

    @property
    def label(self) -> str:
        return f"connection {self.number} ({self.pair})" if self.number is not None else f"connection {self.pair}"


def _entries(cap: Capture, probe: ProbeFile | None) -> list[Entry]:
    if probe is None:
        return [Entry(c, c.index, None, None) for c in cap.conns]
    by_pair: dict[frozenset[Endpoint], list[Conn]] = {}
    for c in cap.conns:
        by_pair.setdefault(frozenset(c.ends), []).append(c)
    matched: dict[int, tuple[int, OpenRecord, int]] = {}  # capture index -> (number, open, local side)
    for rec in sorted(probe.opens.values(), key=lambda r: r.t):
        try:
            local, remote = parse_endpoint(rec.local), parse_endpoint(rec.remote)
        except ValueError:
            continue
        cands = [c for c in by_pair.get(frozenset((local, remote)), []) if c.index not in matched]
        if local == remote or not cands:
            continue
        side_of = {c.index: (0 if c.ends[0] == local else 1) for c in cands}
        exact = [
            c
            for c in cands
            if rec.iss is not None and c.syn_seen[side_of[c.index]] and c.isn[side_of[c.index]] == rec.iss
        ]
        if exact:
            best = exact[0]
        else:  # the ISS is not in the capture: the connection whose frames are nearest the open record
            best = min(
                cands,
                key=lambda c: (
                    0.0 if c.first_t <= rec.t <= c.last_t else min(abs(c.first_t - rec.t), abs(c.last_t - rec.t))
                ),
            )
        matched[best.index] = (rec.conn, rec, side_of[best.index])
    out = []
    for c in cap.conns:
        m = matched.get(c.index)
        out.append(Entry(c, m[0], m[1], m[2]) if m else Entry(c, None, None, None))
    return out


def _select(ids: list[str], entries: list[Entry], cap: Capture, probe: ProbeFile | None) -> list[Entry]:
    chosen: list[Entry] = []
    for text in ids:
        try:
            ident = parse_conn_id(text)
        except ValueError as exc:
            raise PlotError(f"--conn {exc}", EXIT_USAGE) from None
        if isinstance(ident, int):
            found = [e for e in entries if e.number == ident]
            if not found:
                if probe is not None and ident in probe.opens:
                    rec = probe.opens[ident]
                    pair = f"{rec.local}-{rec.remote}"
                    raise PlotError(f"--conn {ident}: connection {ident} of {probe.path} ({pair}) is not in {cap.path}")
                if probe is not None:
                    known = sorted(probe.opens)
                    raise PlotError(f"--conn {ident}: {probe.path} has no connection {ident} ({_numbers(known)})")
                known = [e.conn.index for e in entries]
                raise PlotError(f"--conn {ident}: {cap.path} has no connection {ident} ({_numbers(known)})")
        else:
            want = frozenset(ident)
            found = [e for e in entries if frozenset(e.conn.ends) == want]
            if not found:
                a, b = format_endpoint(ident[0]), format_endpoint(ident[1])
                raise PlotError(f"--conn {text}: no connection between {a} and {b} in {cap.path}")
            # The same pair reused: the one with most data (name it by number to pick another).
            found = [max(found, key=lambda e: e.conn.data_bytes)]
        if found[0] not in chosen:
            chosen.append(found[0])
    return chosen


def _numbers(nums: list[int]) -> str:
    if not nums:
        return "it has none"
    shown = ", ".join(map(str, nums[:10]))
    return f"its connections: {shown}" + (f" and {len(nums) - 10} more" if len(nums) > 10 else "")


@dataclass(slots=True)
class Drawn:
    """A connection drawn: its ID, its series and its figure."""

    entry: Entry
    analysis: Analysis
    figure: Figure
    title: str


@dataclass(slots=True)
class Result:
    capture: Capture
    probe: ProbeFile | None
    drawn: list[Drawn]


def _check_ids(ids: list[str]) -> None:
    for text in ids:  # a typo costs nothing: checked before any file is read
        try:
            parse_conn_id(text)
        except ValueError as exc:
            raise PlotError(f"--conn {exc}", EXIT_USAGE) from None


def figures(
    capture: str,
    *,
    probe: str | None = None,
    conns: list[str] | None = None,
    many: bool = False,
    err: TextIO | None = None,
) -> Result:
    """Read *capture* (and *probe*) and draw the connections: those *conns* names, else the one
    with most data, or with *many* every connection with data (at most :data:`MAX_CONNECTIONS`,
    largest first). Notes (skipped frames, which connection was picked) go to *err*.

    :raises PlotError: with the message to show and the exit status.
    """
    # Imported here: matplotlib costs half a second, which only this command pays.
    from tcpstack.plot.analysis import analyze
    from tcpstack.plot.draw import draw

    err = err if err is not None else sys.stderr
    ids = conns or []
    _check_ids(ids)
    try:
        cap = read_capture(capture)
    except CaptureError as exc:
        raise PlotError(f"{capture}: {exc}") from None
    pf: ProbeFile | None = None
    if probe is not None:
        try:
            pf = read_probe(probe)
        except ProbeError as exc:
            raise PlotError(f"{probe}: {exc}") from None
        if pf.skipped:
            what = ", ".join(f"{why} {n}" for why, n in pf.skipped.most_common())
            print(f"tcpstack plot: {probe}: skipped {sum(pf.skipped.values())} bad records ({what})", file=err)
    st = cap.stats
    for note in st.notes:
        print(f"tcpstack plot: {capture}: {note}", file=err)
    if st.malformed():
        what = ", ".join(
            f"{why.removeprefix('malformed: ')} {n}"
            for why, n in st.skipped.most_common()
            if why.startswith("malformed")
        )
        print(f"tcpstack plot: {capture}: skipped {st.malformed()} of {st.frames} frames ({what})", file=err)
    entries = _entries(cap, pf)
    if not entries:
        raise PlotError(f"{capture}: no TCP segment in its {st.frames} frames")
    if ids:
        chosen = _select(ids, entries, cap, pf)
    else:
        ranked = sorted(entries, key=lambda e: (-e.conn.data_bytes, e.conn.index))
        with_data = [e for e in ranked if e.conn.data_bytes] or ranked
        if many:
            chosen = with_data[:MAX_CONNECTIONS]
            if len(with_data) > MAX_CONNECTIONS:
                print(
                    f"tcpstack plot: {len(with_data)} connections; the page shows the {MAX_CONNECTIONS} with most data "
                    "(name others with --conn)",
                    file=err,
                )
        else:
            chosen = with_data[:1]
            if len(entries) > 1:
                print(
                    f"tcpstack plot: {len(entries)} connections; drawing {chosen[0].label}, the one with most data",
                    file=err,
                )
    series = pf.load({e.number for e in chosen if e.number is not None and e.opened is not None}) if pf else {}
    drawn = []
    for e in chosen:
        s = series.get(e.number) if e.number is not None else None
        a = analyze(e.conn, s, e.local_side)
        d, r = a.data_side, a.ack_side
        ident = f"connection {e.number}" if e.number is not None else "connection"
        title = f"{ident}: {format_endpoint(e.conn.ends[d])} → {format_endpoint(e.conn.ends[r])}"
        if pf is not None and s is None:
            title += " (not in the probe file)"
        drawn.append(Drawn(e, a, draw(a, title), title))
    return Result(cap, pf, drawn)


def plot(
    capture: str,
    out: str,
    *,
    probe: str | None = None,
    conns: list[str] | None = None,
    err: TextIO | None = None,
) -> Result:
    """Draw *capture*'s connections to *out* (``.png``, ``.svg`` or ``.html``).

    :raises PlotError: with the message to show and the exit status.
    """
    out_path = Path(out)
    fmt = out_path.suffix.lower()
    if fmt not in FORMATS:
        raise PlotError(f"-o {out}: the name must end in .png, .svg or .html", EXIT_USAGE)
    if out_path.is_dir():
        raise PlotError(f"-o {out}: is a directory", EXIT_USAGE)
    if not out_path.parent.is_dir():
        raise PlotError(f"-o {out}: the directory {out_path.parent} does not exist", EXIT_USAGE)
    ids = conns or []
    _check_ids(ids)
    if len(ids) > 1 and fmt != ".html":
        raise PlotError(f"-o {out}: a {fmt} file shows one connection; name one --conn, or write .html", EXIT_USAGE)
    result = figures(capture, probe=probe, conns=ids, many=fmt == ".html", err=err)
    try:
        if fmt == ".html":
            out_path.write_text(page(result, capture, probe), encoding="utf-8")
        else:
            result.drawn[0].figure.savefig(out_path, format=fmt[1:], dpi=100)
    except OSError as exc:
        raise PlotError(f"cannot write {out}: {exc.strerror or exc}") from None
    return result


def page(result: Result, capture: str, probe: str | None) -> str:
    """The HTML page of the connections drawn."""
    from tcpstack.plot.page import Section, render_page, summary

    sections = []
    for d in result.drawn:
        e = d.entry
        ends = e.pair.split("-", 1)
        rows = summary(d.analysis, str(e.number) if e.number is not None else e.pair, (ends[0], ends[1]), e.local_side)
        sections.append(Section(anchor=f"c{e.conn.index}", title=d.title, rows=rows, figure=d.figure))
    cap = result.capture
    st = cap.stats
    notes = [
        f"capture: {capture} ({st.frames} frames, {st.tcp} TCP segments, "
        f"{len(cap.conns)} connection{'' if len(cap.conns) == 1 else 's'})"
        + (f"; probe: {probe}" if probe else "; no probe file: no congestion-control graph")
    ]
    if st.malformed() or st.notes:
        notes.append(f"skipped {st.malformed()} malformed frames" + "".join(f"; {n}" for n in st.notes))
    return render_page(f"tcpstack plot: {cap.path.name}", notes, sections)


def run(capture: str, out: str, probe: str | None, conns: list[str] | None) -> int:
    """The command: 0, or the error on stderr and its exit status."""
    try:
        plot(capture, out, probe=probe, conns=conns)
    except PlotError as exc:
        print(f"tcpstack: error: {exc}", file=sys.stderr)
        return exc.code
    return 0
