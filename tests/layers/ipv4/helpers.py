"""Plain helpers for the IPv4/ICMP tests: independent datagram builders and output checks.

The builders pack headers with :mod:`struct` and a reference RFC 1071 checksum written here,
so the tests do not trust the code under test to build their inputs.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

from framework.pipeline import Pipeline
from framework.stack import Stack
from layers.ipv4.handler import Ipv4Layer, Ipv4Settings
from layers.ipv4.icmp import IcmpRepr
from layers.ipv4.wire import Ipv4Repr
from layers.link.handler import MemorySettings, RawIpLink
from tests.helpers import Sink

OWN = "10.0.0.2"
PEER = "10.0.0.1"
OWN_B = socket.inet_aton(OWN)
PEER_B = socket.inet_aton(PEER)

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UNKNOWN = 253  # RFC 3692 experimental: nothing in the stack claims it

DF = 0x4000
MF = 0x2000


def mtu_stack(*, link_mtu: int = 1500, **ipv4: object) -> tuple[Stack, Ipv4Layer, Sink]:
    """Like :func:`tests.helpers.ipv4_stack`, but *ipv4* may include the layer's own ``mtu``."""
    sink = Sink()
    settings = Ipv4Settings(**{"address": f"{OWN}/24", "ident_seed": 0, **ipv4})  # type: ignore[arg-type]
    ip = Ipv4Layer("ipv4", settings)
    stack = Stack(Pipeline([RawIpLink("memory", link_mtu, MemorySettings(mtu=link_mtu)), ip, sink.node()]))
    return stack, ip, sink


def rfc1071(data: bytes) -> int:
    """Reference Internet checksum: a plain loop over 16-bit words (RFC 1071 §4.1)."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def fix_checksum(datagram: bytes | bytearray) -> bytes:
    """Return *datagram* with its IPv4 header checksum recomputed over the IHL it declares."""
    buf = bytearray(datagram)
    ihl = (buf[0] & 0x0F) * 4
    buf[10:12] = b"\0\0"
    buf[10:12] = rfc1071(bytes(buf[:ihl])).to_bytes(2, "big")
    return bytes(buf)


def datagram(
    payload: bytes = b"",
    *,
    src: str = PEER,
    dst: str = OWN,
    proto: int = PROTO_TCP,
    ident: int = 0,
    flags: int = 0,
    offset: int = 0,
    ttl: int = 64,
    tos: int = 0,
    options: bytes = b"",
    total_len: int | None = None,
    version: int = 4,
) -> bytes:
    """A raw IPv4 datagram with a correct header checksum. *offset* is in bytes (multiple of 8)."""
    assert len(options) % 4 == 0 and offset % 8 == 0
    ihl = 5 + len(options) // 4
    length = 4 * ihl + len(payload) if total_len is None else total_len
    header = struct.pack(
        "!BBHHHBBH4s4s",
        (version << 4) | ihl,
        tos,
        length,
        ident,
        flags | (offset >> 3),
        ttl,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return fix_checksum(header + options) + payload


def icmp_message(type_: int, code: int, rest: bytes = b"\0\0\0\0", data: bytes = b"") -> bytes:
    """A raw ICMP message with a correct checksum."""
    msg = struct.pack("!BBH4s", type_, code, 0, rest) + data
    return msg[:2] + rfc1071(msg).to_bytes(2, "big") + msg[4:]


def echo_request(ident: int = 0x1234, seq: int = 1, data: bytes = b"ping", **ip: object) -> bytes:
    """An ICMP echo request datagram from the peer to us."""
    msg = icmp_message(8, 0, struct.pack("!HH", ident, seq), data)
    return datagram(msg, proto=PROTO_ICMP, **ip)  # type: ignore[arg-type]


def fragment_payload(payload: bytes, size: int, *, proto: int = PROTO_TCP, ident: int = 1, **ip: object) -> list[bytes]:
    """Split *payload* into fragments carrying *size* data bytes each (size a multiple of 8)."""
    assert size % 8 == 0 and size > 0
    out = []
    for off in range(0, len(payload), size):
        more = off + size < len(payload)
        out.append(
            datagram(payload[off : off + size], proto=proto, ident=ident, flags=MF if more else 0, offset=off, **ip)  # type: ignore[arg-type]
        )
    return out


def parse_output(frame: bytes) -> tuple[Ipv4Repr, bytes]:
    """Parse a frame the stack sent, with checksum verification; it must be ours and valid."""
    hdr, payload = Ipv4Repr.parse(memoryview(frame))
    assert len(frame) == hdr.header_len + hdr.payload_len
    assert hdr.src == OWN_B
    assert hdr.ttl > 0
    return hdr, bytes(payload)


def parse_icmp_output(frame: bytes) -> tuple[Ipv4Repr, IcmpRepr]:
    """Parse a single unfragmented ICMP datagram the stack sent; checksums verified."""
    hdr, payload = parse_output(frame)
    assert hdr.protocol == PROTO_ICMP and not hdr.is_fragment
    return hdr, IcmpRepr.parse(memoryview(payload))


def drops(stack: Stack) -> dict[tuple[str, str], int]:
    """The non-zero drop counters of *stack*."""
    return {k: v for k, v in stack.stats.drops.items() if v}


def feed(stack: Stack, frames: Iterable[bytes], *, now: float) -> list[bytes]:
    """Feed every frame at *now* and return what the stack sent in response."""
    for f in frames:
        stack.receive_frame(f, now=now)
    return stack.frames_to_send(now=now)


def run_timers(stack: Stack, until: float) -> list[bytes]:
    """Fire every timer due up to *until*, each at its own due time; return the frames sent."""
    while (t := stack.get_timer()) is not None and t <= until:
        stack.handle_timer(now=t)
    return stack.frames_to_send(now=until)
