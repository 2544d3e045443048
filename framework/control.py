"""The control socket of a running ``tcpstack up``, and the ``ss`` / ``stats`` clients.

``tcpstack up --control PATH`` listens on a Unix stream socket (default
``/run/tcpstack/<device>.sock``). A client sends one JSON line, ``{"cmd": "ss"}`` or
``{"cmd": "stats"}``, and reads one JSON line back. The socket lives on the local filesystem
only; nothing is exposed on the network.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from framework.stack import Stack

DEFAULT_DIR = Path("/run/tcpstack")


def default_path(device: str) -> Path:
    return DEFAULT_DIR / f"{device}.sock"


def _addr(raw: tuple[bytes, int]) -> str:
    return f"{socket.inet_ntoa(raw[0])}:{raw[1]}"


def connections(stack: Stack) -> list[dict[str, Any]]:
    """One record per TCP connection: ``ss -ti``-like facts."""
    tcp = next((h for h in stack.pipeline.handlers if hasattr(h, "connections") and hasattr(h, "listeners")), None)
    if tcp is None:
        return []
    rows: list[dict[str, Any]] = []
    for port in sorted(getattr(tcp, "listeners", {})):
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


class ControlServer:
    """Answers ``ss`` and ``stats`` requests about one stack, on the stack's own event loop."""

    def __init__(self, stack: Stack, path: Path) -> None:
        self.stack = stack
        self.path = path
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
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        os.chmod(self.path, 0o600)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            request = json.loads(line or b"{}")
            cmd = request.get("cmd") if isinstance(request, dict) else None
            if cmd == "ss":
                reply: dict[str, Any] = {"connections": connections(self.stack)}
            elif cmd == "stats":
                reply = {"frames_in": self.stack.frames_in, **self.stack.stats.as_dict()}
            else:
                reply = {"error": f"unknown command {cmd!r} (known: ss, stats)"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ValueError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def request(path: Path, cmd: str, timeout: float = 5.0) -> dict[str, Any]:
    """Ask a running stack; raises OSError if nothing listens at *path*."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


def format_ss(rows: list[dict[str, Any]]) -> str:
    """A table like ``ss -ti``: one line per connection, then its TCP facts indented."""
    lines = [f"{'State':<13}{'Local':<22}{'Peer':<22}"]
    for r in rows:
        lines.append(f"{r['state']:<13}{r['local']:<22}{r['remote']:<22}")
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
    return "\n".join(lines)


def run_client(cmd: str, path: Path, as_json: bool) -> int:
    try:
        reply = request(path, cmd)
    except OSError as exc:
        print(f"tcpstack: error: no stack answers at {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(reply, indent=2))
    elif cmd == "ss":
        print(format_ss(reply.get("connections", [])))
    else:
        print(format_stats(reply))
    return 0
