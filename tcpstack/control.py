"""The control socket of a running ``tcpstack up``, and the ``ss`` / ``stats`` clients.

``tcpstack up --control PATH`` listens on a Unix stream socket (default
``/run/tcpstack/<device>.sock``, mode 0600). A client sends one JSON line and reads one JSON
line back:

- ``{"cmd": "ss"}``: the connections (``tcpstack ss``);
- ``{"cmd": "stats"}``: the drop and event counters (``tcpstack stats``);
- ``{"cmd": "probe", "conn": ID|null, "after": SERIAL}``: the probe's records
  (``tcpstack probe``; tcpstack/probe.py);
- ``{"cmd": "fetch", "url": "http://IP[:PORT]/PATH", "output": FILE|null, "timeout": S}``: the
  stack itself opens a TCP connection as a client, sends an HTTP/1.0 GET and reads the reply
  (``tcpstack fetch``); the reply has the status, body size, SHA-256 and time.

A request that is not one JSON object of at most :data:`MAX_REQUEST` bytes on one line (not
UTF-8, not JSON, nested too deeply, too long, not an object, an unknown command or wrong
parameter types) gets ``{"error": "..."}`` with the reason; the server goes on serving.

The socket lives on the local filesystem only; nothing is exposed on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import os
import socket
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from framework.stack import Stack
from tcpstack.streams import find_tcp_layer

if TYPE_CHECKING:
    from layers.tcp.connection import TcpConnection
    from tcpstack.streams import StackApi

DEFAULT_DIR = Path("/run/tcpstack")
MAX_REQUEST = 16384
"""Longest request line, in bytes (a fetch with a long URL and output path takes well under 10 kB)."""
REQUEST_TIMEOUT = 5.0
"""Seconds a client has to send its request line."""

logger = structlog.get_logger("tcpstack.control")


def default_path(device: str) -> Path:
    return DEFAULT_DIR / f"{device}.sock"


def _addr(raw: tuple[bytes, int]) -> str:
    """``10.0.0.2:80``; IPv6 in brackets, ``[fd00::2]:80`` (the connection ID's form)."""
    addr, port = raw
    if len(addr) == 16:
        return f"[{ipaddress.IPv6Address(addr)}]:{port}"
    return f"{socket.inet_ntoa(addr)}:{port}"


def _ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds to the microsecond, as ``tcp_info`` carries them (µs) and ``ss``
    prints them (µs / 1000)."""
    return None if seconds is None else round(seconds * 1e6) / 1e3


def _segments(nbytes: int, mss: int) -> int:
    return -(-nbytes // mss) if nbytes > 0 else 0


def connection_row(conn: TcpConnection, now: float) -> dict[str, Any]:
    """One connection in ``ss -ti``'s names and units (docs/cli.md, "ss", has every key): times
    in milliseconds, rates in bits per second, cwnd, ssthresh and the segment counts in segments,
    sizes and windows in bytes; then our own ``id``, ``features`` and ``phase``."""
    st = conn.status()
    mss = st["mss"]
    srtt = st["srtt"]
    cwnd = max(1, st["cwnd"] // mss)
    scaled = any(getattr(e, "name", "") == "window_scaling" and e.active for e in conn.extensions)
    ato = getattr(conn.ack_policy, "timeout", None)  # the delayed_ack feature's deadline
    rate = st["delivery_rate"]
    fin = 1 if st["fin_acked"] else 0
    return {
        "state": st["state"],
        "local": _addr(st["local"]),
        "remote": _addr(st["remote"]),
        "recv_q": st["recv_queue"],
        "send_q": st["send_queue"],
        "congestion": conn.congestion_name,
        "snd_wscale": st["snd_wscale"] if scaled else None,
        "rcv_wscale": st["rcv_wscale"] if scaled else None,
        "rto": _ms(st["rto"]),
        "backoff": st["rto_backoff"],
        "rtt": _ms(srtt),
        "rttvar": _ms(st["rttvar"]) if srtt is not None else None,
        "ato": _ms(float(ato)) if isinstance(ato, (int, float)) and not isinstance(ato, bool) and ato > 0 else None,
        "mss": mss,
        "advmss": st["local_mss"] - st["option_bytes"],
        "cwnd": cwnd,
        "ssthresh": st["ssthresh"] // mss if st["ssthresh"] < INFINITE_SSTHRESH else None,
        # Linux counts bytes_sent with retransmissions, and bytes_acked and bytes_received in
        # sequence space: the SYN and FIN acknowledged count one each, the FIN received one.
        "bytes_sent": st["bytes_sent"] + st["data_in_flight"] + st["retransmitted_bytes"],
        "bytes_retrans": st["retransmitted_bytes"],
        "bytes_acked": st["bytes_sent"] + (1 if st["syn_acked"] else 0) + fin,
        "bytes_received": st["bytes_received"] + (1 if st["fin_received"] else 0),
        "segs_out": st["segs_out"],
        "segs_in": st["segs_in"],
        "send": cwnd * mss * 8 / srtt if srtt else None,  # ss: cwnd * mss * 8 / rtt
        "lastsnd": int((now - st["last_send_at"]) * 1000),
        "lastrcv": int((now - st["last_recv_at"]) * 1000),
        "lastack": int((now - st["last_ack_at"]) * 1000),
        "delivery_rate": rate * 8 if rate > 0 else None,
        "app_limited": st["rate_app_limited"] if rate > 0 else False,
        "unacked": _segments(st["in_flight"], mss),
        "retrans": st["retrans_out"],
        "retrans_total": st["retransmits"],
        "lost": _segments(st["lost_bytes"], mss),
        "sacked": _segments(st["sacked_bytes"], mss),
        "dsack_dups": st["dsack_segs"],
        "notsent": st["unsent"],
        "minrtt": _ms(st["min_rtt"]),
        "snd_wnd": st["snd_wnd"],
        "rcv_wnd": st["rcv_wnd"],
        # Ours, after Linux's.
        "id": st["number"],
        "features": sorted(conn.features),
        "phase": st["phase"],
        "cwnd_bytes": st["cwnd"],
        "ssthresh_bytes": st["ssthresh"] if st["ssthresh"] < INFINITE_SSTHRESH else None,
    }


INFINITE_SSTHRESH = 1 << 30
"""ssthresh at or above this is "arbitrarily high" (RFC 5681 §3.1): ``ss`` leaves it out."""


def connections(stack: Stack, now: float | None = None) -> list[dict[str, Any]]:
    """One row per listener and per TCP connection (:func:`connection_row`); *now* is the stack's
    clock (default: the running event loop's)."""
    tcp = find_tcp_layer(stack)
    if tcp is None:
        return []
    if now is None:
        now = asyncio.get_running_loop().time()
    rows: list[dict[str, Any]] = []
    for port in sorted(tcp.listeners):
        listener = tcp.listeners[port]
        rows.append(
            {
                "state": "LISTEN",
                "local": f"*:{port}",
                "remote": "*:*",
                "recv_q": len(listener.accept_queue),  # as ss: the accept queue, and the backlog
                "send_q": listener.backlog,
            }
        )
    for conn in list(tcp.connections.values()):
        rows.append(connection_row(conn, now))
    return rows


def parse_http_url(url: str) -> tuple[str, int, str]:
    """``http://IP[:PORT][/PATH]`` -> (IP, port, path); ValueError with the reason otherwise.
    The path is percent-encoded where it must be (RFC 3986 §2.1), so it fits a request line."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs can be fetched, not {url!r}")
    host = parts.hostname or ""
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"the host must be an IPv4 address (the stack has no resolver), not {host!r}") from None
    try:
        port = parts.port if parts.port is not None else 80
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r}: {exc}") from None
    if not 0 < port < 65536:
        raise ValueError(f"bad port in {url!r}: must be 1-65535")
    path = urllib.parse.quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + urllib.parse.quote(parts.query, safe="/%:@!$&'()*+,;=?-._~")
    return host, port, path


async def fetch(api: StackApi, url: str, *, output: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """GET *url* with the stack as the TCP client; write the body to *output* if given.
    *timeout* bounds the whole fetch (connect, request, headers and body)."""
    host, port, path = parse_http_url(url)
    loop = asyncio.get_running_loop()
    start = loop.time()
    digest = hashlib.sha256()
    size = 0
    with contextlib.ExitStack() as cleanup:
        sink = cleanup.enter_context(open(output, "wb")) if output else None  # before connecting
        async with asyncio.timeout_at(start + timeout):
            reader, writer = await api.open_connection(host, port)
            done = False

            def finish() -> None:
                # A clean close after a complete reply; a reset (abort) on any failure.
                if done:
                    writer.close()
                else:
                    writer.transport.abort()

            cleanup.callback(finish)
            local = writer.get_extra_info("sockname")
            # HTTP/1.0: the reply's body is the bytes up to Content-Length or the server's FIN,
            # never chunked (RFC 9112 §6.1 allows chunked only towards HTTP/1.1 clients).
            request = f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: tcpstack\r\n\r\n"
            writer.write(request.encode("latin-1"))
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            fields = status_line.split(" ", 2)
            if len(fields) < 2 or not fields[1].isdigit():
                raise ValueError(f"not an HTTP response: {status_line!r}")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
            length = int(headers["content-length"]) if headers.get("content-length", "").isdigit() else None
            while length is None or size < length:
                chunk = await reader.read(1 << 16 if length is None else min(1 << 16, length - size))
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
                if sink is not None:
                    sink.write(chunk)
            if length is not None and size != length:
                raise ConnectionError(f"the body ended after {size} of {length} bytes")
            done = True
    return {
        "url": url,
        "local": f"{local[0]}:{local[1]}",
        "status": int(fields[1]),
        "reason": fields[2] if len(fields) > 2 else "",
        "bytes": size,
        "sha256": digest.hexdigest(),
        "seconds": round(loop.time() - start, 6),
    }


class ControlServer:
    """Answers control requests about one stack, on the stack's own event loop."""

    def __init__(self, stack: Stack, path: Path, api: StackApi | None = None) -> None:
        self.stack = stack
        self.path = path
        self.api = api
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(self.path))
            except OSError:
                self.path.unlink()  # a leftover of a stack that did not stop cleanly
            else:
                # Another running stack (in another namespace, on a device of the same name)
                # owns it: never take it over.
                raise OSError(f"{self.path} belongs to another running stack; use --control PATH")
            finally:
                probe.close()
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.path), limit=MAX_REQUEST)
        os.chmod(self.path, 0o600)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # cancelled when the stack stops (a fetch may be running)
        try:
            reply, rest_unread = await self._answer(reader)
            if reply is not None:
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
            if rest_unread:
                # Drop the rest of the line the client is still sending, so that it can finish
                # sending and read the reply instead of being reset; bounded in time.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_skip_line(reader), REQUEST_TIMEOUT)
        except (ConnectionError, TimeoutError):
            pass  # the client went away or stalled
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[dict[str, Any] | None, bool]:
        """The reply to one request (``None``: the client sent nothing), and whether part of an
        over-long request is still unread."""
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), REQUEST_TIMEOUT)
        except TimeoutError:
            return {"error": f"no request line within {REQUEST_TIMEOUT:g} s"}, False
        except asyncio.IncompleteReadError as exc:
            # A line cut short by the client's end of input is still answered (printf '...' | nc -U).
            line = exc.partial
        except asyncio.LimitOverrunError:  # longer than the stream's limit
            return {"error": f"request longer than {MAX_REQUEST} bytes"}, True
        if not line.strip():
            return None, False  # connected and left (or sent an empty line)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return {"error": f"request is not UTF-8 text (byte {exc.start})"}, False
        try:
            request = json.loads(text)
        except RecursionError:
            return {"error": "request is nested too deeply"}, False
        except ValueError as exc:
            return {"error": f"request is not JSON: {exc}"}, False
        if not isinstance(request, dict):
            return {"error": 'request must be a JSON object, like {"cmd": "ss"}'}, False
        cmd = request.get("cmd")
        try:
            reply = await self.dispatch(cmd, request)
        except Exception as exc:  # a bug of ours, not bad input: log it, answer, keep serving
            logger.exception("control.internal_error", cmd=cmd)
            return {"error": f"internal error answering {cmd!r}: {type(exc).__name__}"}, False
        if reply is not None:
            return reply, False
        shown = repr(cmd) if len(repr(cmd)) <= 40 else repr(cmd)[:37] + "..."
        return {"error": f"unknown command {shown} (known: ss, stats, fetch, probe)"}, False

    async def dispatch(self, cmd: object, request: dict[str, Any]) -> dict[str, Any] | None:
        """The reply to a well-formed request (``None``: an unknown command)."""
        if cmd == "ss":
            return {"connections": connections(self.stack)}
        if cmd == "stats":
            tcp = find_tcp_layer(self.stack)
            return {
                "frames_in": self.stack.frames_in,
                "connections": len(tcp.connections) if tcp is not None else 0,
                **self.stack.stats.as_dict(),
            }
        if cmd == "fetch":
            return await self._fetch(request)
        if cmd == "probe":
            from tcpstack.probe import probe_reply

            return probe_reply(self.stack, request)
        return None

    async def _fetch(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.api is None:
            return {"error": "this stack has no tcp layer"}
        url, output, timeout = request.get("url"), request.get("output"), request.get("timeout", 60.0)
        if not isinstance(url, str) or not (output is None or isinstance(output, str)):
            return {"error": "fetch needs a string 'url' and an optional string 'output'"}
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
            return {"error": "fetch 'timeout' must be a number of seconds in (0, 3600]"}
        try:
            return await fetch(self.api, url, output=output, timeout=float(timeout))
        except TimeoutError:
            return {"error": f"fetch {url}: no complete reply within {timeout} s"}
        except Exception as exc:  # refused, reset, not HTTP, too many connections, a bad path ...
            return {"error": f"fetch {url}: {type(exc).__name__}: {exc}".rstrip(": ")}

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()  # Python 3.12+ wait_closed() would wait for them
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


async def _skip_line(reader: asyncio.StreamReader) -> None:
    """Read and drop input up to the end of the current line (or of the input)."""
    while chunk := await reader.read(65536):
        if b"\n" in chunk:
            return


def request(path: Path, cmd: str, *, wait: float = 5.0, **params: Any) -> dict[str, Any]:
    """Ask a running stack (waiting up to *wait* seconds); OSError if nothing listens at *path*."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(wait)
        s.connect(str(path))
        s.sendall(json.dumps({"cmd": cmd, **params}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    try:
        reply = json.loads(data)
    except ValueError:
        raise OSError("the stack closed the control connection without a reply") from None
    if not isinstance(reply, dict):
        raise OSError(f"unexpected reply from the stack: {reply!r}")
    return reply


def watch(
    cmd: str,
    path: Path,
    as_json: bool,
    *,
    interval: float,
    count: int | None = None,
    select: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
) -> int:
    """``tcpstack ss|stats --watch``: ask again every *interval* seconds (at most *count* times)
    until Ctrl-C. On a terminal the view is redrawn in place; otherwise each view follows the last,
    under a time stamp. With *as_json*, JSON lines instead (:func:`json_lines`), each line
    self-contained. *select* picks the ``ss`` rows to show (filters, ``--conn``)."""
    import time

    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console(highlight=False)

    def view() -> str | None:
        try:
            reply = request(path, cmd)
        except OSError as exc:
            print(f"tcpstack: error: no stack answers at {path}: {exc.strerror or exc}", file=sys.stderr)
            return None
        if "error" in reply:
            print(f"tcpstack: error: {reply['error']}", file=sys.stderr)
            return None
        if cmd == "ss":
            rows = reply.get("connections", [])
            rows = select(rows) if select is not None else rows
            return json_lines(rows, time.time()) if as_json else format_ss(rows)
        return json_lines([reply], time.time()) if as_json else format_stats(reply)

    shown = 0
    try:
        with contextlib.ExitStack() as stack:
            live = (
                stack.enter_context(Live(Text(""), console=console, auto_refresh=False))
                if console.is_terminal and not as_json
                else None
            )
            while count is None or shown < count:
                text = view()
                if text is None:
                    return 1
                stamp = time.strftime("%H:%M:%S")
                if as_json:  # JSON lines: no separators, each line stands alone
                    if text:
                        print(text, flush=True)
                elif live is not None:  # a terminal: redraw in place
                    live.update(Text(f"{stamp}  every {interval:g} s, Ctrl-C to stop\n{text}"))
                    live.refresh()
                else:
                    print(f"--- {stamp}\n{text}", flush=True)
                shown += 1
                if count is None or shown < count:
                    time.sleep(interval)
    except KeyboardInterrupt:
        pass
    return 0


def json_lines(records: list[dict[str, Any]], stamp: float) -> str:
    """One JSON object per line, each with ``time`` (Unix time in seconds, when the client took
    the view) first (docs/cli.md, "ss": the keys)."""
    t = round(stamp, 3)
    return "\n".join(json.dumps({"time": t, **r}, separators=(",", ":")) for r in records)


# ss's names for the states (misc/ss.c sstate_name), by RFC 9293's.
SS_STATE_NAMES = {
    "ESTABLISHED": "ESTAB",
    "SYN-SENT": "SYN-SENT",
    "SYN-RECEIVED": "SYN-RECV",
    "FIN-WAIT-1": "FIN-WAIT-1",
    "FIN-WAIT-2": "FIN-WAIT-2",
    "TIME-WAIT": "TIME-WAIT",
    "CLOSED": "UNCONN",
    "CLOSE-WAIT": "CLOSE-WAIT",
    "LAST-ACK": "LAST-ACK",
    "LISTEN": "LISTEN",
    "CLOSING": "CLOSING",
}


def _g(value: float) -> str:
    """C's ``%g``, as ss prints times."""
    return f"{value:g}"


def rate_text(bps: float) -> str:
    """A rate as ``ss`` prints one (misc/ss.c sprint_bw, without -n): three significant digits
    and a k/M/G/T prefix, then ``bps``."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if bps >= scale:
            return f"{bps / scale:.3g}{prefix}bps"
    return f"{bps:g}bps"


def tcp_info_text(r: dict[str, Any]) -> str:
    """The ``ss -ti`` line of one connection: Linux's fields in Linux's order, each only when it
    is set (non-zero), as ``ss`` prints them; then ours: ``id``, ``features``, ``phase``."""
    out = [r["congestion"]]
    if r["snd_wscale"] is not None:
        out.append(f"wscale:{r['snd_wscale']},{r['rcv_wscale']}")
    if r["rto"]:
        out.append(f"rto:{_g(r['rto'])}")
    if r["backoff"]:
        out.append(f"backoff:{r['backoff']}")
    if r["rtt"]:
        out.append(f"rtt:{_g(r['rtt'])}/{_g(r['rttvar'])}")
    if r["ato"]:
        out.append(f"ato:{_g(r['ato'])}")
    for key in ("mss", "advmss", "cwnd", "ssthresh"):
        if r[key]:
            out.append(f"{key}:{r[key]}")
    for key in ("bytes_sent", "bytes_retrans", "bytes_acked", "bytes_received", "segs_out", "segs_in"):
        if r[key]:
            out.append(f"{key}:{r[key]}")
    if r["send"]:
        out.append(f"send {rate_text(r['send'])}")
    for key in ("lastsnd", "lastrcv", "lastack"):
        if r[key]:
            out.append(f"{key}:{r[key]}")
    if r["delivery_rate"]:
        out.append(f"delivery_rate {rate_text(r['delivery_rate'])}")
        if r["app_limited"]:
            out.append("app_limited")
    if r["unacked"]:
        out.append(f"unacked:{r['unacked']}")
    if r["retrans"] or r["retrans_total"]:
        out.append(f"retrans:{r['retrans']}/{r['retrans_total']}")
    for key in ("lost", "sacked", "dsack_dups"):
        if r[key]:
            out.append(f"{key}:{r[key]}")
    if r["notsent"]:
        out.append(f"notsent:{r['notsent']}")
    if r["minrtt"]:
        out.append(f"minrtt:{_g(r['minrtt'])}")
    for key in ("snd_wnd", "rcv_wnd"):
        if r[key]:
            out.append(f"{key}:{r[key]}")
    out.append(f"id:{r['id']}")
    out.append(f"features:{','.join(r['features']) or '-'}")
    out.append(f"phase:{r['phase']}")
    return "\t " + " ".join(out)


def format_ss(rows: list[dict[str, Any]]) -> str:
    """A table like ``ss -ti``: one line per socket (state, queues, addresses), then each
    connection's TCP facts on an indented line (:func:`tcp_info_text`)."""
    marked = any("worker" in r for r in rows)  # `up --workers`: which worker holds each row
    head = ("State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port")
    table = [
        (
            SS_STATE_NAMES.get(r["state"], r["state"]),
            str(r.get("recv_q", "")),
            str(r.get("send_q", "")),
            r["local"],
            r["remote"],
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [head, *table]) for i in range(len(head))]

    def line(cells: tuple[str, ...], mark: str) -> str:
        return (mark + " ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))).rstrip()

    lines = [line(head, "W  " if marked else "")]
    for r, cells in zip(rows, table, strict=True):
        lines.append(line(cells, f"{r.get('worker', '-')!s:<3}" if marked else ""))
        if "congestion" in r:
            lines.append(tcp_info_text(r))
    return "\n".join(lines)


def format_stats(reply: dict[str, Any]) -> str:
    lines = [f"frames_in {reply.get('frames_in', 0)}", "drops:"]
    for name, n in reply.get("drops", {}).items():
        lines.append(f"  {name} {n}")
    lines.append("events:")
    for name, n in reply.get("events", {}).items():
        lines.append(f"  {name} {n}")
    if "workers" in reply:  # `up --workers`: the totals above, then each worker's own
        lines.append("workers:")
        for w in reply["workers"]:
            if "error" in w:
                lines.append(f"  w{w.get('worker')} pid {w.get('pid')}: {w['error']}")
                continue
            events = w.get("events", {})
            lines.append(
                f"  w{w.get('worker')} pid {w.get('pid')}: frames_in {w.get('frames_in', 0)}"
                f" connections {w.get('connections', 0)} opened {events.get('worker.connections', 0)}"
                f" drops {sum(w.get('drops', {}).values())}"
            )
    return "\n".join(lines)


def format_fetch(reply: dict[str, Any]) -> str:
    return (
        f"{reply['status']} {reply['reason']}  {reply['bytes']} bytes in {reply['seconds']:.3f} s"
        f"  sha256 {reply['sha256']}  (from {reply['local']})"
    )


def run_client(
    cmd: str,
    path: Path,
    as_json: bool,
    *,
    select: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
    **params: Any,
) -> int:
    """Ask once and print the answer (``ss``: *select* picks the rows; JSON lines with *as_json*)."""
    import time

    try:
        # A fetch may take its whole timeout inside the stack; wait a little longer for the reply.
        reply = request(path, cmd, wait=float(params.get("timeout", 0.0)) + 5.0, **params)
    except TimeoutError:
        print(f"tcpstack: error: the stack at {path} did not answer in time", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"tcpstack: error: no stack answers at {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if "error" in reply:
        print(f"tcpstack: error: {reply['error']}", file=sys.stderr)
        return 1
    if cmd == "ss":
        rows = reply.get("connections", [])
        rows = select(rows) if select is not None else rows
        if as_json:
            if rows:
                print(json_lines(rows, time.time()))
        else:
            print(format_ss(rows))
    elif as_json:
        print(json.dumps(reply) if cmd == "stats" else json.dumps(reply, indent=2))
    elif cmd == "fetch":
        print(format_fetch(reply))
    else:
        print(format_stats(reply))
    return 0
