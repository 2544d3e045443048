"""Plain helper functions shared by every test suite (not fixtures)."""

from __future__ import annotations

from collections.abc import Sequence

from framework.context import Context
from framework.handler import BaseHandler
from framework.packet import Packet
from framework.pipeline import Node, Pipeline
from framework.stack import Stack
from layers.ipv4.handler import Ipv4Layer, Ipv4Settings
from layers.link.handler import MemorySettings, RawIpLink

OWN = "10.0.0.2"
PEER = "10.0.0.1"


class Sink(BaseHandler):
    """A top-of-pipeline handler that records what reaches it and claims IP protocols (placed
    with :meth:`node`, under which the layer below passes it those protocols)."""

    def __init__(self, name: str = "sink", ip_protocols: Sequence[int] = (6,)) -> None:
        self.name = name
        self.ip_protocols = tuple(ip_protocols)
        self.received: list[Packet] = []

    def node(self) -> Node:
        """This sink in a pipeline, taking its IP protocols from the layer below."""
        return Node(self, keys=self.ip_protocols)

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        pkt.payload = bytes(pkt.payload)  # detach from the frame buffer
        self.received.append(pkt)
        return None


def ipv4_stack(*, mtu: int = 1500, sink: Sink | None = None, **ipv4: object) -> tuple[Stack, Ipv4Layer, Sink]:
    """A memory link, an IPv4 layer at 10.0.0.2/24 and a recording sink, as a sans-IO stack."""
    sink = sink or Sink()
    settings = Ipv4Settings(**{"address": f"{OWN}/24", "ident_seed": 0, **ipv4})  # type: ignore[arg-type]
    ip = Ipv4Layer("ipv4", settings)
    stack = Stack(Pipeline([RawIpLink("memory", mtu, MemorySettings(mtu=mtu)), ip, sink.node()]))
    return stack, ip, sink
