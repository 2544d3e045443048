"""Sequence-number translation middleware (layer type ``seqshift``), for tests.

It adds ``offset`` to the sequence number of every inbound TCP segment (and to the SACK
blocks it carries) and subtracts it from the acknowledgment number (and SACK blocks) of every
outbound one, fixing checksums, like a sequence-randomizing firewall. Placed between the link
and ``ipv4``, it lets a test choose where the *peer's* sequence numbers fall in our stack's
view, so a transfer from the Linux kernel can be made to cross 2**32 (RFC 9293 §3.4) without
controlling the kernel's ISN. Our own sequence numbers are set with the ``tcp`` layer's
``initial_sequence``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import cast

from framework.checksum import fold, internet_checksum
from framework.context import Context
from framework.handler import BaseHandler
from framework.packet import Packet
from framework.plugins import hookimpl
from framework.registry import Registry

_U32 = struct.Struct("!I")


@dataclass(slots=True)
class SeqShiftSettings:
    offset: int = field(default=0, metadata={"min": 0, "max": 0xFFFFFFFF})
    """Added to inbound sequence numbers, subtracted from outbound acknowledgment numbers."""


class SeqShift(BaseHandler):
    """Rewrites TCP sequence/acknowledgment numbers by a fixed offset (both directions)."""

    def __init__(self, name: str, settings: SeqShiftSettings) -> None:
        self.name = name
        self.offset = settings.offset

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        if self.offset:
            out = _rewrite(bytes(cast(memoryview, pkt.payload)), self.offset, inbound=True)
            if out is not None:
                # The rewrite computes the full checksum, so the frame is valid whatever the link said.
                new = Packet.inbound(out, pkt.frame_no)
                new.csum_ok, new.upper = pkt.csum_ok, pkt.upper
                return new
        return pkt

    def send(self, pkt: Packet, ctx: Context) -> Packet | None:
        if self.offset:
            out = _rewrite(pkt.to_bytes(), self.offset, inbound=False, partial=pkt.csum_partial)
            if out is not None:
                new = Packet(out, pkt.net)
                new.csum_partial, new.gso_size = pkt.csum_partial, pkt.gso_size  # TUN offload marks
                return new
        return pkt


def _rewrite(data: bytes, offset: int, *, inbound: bool, partial: bool = False) -> bytes | None:
    """Shift one IPv4/TCP datagram; ``None`` if it is not an unfragmented TCP datagram."""
    if len(data) < 40 or data[0] >> 4 != 4 or data[9] != 6 or (data[6] & 0x3F) or data[7]:
        return None
    ihl = (data[0] & 0x0F) * 4
    total = int.from_bytes(data[2:4], "big")
    if total > len(data) or total < ihl + 20:
        return None
    buf = bytearray(data[:total])
    t = ihl
    hlen = (buf[t + 12] >> 4) * 4
    if inbound:
        _add(buf, t + 4, offset)  # SEG.SEQ
    elif buf[t + 13] & 0x10:
        _add(buf, t + 8, -offset)  # SEG.ACK
    # SACK blocks name the inbound side's sequence space too (RFC 2018).
    i = t + 20
    end = min(t + hlen, total)
    while i < end:
        kind = buf[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end or buf[i + 1] < 2:
            break
        length = buf[i + 1]
        if kind == 5 and not inbound:
            for j in range(i + 2, i + length - 7, 8):
                _add(buf, j, -offset)
                _add(buf, j + 4, -offset)
        i += length
    buf[t + 16 : t + 18] = b"\0\0"
    pseudo = int.from_bytes(buf[12:20], "big") + 6 + (total - t)
    if partial:
        # TUN offload: keep only the pseudo-header sum; the kernel completes the checksum.
        csum = 0xFFFF ^ fold(pseudo)
    else:
        csum = internet_checksum(memoryview(buf)[t:total], pseudo)
    buf[t + 16] = csum >> 8
    buf[t + 17] = csum & 0xFF
    return bytes(buf)


def _add(buf: bytearray, at: int, delta: int) -> None:
    (v,) = _U32.unpack_from(buf, at)
    _U32.pack_into(buf, at, (v + delta) & 0xFFFFFFFF)


@hookimpl
def stack_register(registry: Registry) -> None:
    registry.add_layer(
        "seqshift", SeqShift, SeqShiftSettings, doc="shift TCP sequence numbers (wrap testing)", requires=("link",)
    )
