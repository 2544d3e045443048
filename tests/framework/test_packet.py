"""The packet envelope: headers pushed outbound are serialized innermost first into one buffer."""

from __future__ import annotations

from framework.checksum import internet_checksum
from framework.packet import Packet


class TagHeader:
    """A 3-byte test header: a tag byte and the 16-bit length of what follows it."""

    def __init__(self, tag: int, order: list[int]) -> None:
        self.tag = tag
        self.order = order

    def buffer_len(self) -> int:
        return 3

    def emit(self, buf: bytearray, offset: int, payload_len: int) -> None:
        self.order.append(self.tag)
        buf[offset] = self.tag
        buf[offset + 1 : offset + 3] = payload_len.to_bytes(2, "big")


class ChecksumHeader:
    """A 2-byte test header holding the checksum of everything after it (like ICMP or TCP)."""

    def buffer_len(self) -> int:
        return 2

    def emit(self, buf: bytearray, offset: int, payload_len: int) -> None:
        following = buf[offset + 2 : offset + 2 + payload_len]
        buf[offset : offset + 2] = internet_checksum(following).to_bytes(2, "big")


def test_to_bytes_emits_innermost_first_with_payload_len() -> None:
    """Three pushed headers come out outermost first on the wire, each told how much follows it."""
    order: list[int] = []
    pkt = Packet(b"data")
    for tag in (1, 2, 3):  # 1 is pushed first: the innermost header
        pkt.push(TagHeader(tag, order))
    assert len(pkt) == 9 + 4
    out = pkt.to_bytes()
    assert order == [1, 2, 3]
    assert out == bytes([3, 0, 10, 2, 0, 7, 1, 0, 4]) + b"data"


def test_outer_header_sees_final_inner_bytes() -> None:
    """A header that checksums what follows it sees the inner headers already written."""
    order: list[int] = []
    pkt = Packet(b"payload!")
    pkt.push(TagHeader(7, order))
    pkt.push(ChecksumHeader())
    out = pkt.to_bytes()
    assert out[2:] == bytes([7, 0, 8]) + b"payload!"
    assert int.from_bytes(out[:2], "big") == internet_checksum(out[2:])


def test_to_bytes_caches_result() -> None:
    """After to_bytes the headers are gone and the bytes are the payload, returned as-is next time."""
    pkt = Packet(b"xy")
    pkt.push(TagHeader(9, []))
    first = pkt.to_bytes()
    assert pkt.headers == []
    assert pkt.payload is first
    assert pkt.to_bytes() is first
    assert len(pkt) == len(first) == 5


def test_no_headers_returns_payload_bytes() -> None:
    """Without headers to_bytes returns the payload as bytes, whatever buffer type it was."""
    raw = b"abc"
    assert Packet(raw).to_bytes() is raw
    for payload in (bytearray(b"abc"), memoryview(b"xabcx")[1:4]):
        pkt = Packet(payload)
        out = pkt.to_bytes()
        assert type(out) is bytes
        assert out == b"abc"
        assert pkt.to_bytes() is out


def test_empty_payload_with_header() -> None:
    """A header over an empty payload is told that zero bytes follow it."""
    pkt = Packet(b"")
    pkt.push(TagHeader(5, []))
    assert pkt.to_bytes() == bytes([5, 0, 0])


def test_inbound_packet_is_a_view_with_frame_number() -> None:
    """Packet.inbound wraps the frame in a memoryview and records the frame number."""
    pkt = Packet.inbound(b"frame", frame_no=7)
    assert isinstance(pkt.payload, memoryview)
    assert bytes(pkt.payload) == b"frame"
    assert pkt.frame_no == 7
    assert pkt.net is None
    assert pkt.error is None
