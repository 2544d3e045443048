"""The TUN offload framing (``offload = true``): a 10-byte virtio_net_hdr in front of every frame, partial
checksums from the local kernel accepted without verification, TCP super-segments taken whole.

The stack is built from configuration with a ``tun`` link (no device is opened: that is the I/O edge's job),
fed crafted frames; the frames it sends are decoded with scapy."""

from __future__ import annotations

import struct

from scapy.layers.inet import ICMP, IP, TCP
from scapy.packet import Raw, raw

from framework.stack import Stack
from tcpstack.config import build_stack, config_from_dict
from tcpstack.plugins import PluginHost
from tests.layers.ipv4.helpers import rfc1071

OWN, PEER = "10.0.0.2", "10.0.0.1"
VNET = struct.Struct("<BBHHHH")
NEEDS_CSUM, GSO_TCPV4, GSO_UDP = 1, 1, 3


def offload_stack() -> Stack:
    cfg = {
        "layers": [
            {"type": "tun", "offload": True},
            {"type": "ipv4", "address": f"{OWN}/24"},
            {"type": "tcp", "default_features": False},
        ]
    }
    return build_stack(config_from_dict(cfg, host=PluginHost(entry_points=False)))


def vnet(flags: int = 0, gso_type: int = 0, gso_size: int = 0) -> bytes:
    return VNET.pack(flags, gso_type, 40 if gso_type else 0, gso_size, 20 if flags else 0, 16 if flags else 0)


def sent(stack: Stack) -> list[bytes]:
    return stack.frames_to_send(now=0.0)


def test_every_sent_frame_starts_with_a_zero_vnet_header() -> None:
    """An echo reply goes out behind ten zero bytes (no offload asked: its checksums are complete)."""
    stack = offload_stack()
    stack.receive_frame(vnet() + raw(IP(src=PEER, dst=OWN) / ICMP(type=8, id=7, seq=1) / Raw(b"hi")), now=0.0)
    [frame] = sent(stack)
    assert frame[:10] == bytes(10)
    reply = IP(frame[10:])
    assert reply[ICMP].type == 0 and reply[ICMP].id == 7 and bytes(reply[Raw]) == b"hi"
    assert reply[ICMP].chksum == ICMP(raw(reply[ICMP])).chksum  # computed in full by us


def test_partial_checksum_is_accepted_without_verification() -> None:
    """NEEDS_CSUM: the TCP checksum field holds only the pseudo-header sum (here: garbage); the SYN is taken
    and answered. The same SYN without the flag is a bad_checksum drop (MUST-3)."""
    stack = offload_stack()
    stack.layer("tcp").listen(80)  # type: ignore[attr-defined]
    syn = raw(IP(src=PEER, dst=OWN) / TCP(sport=40000, dport=80, flags="S", seq=1000, chksum=0x1234))
    stack.receive_frame(vnet() + syn, now=0.0)
    assert sent(stack) == [] and stack.stats.drops[("tcp", "bad_checksum")] == 1
    stack.receive_frame(vnet(NEEDS_CSUM) + syn, now=0.0)
    [frame] = sent(stack)
    synack = IP(frame[10:])
    assert synack[TCP].flags == "SA" and synack[TCP].ack == 1001


def test_a_super_segment_is_taken_whole() -> None:
    """A GSO_TCPV4 super-segment of 20,000 bytes (the kernel's TSO, gso_size 1460) is one frame for us: all its
    bytes arrive in order and are acknowledged."""
    stack = offload_stack()
    conn, iss = _established(stack)
    data = bytes(range(256)) * 78 + bytes(32)  # 20,000 bytes
    big = IP(src=PEER, dst=OWN) / TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=iss + 1, window=65535)
    frame = raw(big / Raw(data))
    assert len(frame) > 1500
    stack.receive_frame(vnet(NEEDS_CSUM, GSO_TCPV4, 1460) + frame, now=0.0)
    out = [IP(f[10:]) for f in sent(stack)]
    assert conn.read() == data  # type: ignore[attr-defined]
    assert out and out[-1][TCP].ack == 1001 + len(data)
    assert stack.stats.events["link.gso_frames_in"] == 1


