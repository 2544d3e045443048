"""Shared helpers for the middleware tests: IPv4 datagrams, a recording top layer, a stack."""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

from framework.checksum import internet_checksum
from framework.context import Context
from framework.handler import BaseHandler, PacketHandler
from framework.packet import Packet
from framework.pipeline import Pipeline
from framework.stack import Stack
from layers.link.handler import MemorySettings, RawIpLink

PROTO_TEST = 253  # RFC 3692 experimental protocol number: nothing in the stack claims it


class Ipv4TestHeader:
    """A minimal IPv4 header (no options) that emits itself with a valid checksum."""

    def __init__(self, src: str = "10.0.0.1", dst: str = "10.0.0.2", proto: int = PROTO_TEST, ident: int = 0) -> None:
        self.src = socket.inet_aton(src)
        self.dst = socket.inet_aton(dst)
        self.proto = proto
        self.ident = ident

    def buffer_len(self) -> int:
        return 20

    def emit(self, buf: bytearray, offset: int, payload_len: int) -> None:
        hdr = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, self.ident, 0, 64, self.proto, 0, self.src, self.dst
        )
        buf[offset : offset + 20] = hdr
        struct.pack_into("!H", buf, offset + 10, internet_checksum(hdr))


def ipv4_datagram(
    payload: bytes = b"",
    *,
    src: str = "10.0.0.1",
    dst: str = "10.0.0.2",
    proto: int = PROTO_TEST,
    ident: int = 0,
) -> bytes:
    """A valid IPv4 datagram (20-byte header, correct checksum) carrying *payload*."""
    pkt = Packet(payload)
    pkt.push(Ipv4TestHeader(src, dst, proto, ident))
    return pkt.to_bytes()


def outbound(payload: bytes = b"", *, ident: int = 0, proto: int = PROTO_TEST) -> Packet:
    """An outbound packet with an unserialized IPv4 header pushed, as the network layer leaves it."""
    pkt = Packet(payload)
    pkt.push(Ipv4TestHeader("10.0.0.2", "10.0.0.1", proto, ident))
    return pkt


def ident_of(datagram: bytes) -> int:
    """The IPv4 identification field of *datagram*."""
    return int.from_bytes(datagram[4:6], "big")


def bit_difference(a: bytes, b: bytes) -> int:
    """Number of differing bits between two equal-length byte strings."""
    assert len(a) == len(b)
    return sum((x ^ y).bit_count() for x, y in zip(a, b, strict=True))


class Top(BaseHandler):
    """A top layer that records every packet it receives and consumes it."""

    def __init__(self, name: str = "top") -> None:
        self.name = name
        self.packets: list[Packet] = []
        self.received: list[bytes] = []

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        self.packets.append(pkt)
        self.received.append(bytes(pkt.payload))
        return None


def make_stack(*middle: PacketHandler) -> tuple[Stack, Top]:
    """A stack of [memory link, *middle, Top] and its top layer."""
    top = Top()
    handlers: Sequence[PacketHandler] = [RawIpLink("memory", 1500, MemorySettings()), *middle, top]
    return Stack(Pipeline(handlers)), top


def run_timers(stack: Stack, until: float) -> None:
    """Fire every timer due up to *until*, each at its own due time."""
    while (t := stack.get_timer()) is not None and t <= until:
        stack.handle_timer(now=t)
