"""The TUN offload framing (``offload = true``): a 10-byte virtio_net_hdr in front of every frame, partial
checksums from the local kernel accepted without verification, TCP super-segments taken whole.

The stack is built from configuration with a ``tun`` link (no device is opened: that is the I/O edge's job),
fed crafted frames; the frames it sends are decoded with scapy."""

from __future__ import annotations

import struct

from scapy.layers.inet import ICMP, IP, TCP
from scapy.packet import Raw, raw

from framework.config import build_stack, config_from_dict
from framework.plugins import PluginHost
from framework.stack import Stack

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
    tcp = stack.layer("tcp")
    accepted: list[object] = []
    tcp.listen(80, on_accept=accepted.append)  # type: ignore[attr-defined]
    syn = IP(src=PEER, dst=OWN) / TCP(sport=40000, dport=80, flags="S", seq=1000)
    stack.receive_frame(vnet() + raw(syn), now=0.0)
    [frame] = sent(stack)
    iss = IP(frame[10:])[TCP].seq
    ack = IP(src=PEER, dst=OWN) / TCP(sport=40000, dport=80, flags="A", seq=1001, ack=iss + 1, window=65535)
    stack.receive_frame(vnet() + raw(ack), now=0.0)
    sent(stack)
    stack.dispatch_events()
    [conn] = accepted
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
