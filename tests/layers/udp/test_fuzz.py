"""Property-based fuzzing of UDP datagrams through the IPv4 layer: RFC 1122 §1.2.2 (robustness).

Mutated valid UDP datagrams (ports, lengths, checksums, data, fragments) and random bytes after
a valid IPv4 header are fed to a sans-IO stack with endpoints on some ports. For every frame:

- ``receive_frame`` never raises and ``("stack", "internal_error")`` stays 0;
- the frame is accounted for: delivered to an endpoint, or counted as a drop (a rejection by
  IPv4 or UDP), or held as a fragment;
- every frame sent is an ICMP Port Unreachable from 10.0.0.2 about a datagram that reached UDP.

``CI=1`` runs 10,000 examples.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP

from tests.layers.ipv4.helpers import datagram
from tests.layers.udp.helpers import OWN, PEER, udp_datagram, udp_stack

FUZZ_EXAMPLES = 10_000 if os.environ.get("CI") else 500
BOUND_PORTS = (7, 9, 53)


@pytest.fixture(autouse=True, scope="module")
def quiet_drop_logs() -> Iterator[None]:
    """Drops log at debug level; rendering thousands of them would dominate the fuzz time."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    yield
    structlog.reset_defaults()


@st.composite
def udp_frames(draw: st.DrawFn) -> bytes:
    """A valid UDP datagram from scapy, then possibly mangled in its UDP part."""
    data = draw(st.binary(max_size=300))
    frame = bytearray(
        udp_datagram(
            data,
            sport=draw(st.integers(0, 0xFFFF)),
            dport=draw(st.sampled_from((*BOUND_PORTS, 0, 8, 4000, 65535))),
            chksum=draw(st.one_of(st.none(), st.just(0), st.integers(0, 0xFFFF))),
        )
    )
    udp = frame[20:]
    kind = draw(st.sampled_from(["valid", "length", "flip", "truncate", "extend"]))
    if kind == "length":
        struct.pack_into("!H", udp, 4, draw(st.one_of(st.integers(0, 16), st.integers(0, 0xFFFF))))
    elif kind == "flip":
        i = draw(st.integers(0, len(udp) - 1))
        udp[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        udp = udp[: draw(st.integers(0, len(udp)))]
    elif kind == "extend":
        udp += draw(st.binary(min_size=1, max_size=20))
    if kind != "valid" or draw(st.booleans()):
        # Rebuild the IPv4 header around the (maybe mangled) UDP bytes, sometimes as a fragment.
        offset, flags = draw(st.sampled_from([(0, 0)] * 5 + [(0, 0x2000), (8, 0), (8, 0x2000)]))
        return datagram(bytes(udp), proto=17, offset=offset, flags=flags, ident=draw(st.integers(0, 0xFFFF)))
    return bytes(frame)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.one_of(udp_frames(), st.binary(max_size=60).map(lambda b: datagram(b, proto=17))), max_size=8))
def test_udp_datagrams_never_raise_and_are_accounted_for(frames: list[bytes]) -> None:
    stack, udp = udp_stack(ipv4={"icmp_errors_per_second": 1000.0})
    endpoints = [udp.bind(p) for p in BOUND_PORTS]
    for i, frame in enumerate(frames):
        before = (
            stack.stats.total_drops(),
            sum(len(ep.received) for ep in endpoints),
            stack.stats.events.get("ipv4.fragments_held", 0),
        )
        stack.receive_frame(frame, now=float(i))
        after = (
            stack.stats.total_drops(),
            sum(len(ep.received) for ep in endpoints),
            stack.stats.events.get("ipv4.fragments_held", 0),
        )
        assert stack.stats.drops.get(("stack", "internal_error"), 0) == 0
        # Accounted for: exactly one of dropped (counted), delivered, held as a fragment, or a
        # reassembly that completed (delivered or dropped then).
        assert after != before, frame.hex()
        for out in stack.frames_to_send(now=float(i)):
            ip = IP(out)
            assert (ip.src, ip.dst, ip.proto) == (OWN, PEER, 1)
            assert (ip[ICMP].type, ip[ICMP].code) == (3, 3)
            assert stack.stats.drops[("udp", "no_port")] > 0
    delivered = sum(len(ep.received) for ep in endpoints)
    assert delivered == stack.stats.events.get("udp.datagrams_received", 0)