def test_bad_vnet_frames_are_counted_drops() -> None:
    """A frame no longer than the header, and a UDP super-packet, are dropped with their reasons."""
    stack = offload_stack()
    stack.receive_frame(bytes(10), now=0.0)
    stack.receive_frame(vnet(NEEDS_CSUM, GSO_UDP, 1400) + raw(IP(src=PEER, dst=OWN) / ICMP()), now=0.0)
    assert stack.stats.drops[("link", "short_vnet_header")] == 1
    assert stack.stats.drops[("link", "unsupported_gso")] == 1
    assert sent(stack) == []


def _established(stack: Stack) -> tuple[object, int]:
    """A connection accepted on port 80 from PEER:40000 (window 1 MiB, scaled), after the handshake."""
    tcp = stack.layer("tcp")
    accepted: list[object] = []
    tcp.listen(80, on_accept=accepted.append)  # type: ignore[attr-defined]
    syn = IP(src=PEER, dst=OWN) / TCP(sport=40000, dport=80, flags="S", seq=1000, window=65535, options=[("MSS", 1460)])
    stack.receive_frame(vnet() + raw(syn), now=0.0)
    [frame] = sent(stack)
    iss = IP(frame[10:])[TCP].seq
    ack = IP(src=PEER, dst=OWN) / TCP(sport=40000, dport=80, flags="A", seq=1001, ack=iss + 1, window=65535)
    stack.receive_frame(vnet() + raw(ack), now=0.0)
    sent(stack)
    stack.dispatch_events()
    [conn] = accepted
    return conn, iss


def _ones_sum(data: bytes) -> int:
    """The folded ones'-complement sum (not inverted): RFC 1071's reference checksum, complemented."""
    return 0xFFFF ^ rfc1071(data)


def test_data_leaves_as_super_segments_with_partial_checksums() -> None:
    """With offload, queued data leaves as TCP super-segments: a GSO_TCPV4 header with gso_size = MSS, the
    header lengths, csum_start/offset at the TCP checksum, and in that field only the pseudo-header sum, so the
    kernel's completion (sum the segment, invert) gives the right checksum; sizes are whole MSS units."""
    stack = offload_stack()
    conn, _ = _established(stack)
    conn.cc.cwnd = 1 << 20  # type: ignore[attr-defined]  # let the window, not slow start, decide
    data = bytes(range(256)) * 200  # 51,200 bytes
    conn.send(data, 0.0)  # type: ignore[attr-defined]
    stack.layer("tcp").touch(conn)  # type: ignore[attr-defined]
    frames = sent(stack)
    mss = conn.snd_mss  # type: ignore[attr-defined]
    supers = [f for f in frames if VNET.unpack_from(f)[1] == GSO_TCPV4]
    assert supers, [VNET.unpack_from(f) for f in frames]
    sizes = []
    for f in supers:
        flags, _, hdr_len, gso_size, start, offset = VNET.unpack_from(f)
        ip = IP(f[10:])
        seg = bytes(f[10 + 20 :])
        assert (flags, gso_size, start, offset) == (NEEDS_CSUM, mss, 20, 16)
        assert hdr_len == 20 + ip[TCP].dataofs * 4 and len(f) - 10 > 1500
        payload = len(seg) - ip[TCP].dataofs * 4
        sizes.append(payload)
        pseudo = raw(IP(src=OWN, dst=PEER))[12:20] + bytes([0, 6]) + len(seg).to_bytes(2, "big")
        assert ip[TCP].chksum == _ones_sum(pseudo)  # only the pseudo-header sum
        # The kernel sums from csum_start (the field holding the pseudo sum) and writes the complement:
        completed = 0xFFFF ^ _ones_sum(seg)
        whole = seg[:16] + completed.to_bytes(2, "big") + seg[18:]
        assert _ones_sum(pseudo + whole) == 0xFFFF  # a segment that verifies (RFC 9293 §3.1)
    assert all(n % mss == 0 or n == sizes[-1] for n in sizes)
    assert sum(len(IP(f[10:])[TCP].payload) for f in frames) == len(data)


