"""Plain helper functions shared by every test suite (not fixtures)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

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


def assert_init_takes_fields(cls: type, *required: object) -> None:
    """A dataclass with a written-out ``__init__`` (mypyc compiles it; a generated one stays
    interpreted) takes its fields in their order, by position and by name, with the declared
    defaults. Tested by behaviour, so it holds for the compiled class too, whose signature
    inspect cannot read. *required*: values for the fields without a default."""
    fields = dataclasses.fields(cls)
    values = [_distinct(f.name, _type_name(f.type), i, f.default) for i, f in enumerate(fields)]
    by_position = cls(*values)
    by_name = cls(**{f.name: v for f, v in zip(fields, values, strict=True)})
    for f, v in zip(fields, values, strict=True):
        assert getattr(by_position, f.name) == v, f.name
        assert getattr(by_name, f.name) == v, f.name
    defaults = cls(*required)
    for f in fields:
        if f.default is not dataclasses.MISSING:
            assert getattr(defaults, f.name) == f.default, f.name


def _distinct(name: str, annotation: str, i: int, default: object) -> Any:
    """A value of the field's type that differs from its default and, for the numbers and byte
    strings, from every other field's: a swapped pair of parameters would show."""
    if annotation == "bool":
        return not default
    if annotation in ("bytes", "BytesLike") or name == "payload":
        return bytes([i, i, i, i])
    if annotation.startswith("list") or name == "sack":  # the compiled class says only "type"
        return [(i, i + 1)]
    if annotation.startswith("tuple") or name == "ts":
        return (i, i + 1)
    return 1000 + i  # int, int | None


def _type_name(t: object) -> str:
    """A field's annotation as written: a string in the interpreted class (postponed
    annotations), a type or a typing form in the compiled one."""
    if isinstance(t, str):
        return t
    return t.__name__ if isinstance(t, type) else str(t)
