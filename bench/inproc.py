"""In-process stack driving for bench/segment.py and bench/conn_memory.py.

One sans-IO stack (memory link, ipv4 at 10.0.0.1, tcp) built from a configuration dict, and a
synthetic peer (10.0.0.2) that writes its frames with ``struct`` (Linux-like: the SYN carries
MSS 1460, SACK-permitted, timestamps and window scale 7) and reads the stack's frames with
``struct`` too. The stack is used only through its public sans-IO API (``receive_frame``,
``frames_to_send``, ``dispatch_events``, ``get_timer``, ``handle_timer``), the TCP layer's user
calls (``listen``, ``touch``) and the connection's (``send``, ``read``), so the same script
runs on every layout of the code: :func:`load` imports the configuration module from
``tcpstack.config`` (since issue 10) or ``framework.config`` (before), from the checkout
given as *root*.
"""

from __future__ import annotations

import importlib
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOCAL = bytes([10, 0, 0, 1])
PEER = bytes([10, 0, 0, 2])
PORT = 80
ACK, PSH, SYN, RST, FIN = 0x10, 0x08, 0x02, 0x04, 0x01
PEER_WSCALE = 7
LINUX_MSS = 1460
MASK32 = 0xFFFFFFFF

_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_TS_OPT = struct.Struct("!BBBBII")  # NOP, NOP, kind 8, length 10, TSval, TSecr


