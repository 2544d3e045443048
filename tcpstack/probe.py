"""``tcpstack probe``: the probe's records from a running stack (docs/observability.md, "The probe").

The server half answers the control command ``{"cmd": "probe", "conn": ID, "after": SERIAL}``
(:func:`probe_reply`, served by tcpstack/control.py): the records the stack holds of each probed
connection (plugins/probe.py keeps the last ``ring`` of each), or only of the connection *ID* (its
number, or the socket pair ``LOCAL-REMOTE``), and with *after* only those made after the record
with that serial number (the reply's ``cursor`` is the latest serial: the next poll's *after*).
Each connection's entry says the per-connection index of its first record returned (``from``), so
the client (:func:`run`) sees a gap: it prints the records once, or with ``--watch`` polls and
prints the new ones only, saying when a ring overflowed between two polls (records lost to it).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from framework.stack import Stack
from plugins.probe import FIELDS, ConnProbe, endpoint, json_row, sink_of
from tcpstack import ssfilter
from tcpstack.streams import find_tcp_layer

ENABLE_HINT = (
    "enable it with 'tcpstack up --probe FILE' or '--feature probe' (in Python: open_stack(probe=...), "
    "features={'probe': {}})"
)


def parse_conn_id(text: str) -> int | tuple[str, str]:
    """A connection ID as ``ss``, ``probe`` and ``plot`` take it (:func:`tcpstack.ssfilter.parse_conn_id`):
    its number, or the socket pair ``LOCAL-REMOTE`` with both ends normalized as the probe's
    records write them (``IP:PORT``, IPv6 in brackets, compressed).

    :raises ValueError: saying what an ID looks like."""
    cid = ssfilter.parse_conn_id(text)
    if cid.number is not None:
        return cid.number
    assert cid.local is not None and cid.remote is not None
    return endpoint(cid.local[0].packed, cid.local[1]), endpoint(cid.remote[0].packed, cid.remote[1])


# ====================================================================== the stack's side


def probe_reply(stack: Stack, request: dict[str, Any]) -> dict[str, Any]:
    """The reply to a ``probe`` control request (see the module's docstring)."""
    sink = sink_of(stack)
    if sink is None:
        return {
            "error": "this stack has no probe (no tcp layer, or the plugin plugins.probe is disabled)",
            "code": "no_sink",
        }
    raw_conn, after = request.get("conn"), request.get("after", 0)
    if isinstance(after, bool) or not isinstance(after, int):
        return {"error": "probe 'after' must be a record serial number (the 'cursor' of the last reply)"}
    probes: list[ConnProbe]
    if raw_conn is None:
        probes = sink.probes()
    else:
        if isinstance(raw_conn, bool) or not isinstance(raw_conn, (int, str)):
            return {"error": "probe 'conn' must be a connection number or a socket pair LOCAL-REMOTE"}
        try:
            wanted = raw_conn if isinstance(raw_conn, int) else parse_conn_id(raw_conn)
        except ValueError as exc:
            return {"error": str(exc)}
        probes = [p for p in sink.probes() if _matches(wanted, p.number, p.local, p.remote)]
        if not probes:
            return _not_probed(stack, wanted)
    out = []
    for probe in probes:
        ring = probe.ring
        new = 0  # how many of the held records are newer than *after* (serials grow along the ring)
        for r in reversed(ring):
            serial = r[-1]  # (the serial number, last in the tuple)
            if isinstance(serial, int) and serial <= after:
                break
            new += 1
        if not new and after:
            continue  # nothing new on this connection
        records = list(ring)[len(ring) - new :]
        out.append(
            {
                "conn": probe.number,
                "local": probe.local,
                "remote": probe.remote,
                "closed": probe.closed,
                "first": probe.first,
                "from": probe.count - new,
                "next": probe.count,
                "records": [json_row(r) for r in records],
            }
        )
    tcp = find_tcp_layer(stack)
    unprobed = sum(1 for c in tcp.connections.values() if c.probe is None) if tcp is not None else 0
    return {
        "fields": list(FIELDS),
        "cursor": sink.records,
        "ring": sink.settings.ring,
        "connections": out,
        "without_probe": unprobed,
        **sink.summary(),
    }


def _matches(wanted: int | tuple[str, str], number: int, local: str, remote: str) -> bool:
    if isinstance(wanted, int):
        return number == wanted
    return wanted in ((local, remote), (remote, local))  # (either way round)


def _not_probed(stack: Stack, wanted: int | tuple[str, str]) -> dict[str, Any]:
    tcp = find_tcp_layer(stack)
    conns = list(tcp.connections.values()) if tcp is not None else []
    for c in conns:
        if _matches(wanted, c.number, endpoint(*c.local), endpoint(*c.remote)):
            return {
                "error": f"connection {c.number} ({endpoint(*c.local)}-{endpoint(*c.remote)}) was opened without "
                f"the probe feature; {ENABLE_HINT}",
                "code": "no_probe",
            }
    shown = wanted if isinstance(wanted, int) else "-".join(wanted)
    known = ", ".join(str(c.number) for c in sorted(conns, key=lambda c: c.number)[:20]) or "none"
    return {"error": f"no connection {shown} in this stack (its connections: {known})", "code": "unknown"}


# ====================================================================== the client


def format_header() -> str:
    return (
        f"{'time':<15} {'conn':>4} {'event':<5} {'seq':>10} {'ack':>10} {'len':>5} {'flags':<5} "
        f"{'snd_una':>10} {'snd_nxt':>10} {'cwnd':>8} {'ssthresh':>8} {'flight':>8} {'pipe':>8} "
        f"{'srtt_ms':>8} {'rto_ms':>7} {'retr':>5} {'phase':<20} decisions"
    )


def _cell(value: Any, width: int, scale: float | None = None) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if scale is not None:
        return f"{value * scale:>{width}.3f}"
    return f"{value:>{width}}"


def format_record(r: dict[str, Any]) -> str:
    """One record as a line of text (the columns of :func:`format_header`)."""
    t = r["t"]
    stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f"{t % 1:.6f}"[1:]
    text = (
        f"{stamp:<15} {r['conn']:>4} {r['event']:<5} {_cell(r['seq'], 10)} {_cell(r['ack'], 10)} "
        f"{_cell(r['len'], 5)} {r['flags'] or '-':<5} {r['snd_una']:>10} {r['snd_nxt']:>10} {r['cwnd']:>8} "
        f"{_cell(r['ssthresh'], 8)} {r['in_flight']:>8} {r['pipe']:>8} {_cell(r['srtt'], 8, 1000)} "
        f"{_cell(r['rto'], 7, 1000)} {r['retrans']:>5} {r['phase']:<20} {'; '.join(r['decisions'])}"
    )
    if r["event"] == "open":
        text += f"  {r['local']}-{r['remote']}"
    return text.rstrip()


def _ask(path: Path, params: dict[str, Any]) -> dict[str, Any] | str:
    from tcpstack.control import request

    try:
        reply = request(path, "probe", wait=30.0, **params)
    except TimeoutError:
        return f"the stack at {path} did not answer in time"
    except OSError as exc:
        return f"no stack answers at {path}: {exc.strerror or exc}"
    if "error" in reply:
        return str(reply["error"])
    return reply


def _rows(reply: dict[str, Any]) -> list[dict[str, Any]]:
    fields = reply.get("fields", list(FIELDS))
    rows = [dict(zip(fields, rec, strict=False)) for c in reply.get("connections", []) for rec in c["records"]]
    rows.sort(key=lambda r: r["t"])  # (a connection's records are in time order already)
    return rows


def run(path: Path, conn: str | None, *, as_json: bool, watch: float | None = None, count: int | None = None) -> int:
    """``tcpstack probe``: print the records the stack holds (with *watch*: then every *watch*
    seconds the new ones, until Ctrl-C or *count* polls). Exit status 1 with one line on error."""
    params: dict[str, Any] = {}
    if conn is not None:
        try:
            wanted = parse_conn_id(conn)
        except ValueError as exc:
            print(f"tcpstack: error: --conn: {exc}", file=sys.stderr)
            return 2
        params["conn"] = wanted if isinstance(wanted, int) else "-".join(wanted)
    seen: dict[int, int] = {}  # per connection: the index of the next record expected
    polls = 0
    after: object = 0  # the last reply's cursor (a list of them from 'up --workers')
    header = False
    try:
        while True:
            reply = _ask(path, {**params, "after": after})
            if isinstance(reply, str):
                print(f"tcpstack: error: {reply}", file=sys.stderr)
                return 1
            polls += 1
            after = reply.get("cursor", after)
            for c in reply.get("connections", []):
                number = int(c["conn"])
                expected = seen.get(number, 0)
                if c["from"] > expected:
                    what = "between two polls" if number in seen else "before this view"
                    print(
                        f"tcpstack: note: connection {number}: {c['from'] - expected} earlier records are no longer "
                        f"held (its ring of {reply.get('ring')} records overflowed {what})",
                        file=sys.stderr,
                    )
                seen[number] = c["next"]
            rows = _rows(reply)
            if polls == 1 and not reply.get("connections"):
                unprobed = reply.get("without_probe", 0)
                why = f"; {unprobed} connections were opened without it ({ENABLE_HINT})" if unprobed else ""
                print(f"tcpstack: no probed connection{why}", file=sys.stderr)
            for r in rows:
                if as_json:
                    print(json.dumps(r, separators=(",", ":")))
                else:
                    if not header:
                        print(format_header())
                        header = True
                    print(format_record(r))
            sys.stdout.flush()
            if watch is None or (count is not None and polls >= count):
                return 0
            time.sleep(watch)
    except KeyboardInterrupt:
        return 0
