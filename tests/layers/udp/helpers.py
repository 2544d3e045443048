"""Helpers for the UDP tests: a sans-IO stack (memory link, IPv4 at 10.0.0.2/24, UDP) and
datagrams built by scapy, the oracle."""

from __future__ import annotations

import socket

from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from framework.pipeline import Node, Pipeline
from framework.stack import Stack
from layers.ipv4.handler import Ipv4Layer, Ipv4Settings
from layers.link.handler import MemorySettings, RawIpLink
from layers.udp.layer import UdpLayer
from layers.udp.settings import UdpSettings

OWN = "10.0.0.2"
PEER = "10.0.0.1"
OWN_B = socket.inet_aton(OWN)
PEER_B = socket.inet_aton(PEER)


def udp_stack(*, mtu: int = 1500, ipv4: dict[str, object] | None = None, **udp: object) -> tuple[Stack, UdpLayer]:
    """A memory link, IPv4 at 10.0.0.2/24 and a UDP layer, as a sans-IO stack."""
    ip_settings = Ipv4Settings(**{"address": f"{OWN}/24", "ident_seed": 0, **(ipv4 or {})})  # type: ignore[arg-type]
    layer = UdpLayer("udp", UdpSettings(**{"port_seed": 1, **udp}))  # type: ignore[arg-type]
    pipeline = Pipeline(
        [RawIpLink("memory", mtu, MemorySettings(mtu=mtu)), Ipv4Layer("ipv4", ip_settings), Node(layer, keys=(17,))]
    )
    return Stack(pipeline), layer


def udp_datagram(
    data: bytes = b"hello",
    *,
    sport: int = 4000,
    dport: int = 7,
    src: str = PEER,
    dst: str = OWN,
    chksum: int | None = None,
    length: int | None = None,
    **ip: object,
) -> bytes:
    """A whole IPv4 frame carrying a UDP datagram, built by scapy (checksums computed by scapy
    unless *chksum* or *length* is given)."""
    fields: dict[str, object] = {"sport": sport, "dport": dport}
    if chksum is not None:
        fields["chksum"] = chksum
    if length is not None:
        fields["len"] = length
    return bytes(IP(src=src, dst=dst, **ip) / UDP(**fields) / Raw(data))


def drops(stack: Stack) -> dict[tuple[str, str], int]:
    return {k: v for k, v in stack.stats.drops.items() if v}


def counter(stack: Stack, name: str) -> int:
    return stack.stats.events.get(name, 0)