class Layout:
    """What :func:`load` found: how to build a stack on this checkout."""

    def __init__(self, root: Path, module: str, config_from_dict: Callable[..., Any], build_stack: Callable[..., Any]):
        self.root = root
        self.module = module
        self.config_from_dict = config_from_dict
        self.build_stack = build_stack

    def describe(self) -> dict[str, str]:
        return {"root": str(self.root), "config_module": self.module, "commit": git_commit(self.root)}


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load(root: Path | None) -> Layout:
    """Put the checkout *root* first on ``sys.path``, quiet the logs (warnings only, to stderr)
    and find the configuration API."""
    root = (root or Path(__file__).resolve().parent.parent).resolve()
    sys.path.insert(0, str(root))
    _quiet_logging()
    for name in ("tcpstack.config", "framework.config"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(mod, "config_from_dict") and hasattr(mod, "build_stack"):
            layout = Layout(root, name, mod.config_from_dict, mod.build_stack)
            src = Path(mod.__file__ or "").resolve()
            if root not in src.parents:
                raise SystemExit(f"{name} was imported from {src}, not from the checkout {root}")
            return layout
    raise SystemExit(f"no configuration API (tcpstack.config or framework.config) under {root}")


def _quiet_logging() -> None:
    """Every decision is logged at debug level; a benchmark keeps warnings and errors only."""
    for name in ("tcpstack", "tcpstack.logging", "framework.logging"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        configure = getattr(mod, "configure_logging", None)
        if configure is not None:
            configure(level="warning", stream=sys.stderr)
            return
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def config_dict(features: str, **tcp: Any) -> dict[str, Any]:
    """Memory link, ipv4 at 10.0.0.1/24, tcp. *features*: ``"default"`` (the built-in default
    plugin set) or ``"none"`` (no features, Reno congestion control); ``"probe"`` is the default
    set with the probe on (records held in memory only), ``"probe=PATH"`` the same writing its
    records to PATH (issue 12; bench/probe_cost.py)."""
    tcp_layer: dict[str, Any] = {"type": "tcp", "isn_secret": "00" * 16, "port_seed": 1, **tcp}
    out: dict[str, Any] = {}
    if features == "none":
        tcp_layer["default_features"] = False
        tcp_layer["congestion_control"] = "reno"
    elif features == "probe" or features.startswith("probe="):
        tcp_layer["features"] = {**tcp_layer.get("features", {}), "probe": {}}
        if features.startswith("probe="):
            out["plugins"] = {"probe": {"path": features.partition("=")[2]}}
    elif features != "default":
        raise ValueError(f"features must be 'default', 'none', 'probe' or 'probe=PATH', not {features!r}")
    return {
        **out,
        "layers": [
            {"type": "memory", "mtu": 1500},
            {"type": "ipv4", "address": "10.0.0.1/24"},
            tcp_layer,
        ],
    }


def build(layout: Layout, features: str, **tcp: Any) -> Any:
    """A stack from :func:`config_dict`, with the built-in plugins only (no entry points)."""
    data = config_dict(features, **tcp)
    try:
        cfg = layout.config_from_dict(data, entry_points=False)
    except TypeError:  # a layout whose config_from_dict has no entry_points keyword
        cfg = layout.config_from_dict(data)
    return layout.build_stack(cfg)


# ---------------------------------------------------------------------------- frames


def ones_sum(data: bytes) -> int:
    """The 16-bit one's complement sum of *data* (RFC 1071), not yet folded or inverted."""
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(
    sport: int,
    seq: int,
    ack: int,
    flags: int,
    *,
    window: int = 0xFFFF,
    options: bytes = b"",
    payload: bytes = b"",
    payload_sum: int | None = None,
    dport: int = PORT,
) -> bytes:
    """An IPv4 frame from the peer to the stack with one TCP segment (RFC 9293 §3.1), its
    checksums correct. *payload_sum*: :func:`ones_sum` of *payload* (even length), if known."""
    doff = (20 + len(options)) // 4
    hdr = _TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, doff << 4, flags, window, 0, 0) + options
    seg_len = len(hdr) + len(payload)
    if payload_sum is None:
        payload_sum = ones_sum(payload)
    csum = _fold(ones_sum(PEER + LOCAL + struct.pack("!BBH", 0, 6, seg_len) + hdr) + payload_sum)
    ip = _IP.pack(0x45, 0, 20 + seg_len, 0, 0x4000, 64, 6, 0, PEER, LOCAL)
    ip = ip[:10] + _fold(ones_sum(ip)).to_bytes(2, "big") + ip[12:]
    return ip + hdr[:16] + csum.to_bytes(2, "big") + hdr[18:] + payload


def ts_option(tsval: int, tsecr: int) -> bytes:
    return _TS_OPT.pack(1, 1, 8, 10, tsval & 0xFFFFFFFF, tsecr & 0xFFFFFFFF)


def syn_options(tsval: int) -> bytes:
    """Linux's SYN options: MSS, SACK-permitted, timestamps, NOP, window scale."""
    return (
        struct.pack("!BBH", 2, 4, LINUX_MSS)
        + bytes((4, 2))
        + struct.pack("!BBII", 8, 10, tsval, 0)
        + bytes((1, 3, 3, PEER_WSCALE))
    )


class Seg:
    """The fields of one TCP segment the stack sent that the peer needs."""

    __slots__ = ("ack", "dport", "flags", "length", "seq", "sport", "tsval", "window", "wscale")

    def __init__(self, frm: bytes) -> None:
        ihl = (frm[0] & 0x0F) * 4
        total = int.from_bytes(frm[2:4], "big")
        self.sport, self.dport, self.seq, self.ack, off, self.flags, self.window = struct.unpack_from(
            "!HHIIBBH", frm, ihl
        )
        doff = (off >> 4) * 4
        self.length = total - ihl - doff
        self.tsval: int | None = None
        self.wscale: int | None = None
        opts = frm[ihl + 20 : ihl + doff]
        i = 0
        while i < len(opts):
            kind = opts[i]
            if kind == 0:
                break
            if kind == 1:
                i += 1
                continue
            if i + 1 >= len(opts) or opts[i + 1] < 2:
                break
            size = opts[i + 1]
            if kind == 8 and size == 10:
                self.tsval = int.from_bytes(opts[i + 2 : i + 6], "big")
            elif kind == 3 and size == 3:
                self.wscale = opts[i + 2]
            i += size


class Conn:
    """The peer's side of one connection: its sequence numbers and the timestamps to echo."""

    def __init__(self, sport: int, snd_nxt: int, rcv_nxt: int, ts: bool, ts_recent: int, tsval: int) -> None:
        self.sport = sport
        self.snd_nxt = snd_nxt  # the peer's next sequence number
        self.rcv_nxt = rcv_nxt  # the next byte the peer expects from the stack
        self.ts = ts  # timestamps negotiated (RFC 7323 §3.2)
        self.ts_recent = ts_recent  # the stack's latest TSval, echoed in TSecr
        self.tsval = tsval  # the peer's clock

    def options(self) -> bytes:
        return ts_option(self.tsval, self.ts_recent) if self.ts else b""


class Listener:
    """The application above the stack: on any event, read what is readable (and tell the
    layer, as the streams API does), and call *on_event* if given."""

    def __init__(self, tcp: Any, on_event: Callable[[Any], None] | None = None) -> None:
        self.tcp = tcp
        self.bytes_read = 0
        self.on_event = on_event
        self.conns: list[Any] = []

    def accept(self, conn: Any) -> None:
        conn.listener = self
        self.conns.append(conn)

    def handle_event(self, conn: Any, event: object) -> None:
        data = conn.read()
        if data:
            self.bytes_read += len(data)
            self.tcp.touch(conn)
        if self.on_event is not None:
            self.on_event(conn)


def drive(stack: Any, frm: bytes, now: float) -> list[bytes]:
    """One frame in, as a driver does it: receive, send what is queued, deliver the events,
    run the timers that are due."""
    stack.receive_frame(frm, now=now)
    out: list[bytes] = stack.frames_to_send(now=now)
    stack.dispatch_events()
    t = stack.get_timer()
    if t is not None and t <= now:
        stack.handle_timer(now=now)
        out += stack.frames_to_send(now=now)
        stack.dispatch_events()
    return out


def handshake(stack: Any, sport: int, now: float, *, iss: int = 1_000_000, tsval: int = 1000) -> Conn:
    """Open one connection from the peer's port *sport* to the stack's port 80 (which must
    listen): SYN, the stack's SYN-ACK, ACK."""
    out = drive(stack, frame(sport, iss, 0, SYN, window=64240, options=syn_options(tsval)), now)
    synacks = [s for s in map(Seg, out) if s.flags & (SYN | ACK) == SYN | ACK and s.dport == sport]
    if len(synacks) != 1:
        raise RuntimeError(f"expected one SYN-ACK for port {sport}, got {len(out)} frames")
    sa = synacks[0]
    ts = sa.tsval is not None
    conn = Conn(sport, iss + 1, sa.seq + 1, ts, sa.tsval or 0, tsval)
    # RFC 7323 §2.2: the window field of a SYN is never scaled; afterwards ours is, by 7 (if agreed).
    win = 0xFFFF if sa.wscale is not None else 64240
    drive(stack, frame(sport, conn.snd_nxt, conn.rcv_nxt, ACK, window=win, options=conn.options()), now)
    return conn
