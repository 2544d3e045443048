"""The control socket of a running ``tcpstack up``, and the ``ss`` / ``stats`` clients.

``tcpstack up --control PATH`` listens on a Unix stream socket (default
``/run/tcpstack/<device>.sock``, mode 0600). A client sends one JSON line and reads one JSON
line back:

- ``{"cmd": "ss"}``: the connections (``tcpstack ss``);
- ``{"cmd": "stats"}``: the drop and event counters (``tcpstack stats``);
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from framework.stack import Stack
from tcpstack.streams import find_tcp_layer

if TYPE_CHECKING:
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
    return f"{socket.inet_ntoa(raw[0])}:{raw[1]}"


def connections(stack: Stack) -> list[dict[str, Any]]:
    """One record per TCP connection: ``ss -ti``-like facts."""
    tcp = find_tcp_layer(stack)
    if tcp is None:
        return []
    rows: list[dict[str, Any]] = []
    for port in sorted(tcp.listeners):
        rows.append({"state": "LISTEN", "local": f"*:{port}", "remote": "*:*"})
    for conn in list(tcp.connections.values()):
        st = conn.status()
        rows.append(
            {
                "state": st["state"],
                "local": _addr(st["local"]),
                "remote": _addr(st["remote"]),
                "features": sorted(conn.features),
                "congestion": conn.congestion_name,
                "srtt_ms": round(st["srtt"] * 1000, 3) if st["srtt"] is not None else None,
                "rto_ms": round(st["rto"] * 1000, 1),
                "cwnd": st["cwnd"],
                "ssthresh": st["ssthresh"] if st["ssthresh"] < (1 << 30) else None,
                "mss": st["mss"],
                "in_flight": st["in_flight"],
                "snd_wnd": st["snd_wnd"],
                "rcv_wnd": st["rcv_wnd"],
                "send_queue": st["send_queue"],
                "recv_queue": st["recv_queue"],
                "retransmits": st["retransmits"],
                "bytes_sent": st["bytes_sent"],
                "bytes_received": st["bytes_received"],
            }
        )
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
        return {"error": f"unknown command {shown} (known: ss, stats, fetch)"}, False

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


def watch(cmd: str, path: Path, as_json: bool, *, interval: float, count: int | None = None) -> int:
    """``tcpstack ss --watch``: ask again every *interval* seconds (at most *count* times) until
    Ctrl-C. On a terminal the view is redrawn in place; otherwise each view follows the last,
    under a time stamp."""
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
        if as_json:
            return json.dumps(reply, indent=2)
        return format_ss(reply.get("connections", [])) if cmd == "ss" else format_stats(reply)

    shown = 0
    try:
        with contextlib.ExitStack() as stack:
            live = (
                stack.enter_context(Live(Text(""), console=console, auto_refresh=False))
                if console.is_terminal
                else None
            )
            while count is None or shown < count:
                text = view()
                if text is None:
                    return 1
                stamp = time.strftime("%H:%M:%S")
                if live is not None:  # a terminal: redraw in place
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


def format_ss(rows: list[dict[str, Any]]) -> str:
    """A table like ``ss -ti``: one line per connection, then its TCP facts indented."""
    marked = any("worker" in r for r in rows)  # `up --workers`: which worker holds each row
    lines = [("W  " if marked else "") + f"{'State':<13}{'Local':<22}{'Peer':<22}"]
    for r in rows:
        mark = f"{r.get('worker', '-')!s:<3}" if marked else ""
        lines.append(f"{mark}{r['state']:<13}{r['local']:<22}{r['remote']:<22}")
        if "cwnd" in r:
            srtt = f"{r['srtt_ms']}ms" if r["srtt_ms"] is not None else "-"
            lines.append(
                f"\t{r['congestion']} rtt:{srtt} rto:{r['rto_ms']}ms mss:{r['mss']} cwnd:{r['cwnd']}"
                f" ssthresh:{r['ssthresh'] if r['ssthresh'] is not None else '-'} unacked:{r['in_flight']}"
                f" snd_wnd:{r['snd_wnd']} rcv_wnd:{r['rcv_wnd']} send_q:{r['send_queue']} recv_q:{r['recv_queue']}"
                f" retrans:{r['retransmits']} sent:{r['bytes_sent']} received:{r['bytes_received']}"
                f" features:{','.join(r['features']) or '-'}"
            )
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


def run_client(cmd: str, path: Path, as_json: bool, **params: Any) -> int:
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
    if as_json:
        print(json.dumps(reply, indent=2))
    elif cmd == "fetch":
        print(format_fetch(reply))
    elif cmd == "ss":
        print(format_ss(reply.get("connections", [])))
    else:
        print(format_stats(reply))
    return 0
