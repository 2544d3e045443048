"""bench/packets.py builds what the stack's own parsers accept: IPv4 and TCP checksums over the
pseudo-header (RFC 791 §3.1, RFC 9293 §3.1), options as RFC 9293 §3.2 / RFC 7323 / RFC 2018
lay them out, ICMP checksums (RFC 792); and the checksum repairs the fuzzer uses are exact."""

from __future__ import annotations

import pytest

from bench import packets as P
from framework.checksum import internet_checksum
from framework.errors import WireError
from layers.ipv4.wire import Ipv4Repr
from layers.tcp.wire import TcpRepr, pseudo_base

SRC, DST = P.addr("10.0.0.1"), P.addr("10.0.0.2")


def parse(frame: bytes) -> tuple[Ipv4Repr, TcpRepr]:
    ip, payload = Ipv4Repr.parse(memoryview(frame))  # header checksum verified
    return ip, TcpRepr.parse(payload, pseudo_base(ip.src, ip.dst))  # TCP checksum verified


def test_a_tcp_frame_with_every_option_parses_with_valid_checksums() -> None:
    """Fields and options come back as built (RFC 9293 §3.1-3.2, RFC 7323 §2-3, RFC 2018 §3)."""
    opts = P.tcp_options(mss=1460, wscale=7, sack_perm=True, ts=(5, 6), sack=[(100, 200)])
    frame = P.tcp_frame(SRC, DST, 40000, 7, 0xFFFFFFF0, 42, P.ACK | P.PSH, options=opts, payload=b"abc", ident=9)
    ip, seg = parse(frame)
    assert (ip.src, ip.dst, ip.protocol, ip.ident) == (SRC, DST, 6, 9)
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags) == (40000, 7, 0xFFFFFFF0, 42, P.ACK | P.PSH)
    assert (seg.mss, seg.wscale, seg.sack_perm, seg.ts, seg.sack) == (1460, 7, True, (5, 6), [(100, 200)])
    assert bytes(seg.payload) == b"abc"
    assert P.parse_tcp(frame) == (SRC, DST, 40000, 7, 0xFFFFFFF0, 42, P.ACK | P.PSH, opts)


def test_checksums_can_be_made_wrong_and_repaired() -> None:
    """A bad TCP checksum is rejected; fix_tcp_checksum makes a mutated frame valid again."""
    bad = P.tcp_frame(SRC, DST, 1, 2, 3, 4, P.SYN, good_checksum=False)
    with pytest.raises(WireError):
        parse(bad)
    assert parse(P.fix_tcp_checksum(bad))[1].flags == P.SYN
    flipped = bytearray(P.tcp_frame(SRC, DST, 1, 2, 3, 4, P.ACK, payload=b"hello"))
    flipped[-1] ^= 0x01
    flipped[8] = 7  # TTL: the header checksum must be redone too
    ip, seg = parse(P.fix_tcp_checksum(bytes(flipped)))
    assert ip.ttl == 7 and bytes(seg.payload) == b"helln"


def test_icmp_messages_carry_a_valid_checksum() -> None:
    """RFC 792: the checksum covers the whole message; a valid one sums to zero."""
    msg = P.icmp(3, 4, b"\0\0\x05\xdc", b"quoted datagram")
    assert internet_checksum(msg) == 0
    assert internet_checksum(P.icmp(8, 0, data=b"x", good_checksum=False)) != 0
