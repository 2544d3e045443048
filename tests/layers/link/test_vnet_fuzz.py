"""Fuzzing the TUN offload framing (RFC 1122 §1.2.2, robustness): any bytes behind any virtio_net_hdr, and
mutated valid frames behind headers that claim partial checksums or super-segments, fed to a stack with a
listener. The stack never raises, never counts an internal error, and every frame it sends starts with a
well-formed header (``NEEDS_CSUM`` only for TCP; ``GSO_TCPV4`` only for a TCP segment bigger than the MTU)
followed by a valid IPv4 datagram.

``CI=1`` runs 10,000 examples."""

from __future__ import annotations

import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP
from scapy.packet import Raw, raw

from layers.ipv4.wire import Ipv4Repr
from tcpstack.config import build_stack, config_from_dict
from tcpstack.plugins import PluginHost

EXAMPLES = 10_000 if os.environ.get("CI") else 400
VNET = struct.Struct("<BBHHHH")
OWN, PEER = "10.0.0.2", "10.0.0.1"

STACK = build_stack(
    config_from_dict(
        {"layers": [{"type": "tun", "offload": True}, {"type": "ipv4", "address": f"{OWN}/24"}, {"type": "tcp"}]},
        host=PluginHost(entry_points=False),
    )
)
STACK.layer("tcp").listen(80)  # type: ignore[attr-defined]

SEEDS = [
    raw(IP(src=PEER, dst=OWN) / TCP(sport=40000, dport=80, flags="S", seq=7)),
    raw(IP(src=PEER, dst=OWN) / TCP(sport=40001, dport=80, flags="PA", seq=7, ack=9) / Raw(b"x" * 3000)),
    raw(IP(src=PEER, dst=OWN) / ICMP(type=8, id=1, seq=1) / Raw(b"ping")),
    raw(IP(src=PEER, dst=OWN, flags="MF") / ICMP(type=8) / Raw(b"frag" * 10)),
]

headers = st.builds(
    VNET.pack,
    st.integers(0, 255),
    st.sampled_from([0, 1, 3, 4, 0x81, 0xFF]),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        if not frame:
            break
        i = draw(st.integers(0, len(frame) - 1))
        frame[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(frame)))
    return bytes(frame[:cut]) if draw(st.booleans()) else bytes(frame)


@settings(max_examples=EXAMPLES, deadline=None)
@given(header=st.one_of(headers, st.binary(max_size=12)), body=st.one_of(mutated(), st.binary(max_size=2000)))
def test_any_frame_behind_any_header_is_handled(header: bytes, body: bytes) -> None:
    before = STACK.stats.drops[("stack", "internal_error")]
    STACK.receive_frame(header + body, now=1.0)
    for frame in STACK.frames_to_send(now=1.0):
        flags, gso_type, hdr_len, gso_size, start, offset = VNET.unpack_from(frame)
        ip, payload = Ipv4Repr.parse(memoryview(frame)[10:])  # well-formed, header checksum verified
        assert ip.src == bytes([10, 0, 0, 2])
        if flags:
            assert (flags, start, offset, ip.protocol) == (1, 20, 16, 6)
            assert hdr_len == 20 + (payload[12] >> 4) * 4
        else:
            assert (gso_type, hdr_len, gso_size, start, offset) == (0, 0, 0, 0, 0)
        assert gso_type in (0, 1) and (len(frame) - 10 <= 1500 or gso_type == 1)
    STACK.dispatch_events()
    assert STACK.stats.drops[("stack", "internal_error")] == before