def test_a_short_tail_is_not_glued_to_a_super_segment_while_data_is_in_flight() -> None:
    """SWS avoidance / Nagle (RFC 1122 §4.2.3.4): with 3.5 segments of room and more data queued, the
    super-segment carries 3 full segments; the half segment waits."""
    stack = offload_stack()
    conn, _ = _established(stack)
    mss = conn.snd_mss  # type: ignore[attr-defined]
    conn.cc.cwnd = 3 * mss + mss // 2  # type: ignore[attr-defined]
    conn.send(bytes(10 * mss), 0.0)  # type: ignore[attr-defined]
    stack.layer("tcp").touch(conn)  # type: ignore[attr-defined]
    [frame] = sent(stack)
    assert VNET.unpack_from(frame)[1] == GSO_TCPV4
    assert len(IP(frame[10:])[TCP].payload) == 3 * mss


def test_one_stretch_ack_of_a_super_segment_grows_slow_start_as_per_segment_acks_would() -> None:
    """The kernel ACKs a whole super-segment at once; slow start credits it as one ACK per two segments
    (RFC 3465, L = 2), so cwnd doubles per round instead of growing by 2 SMSS per stretch ACK."""
    stack = offload_stack()
    conn, iss = _established(stack)
    mss = conn.snd_mss  # type: ignore[attr-defined]
    cwnd = conn.cc.cwnd  # type: ignore[attr-defined]
    conn.send(bytes(cwnd), 0.0)  # type: ignore[attr-defined]
    stack.layer("tcp").touch(conn)  # type: ignore[attr-defined]
    sent(stack)
    ack = IP(src=PEER, dst=OWN) / TCP(sport=40000, dport=80, flags="A", seq=1001, ack=iss + 1 + cwnd, window=65535)
    stack.receive_frame(vnet() + raw(ack), now=0.01)
    assert conn.cc.cwnd == 2 * cwnd  # type: ignore[attr-defined]
    assert cwnd > 2 * mss


def test_a_resend_super_segment_stops_where_new_data_begins() -> None:
    """After a timeout, go-back-N resends what was sent before as retransmissions; a super-segment never
    runs on into new data (which must be counted, timed and ECN-marked as new)."""
    stack = offload_stack()
    conn, _ = _established(stack)
    mss = conn.snd_mss  # type: ignore[attr-defined]
    conn.send(bytes(4 * mss), 0.0)  # type: ignore[attr-defined]
    stack.layer("tcp").touch(conn)  # type: ignore[attr-defined]
    sent(stack)
    conn.send(bytes(20 * mss), 0.0)  # type: ignore[attr-defined]  # queued, not yet sent
    stack.handle_timer(now=5.0)  # the RTO
    conn.cc.cwnd = 30 * mss  # type: ignore[attr-defined]  # as if it had regrown
    stack.layer("tcp").touch(conn)  # type: ignore[attr-defined]
    frames = [IP(f[10:]) for f in stack.frames_to_send(now=5.0)]
    first = frames[0]
    assert len(first[TCP].payload) <= 4 * mss
    assert conn.retransmitted_bytes <= 4 * mss  # type: ignore[attr-defined]


def test_no_super_segments_for_a_tiny_mss() -> None:
    """A peer MSS of 100: every segment leaves as itself (a super-segment would become hundreds of tiny
    segments at line rate)."""
    stack = offload_stack()
    tcp = stack.layer("tcp")
    accepted: list[object] = []
    tcp.listen(80, on_accept=accepted.append)  # type: ignore[attr-defined]
    syn = IP(src=PEER, dst=OWN) / TCP(sport=40001, dport=80, flags="S", seq=1000, window=65535, options=[("MSS", 100)])
    stack.receive_frame(vnet() + raw(syn), now=0.0)
    iss = IP(sent(stack)[0][10:])[TCP].seq
    ack = IP(src=PEER, dst=OWN) / TCP(sport=40001, dport=80, flags="A", seq=1001, ack=iss + 1, window=65535)
    stack.receive_frame(vnet() + raw(ack), now=0.0)
    sent(stack)
    stack.dispatch_events()
    [conn] = accepted
    conn.cc.cwnd = 1 << 20  # type: ignore[attr-defined]
    conn.send(bytes(5000), 0.0)  # type: ignore[attr-defined]
    tcp.touch(conn)  # type: ignore[attr-defined]
    frames = sent(stack)
    assert frames and all(VNET.unpack_from(f)[1] == 0 and len(f) - 10 <= 140 for f in frames)
