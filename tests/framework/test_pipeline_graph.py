"""The pipeline as a tree: a second transport, defined here, beside TCP on IPv4.

A test plugin registers, through ``stack_register`` like any third-party plugin, an "echo datagram"
transport on IP protocol 253 (RFC 3692: for experimentation) that sends every datagram back to its
sender, and a pass-through "tap" middleware that records the protocol of every datagram it sees.
Frames for protocol 6 reach TCP, frames for 253 the echo transport, frames for any other protocol
get an ICMP protocol unreachable (RFC 1122 §3.2.2.1); both transports send down through the one
path below them; a middleware between the link and IPv4 sees both. Sans-IO, explicit time.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP
from scapy.utils import rdpcap

from framework.checksum import internet_checksum
from framework.context import Context
from framework.errors import ConfigError
from framework.handler import BaseHandler, PacketHandler
from framework.packet import Packet
from framework.pipeline import Above, Node, Pipeline
from framework.registry import Registry
from framework.stack import Stack
from framework.stats import Stats
from layers.ipv4.handler import Ipv4Layer
from layers.ipv4.wire import Ipv4Repr
from layers.tcp.handler import TcpLayer
from tcpstack.config import StackConfig, build_stack, config_from_dict
from tcpstack.plugins import PluginHost, hookimpl
from tests.layers.ipv4.helpers import (
    OWN,
    OWN_B,
    PEER,
    PEER_B,
    datagram,
    drops,
    feed,
    icmp_message,
    parse_icmp_output,
    parse_output,
)

PROTO_ECHO = 253  # RFC 3692: reserved for experimentation
PROTO_TCP = 6
PROTO_OTHER = 99  # RFC 790 "any private encryption scheme": nothing here takes it
SYN, ACK = 0x02, 0x10

# ====================================================================== the test plugin


@dataclass(slots=True)
class EchoSettings:
    reply: bool = True
    """Send each datagram back to its sender."""


class EchoTransport(BaseHandler):
    """A transport on IP protocol 253: records each datagram and sends it back to its sender."""

    def __init__(self, name: str, settings: EchoSettings) -> None:
        self.name = name
        self.settings = settings
        self.address = b""
        self.received: list[tuple[bytes, bytes, bool]] = []  # (source, data, an ICMP error?)

    def attach(self, below: Sequence[PacketHandler], above: Sequence[PacketHandler]) -> None:
        ip = next(h for h in below if isinstance(h, Ipv4Layer))
        self.address = ip.address

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        hdr = pkt.net
        assert isinstance(hdr, Ipv4Repr)
        data = bytes(pkt.payload)
        self.received.append((hdr.src, data, pkt.error is not None))
        if self.settings.reply and pkt.error is None:
            ctx.transmit(self, self.datagram(hdr.src, data))
        return None

    def datagram(self, dst: bytes, data: bytes) -> Packet:
        return Packet(data, Ipv4Repr(self.address, dst, PROTO_ECHO, dont_frag=False))


@dataclass(slots=True)
class TapSettings:
    pass


class Tap(BaseHandler):
    """A pass-through middleware recording the IP protocol of every datagram in and out."""

    def __init__(self, name: str, settings: TapSettings | None = None) -> None:
        self.name = name
        self.seen_in: list[int] = []
        self.seen_out: list[int] = []

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        # Below IPv4 the payload is the datagram; above it, IPv4 has parsed the header.
        self.seen_in.append(pkt.net.protocol if isinstance(pkt.net, Ipv4Repr) else pkt.payload[9])
        return pkt

    def send(self, pkt: Packet, ctx: Context) -> Packet | None:
        assert isinstance(pkt.net, Ipv4Repr)  # what the transport asked IPv4 to send
        self.seen_out.append(pkt.net.protocol)
        return pkt


class Ipv6Sink(BaseHandler):
    """Stands in for an IPv6 layer beside IPv4 on the link: takes IP version 6, records it."""

    def __init__(self, name: str, settings: TapSettings) -> None:
        self.name = name
        self.received: list[bytes] = []

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        self.received.append(bytes(pkt.payload))
        return None


class TestPlugin:
    """Registers the echo transport, the tap middleware, and a few layers for bad shapes."""

    @hookimpl
    def stack_register(self, registry: Registry) -> None:
        registry.add_layer(
            "echo",
            EchoTransport,
            EchoSettings,
            doc="echo datagrams of IP protocol 253",
            requires=("ipv4",),
            passes_up=False,
            accepts={"ip.protocol": [PROTO_ECHO]},
        )
        registry.add_layer("tap", Tap, TapSettings, doc="record protocols", requires=("link",))
        registry.add_layer(
            "ipv6ish",
            Ipv6Sink,
            TapSettings,
            doc="takes IP version 6",
            requires=("link",),
            passes_up=False,
            accepts={"ip.version": [6]},
        )
        registry.add_layer(
            "tcpish",
            EchoTransport,
            EchoSettings,
            doc="a second taker of protocol 6",
            requires=("ipv4",),
            passes_up=False,
            accepts={"ip.protocol": [PROTO_TCP]},
        )


def host() -> PluginHost:
    return PluginHost(entry_points=False, extra=[TestPlugin()])


MEMORY = {"type": "memory"}
IPV4 = {"type": "ipv4", "address": f"{OWN}/24", "ident_seed": 0}
TCP = {"type": "tcp", "isn_secret": "00" * 16, "port_seed": 1, "default_features": False}
ECHO_BESIDE_TCP = [MEMORY, {"type": "tap"}, IPV4, TCP, {"type": "echo", "below": "ipv4"}]


def configure(layers: list[dict[str, Any]]) -> StackConfig:
    return config_from_dict({"layers": layers}, host=host())


def make(layers: list[dict[str, Any]]) -> Stack:
    return build_stack(configure(layers))


def problems(layers: list[dict[str, Any]]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        configure(layers)
    return info.value.problems


# ====================================================================== frames


def tcp_syn(dport: int, *, sport: int = 40000, seq: int = 1000) -> bytes:
    """A TCP SYN from the peer (RFC 9293 §3.1), checksummed over the pseudo-header."""
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, SYN, 65535, 0, 0)
    pseudo = PEER_B + OWN_B + struct.pack("!BBH", 0, PROTO_TCP, len(seg))
    seg = seg[:16] + internet_checksum(pseudo + seg).to_bytes(2, "big") + seg[18:]
    return datagram(seg, proto=PROTO_TCP)


def tcp_flags(frame: bytes) -> int:
    hdr, seg = parse_output(frame)
    assert hdr.protocol == PROTO_TCP
    return seg[13]


# ====================================================================== the tests


def test_each_protocol_reaches_the_layer_that_takes_it() -> None:
    """Protocol 6 reaches TCP (a SYN to a listener is answered with SYN-ACK), protocol 253 the echo
    transport (which sends it back), any other protocol an ICMP protocol unreachable."""
    stack = make(ECHO_BESIDE_TCP)
    tcp, echo, tap = stack.layer("tcp"), stack.layer("echo"), stack.layer("tap")
    assert isinstance(tcp, TcpLayer) and isinstance(echo, EchoTransport) and isinstance(tap, Tap)
    tcp.listen(80)

    (synack,) = feed(stack, [tcp_syn(80)], now=1.0)
    assert tcp_flags(synack) == SYN | ACK
    assert echo.received == []

    (reply,) = feed(stack, [datagram(b"hello, graph", proto=PROTO_ECHO)], now=2.0)
    hdr, payload = parse_output(reply)
    assert (hdr.protocol, hdr.src, hdr.dst, payload) == (PROTO_ECHO, OWN_B, PEER_B, b"hello, graph")
    assert echo.received == [(PEER_B, b"hello, graph", False)]

    (unreachable,) = feed(stack, [datagram(b"nobody", proto=PROTO_OTHER)], now=3.0)
    _, msg = parse_icmp_output(unreachable)
    assert (msg.type, msg.code) == (3, 2)  # RFC 1122 §3.2.2.1: Destination Unreachable (protocol)
    assert drops(stack) == {("ipv4", "unknown_protocol"): 1}
    assert len(tcp.connections) == 1 and len(echo.received) == 1


def test_a_middleware_between_link_and_ipv4_sees_both_transports() -> None:
    """The tap below IPv4 sees every datagram of both transports, in and out; each transport's
    own sends (a connect, an echo datagram) go down through it."""
    stack = make(ECHO_BESIDE_TCP)
    tcp, echo, tap = stack.layer("tcp"), stack.layer("echo"), stack.layer("tap")
    assert isinstance(tcp, TcpLayer) and isinstance(echo, EchoTransport) and isinstance(tap, Tap)
    tcp.listen(80)
    feed(stack, [tcp_syn(80), datagram(b"x", proto=PROTO_ECHO), datagram(b"y", proto=PROTO_OTHER)], now=1.0)
    assert tap.seen_in == [PROTO_TCP, PROTO_ECHO, PROTO_OTHER]
    assert tap.seen_out == [PROTO_ECHO, 1, PROTO_TCP]  # echo and ICMP at once, the SYN-ACK at flush

    tap.seen_out.clear()
    tcp.connect(PEER_B, 8080, now=2.0)
    stack.send(echo, echo.datagram(PEER_B, b"unprompted"), now=2.0)
    out = stack.frames_to_send(now=2.0)
    assert [parse_output(f)[0].protocol for f in out] == [PROTO_ECHO, PROTO_TCP]
    assert tcp_flags(out[1]) == SYN
    assert parse_output(out[0])[1] == b"unprompted"
    assert tap.seen_out == [PROTO_ECHO, PROTO_TCP]


def test_pcap_below_ipv4_captures_both(tmp_path: Path) -> None:
    """The built-in capture between the link and IPv4 records the frames of both transports."""
    capture = tmp_path / "both.pcap"
    layers = [MEMORY, {"type": "pcap", "path": str(capture)}, IPV4, TCP, {"type": "echo", "below": "ipv4"}]
    config = configure(layers)
    stack = build_stack(config)
    tcp = stack.layer("tcp")
    assert isinstance(tcp, TcpLayer)
    tcp.listen(80)
    feed(stack, [tcp_syn(80), datagram(b"x", proto=PROTO_ECHO)], now=1.0)
    assert config.host is not None
    config.host.stack_closed(stack)
    protocols = [p[IP].proto for p in rdpcap(str(capture))]
    assert protocols == [PROTO_TCP, PROTO_ECHO, PROTO_ECHO, PROTO_TCP]


def test_an_icmp_error_goes_to_the_transport_it_quotes() -> None:
    """An ICMP error quoting a datagram we sent reaches the transport of the quoted protocol
    (RFC 1122 §3.2.2: the quoted header names it), here the echo transport, not TCP."""
    stack = make(ECHO_BESIDE_TCP)
    echo = stack.layer("echo")
    assert isinstance(echo, EchoTransport)
    quoted = datagram(b"12345678", src=OWN, dst=PEER, proto=PROTO_ECHO)
    error = datagram(icmp_message(3, 3, data=quoted), proto=1)  # port unreachable, from the peer
    assert feed(stack, [error], now=1.0) == []
    assert echo.received == [(OWN_B, b"12345678", True)]
    assert stack.stats.events["icmp.errors_received"] == 1


def test_attach_tells_each_layer_what_sits_above_it() -> None:
    """attach() gets the handlers above breadth-first; IPv4 learns from the graph which protocols
    the layers above take (nothing reads a handler attribute for it)."""
    stack = make(ECHO_BESIDE_TCP)
    ip = stack.layer("ipv4")
    assert isinstance(ip, Ipv4Layer)
    assert ip.protocols == frozenset({PROTO_TCP, PROTO_ECHO})
    assert not hasattr(stack.layer("tcp"), "ip_protocols")
    config = configure(ECHO_BESIDE_TCP)
    assert [(layer.name, layer.below, layer.keys) for layer in config.layers] == [
        ("memory", None, ()),
        ("tap", "memory", (4,)),  # a middleware takes what the layers above it take
        ("ipv4", "tap", (4,)),
        ("tcp", "ipv4", (PROTO_TCP,)),
        ("echo", "ipv4", (PROTO_ECHO,)),
    ]

    seen: dict[str, Above] = {}

    class Spy(BaseHandler):
        def __init__(self, name: str) -> None:
            self.name = name

        def attach(self, below: Sequence[PacketHandler], above: Sequence[PacketHandler]) -> None:
            assert isinstance(above, Above)
            seen[self.name] = above

    link, mid, a, b, c = Spy("link"), Spy("mid"), Spy("a"), Spy("b"), Spy("c")
    Pipeline([link, mid, Node(a, keys=(1,)), Node(b, below="mid", keys=(2, 3)), Node(c, below="a")])
    assert [h.name for h in seen["link"]] == ["mid", "a", "b", "c"]
    assert ([h.name for h in seen["mid"]], [h.name for h in seen["mid"].direct]) == (["a", "b", "c"], ["a", "b"])
    assert seen["mid"].keys == frozenset({1, 2, 3})
    assert list(seen["c"]) == [] and seen["c"].keys == frozenset()


def test_the_chain_only_configuration_is_unchanged() -> None:
    """Today's ordered list still means a chain; the same list with every ``below`` spelled out
    builds the same stack, and both answer the same frames with the same bytes. Without the echo
    transport, protocol 253 is unreachable."""
    chain = [MEMORY, IPV4, TCP]
    spelled = [MEMORY, {**IPV4, "below": "memory"}, {**TCP, "below": "ipv4"}]
    outputs = []
    for layers in (chain, spelled):
        stack = make(layers)
        assert [h.name for h in stack.pipeline.handlers] == ["memory", "ipv4", "tcp"]
        tcp = stack.layer("tcp")
        assert isinstance(tcp, TcpLayer)
        tcp.listen(80)
        out = feed(stack, [tcp_syn(80), datagram(b"x", proto=PROTO_ECHO)], now=1.0)
        outputs.append(out)
        assert drops(stack) == {("ipv4", "unknown_protocol"): 1}
    assert outputs[0] == outputs[1]
    _, msg = parse_icmp_output(outputs[0][0])
    assert (msg.type, msg.code) == (3, 2)
    assert tcp_flags(outputs[0][1]) == SYN | ACK


def test_a_middleware_on_one_branch_sees_only_that_branch() -> None:
    """A tap between IPv4 and the echo transport sees the echo datagrams only."""
    stack = make([MEMORY, IPV4, TCP, {"type": "tap", "below": "ipv4"}, {"type": "echo"}])
    tcp, tap = stack.layer("tcp"), stack.layer("tap")
    assert isinstance(tcp, TcpLayer) and isinstance(tap, Tap)
    tcp.listen(80)
    out = feed(stack, [tcp_syn(80), datagram(b"x", proto=PROTO_ECHO)], now=1.0)
    assert sorted(parse_output(f)[0].protocol for f in out) == [PROTO_TCP, PROTO_ECHO]
    assert (tap.seen_in, tap.seen_out) == ([PROTO_ECHO], [PROTO_ECHO])


def test_a_second_network_layer_beside_ipv4_on_the_link() -> None:
    """The link sets the IP version as the key: version 6 goes to the layer taking it, version 4
    to IPv4, and a version nobody takes is an unclaimed drop."""
    stack = make([MEMORY, IPV4, TCP, {"type": "ipv6ish", "below": "memory"}])
    v6 = stack.layer("ipv6ish")
    assert isinstance(v6, Ipv6Sink)
    v6_frame = bytes([0x60]) + bytes(39)
    feed(stack, [v6_frame, datagram(b"x", proto=PROTO_ECHO), bytes([0x50]) + bytes(19)], now=1.0)
    assert v6.received == [v6_frame]
    assert drops(stack) == {("ipv4", "unknown_protocol"): 1, ("pipeline", "unclaimed"): 1}


BAD_SHAPES: dict[str, tuple[list[dict[str, Any]], list[str]]] = {
    "an unknown name": (
        [MEMORY, IPV4, {"type": "echo", "below": "ipv6"}],
        ["layers[2].below: no layer named 'ipv6' is listed before this one (listed before: 'memory', 'ipv4')"],
    ),
    "a layer on itself": (
        [MEMORY, IPV4, {"type": "echo", "below": "echo"}],
        ["layers[2].below: a layer cannot sit on itself"],
    ),
    "a cycle (a layer on one listed after it)": (
        [MEMORY, {**IPV4, "below": "tap"}, {"type": "tap", "below": "ipv4"}],
        [
            "layers[1].below: 'tap' is listed after this layer (layers[2]); list each layer after the layer it "
            "sits on, bottom to top"
        ],
    ),
    "below is not a name": (
        [MEMORY, {**IPV4, "below": 0}],
        ["layers[1].below: expected the name of a layer listed before this one, got 0"],
    ),
    "two layers taking one protocol": (
        [MEMORY, IPV4, TCP, {"type": "tcpish", "below": "ipv4"}],
        ["layers[3] (tcpish): ip.protocol 6 on layers[1] (ipv4) is already taken by layers[2] (tcp)"],
    ),
    "a transport beside ipv4 on the link": (
        [MEMORY, IPV4, {"type": "echo", "below": "memory"}],
        [
            "layers[2] (echo): needs an ipv4 layer below it (layers[1] (ipv4) is on another branch; "
            "sit on it with below = 'ipv4')",
            "layers[2] (echo): sits on layers[0] (memory) beside other layers, chosen by ip.version, but takes "
            "no ip.version (it takes: ip.protocol)",
        ],
    ),
    "a middleware beside a transport with nothing above it": (
        [MEMORY, IPV4, TCP, {"type": "tap", "below": "ipv4"}],
        [
            "layers[3] (tap): sits on layers[1] (ipv4) beside other layers, chosen by ip.protocol, but takes "
            "no ip.protocol (a middleware takes the keys of the layers above it, and nothing sits on it)"
        ],
    ),
    "a layer on a transport": (
        [MEMORY, IPV4, TCP, {"type": "echo", "below": "tcp"}],
        ["layers[3] (echo): never sees traffic: layers[2] (tcp) below it passes nothing up; place it below layers[2]"],
    ),
}


@pytest.mark.parametrize(("layers", "expected"), BAD_SHAPES.values(), ids=BAD_SHAPES.keys())
def test_bad_shapes_are_config_errors(layers: list[dict[str, Any]], expected: list[str]) -> None:
    """Every problem of a tree is reported with its key path, before anything is built."""
    assert problems(layers) == expected


def test_branches_need_a_key_set_below() -> None:
    """Two layers on a layer that sets no demultiplexing key (and nothing below it does) cannot be
    told apart."""

    class NoKeyLink:
        @hookimpl
        def stack_register(self, registry: Registry) -> None:
            from layers.link.handler import MemorySettings, RawIpLink

            registry.add_layer(
                "plainlink", lambda n, s: RawIpLink(n, s.mtu, s), MemorySettings, provides=("link",), bottom=True
            )

    h = PluginHost(entry_points=False, extra=[TestPlugin(), NoKeyLink()])
    data = {"layers": [{"type": "plainlink"}, IPV4, {"type": "ipv6ish", "below": "plainlink"}]}
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, host=h)
    assert info.value.problems == [
        "layers[2] (ipv6ish): sits on layers[0] (plainlink) beside layers[1] (ipv4), but no layer on the path "
        "down sets a demultiplexing key to choose between them"
    ]


# ====================================================================== the Pipeline itself


class Mark(BaseHandler):
    """Records receives into a shared list; sets ``pkt.upper`` from the first payload byte."""

    def __init__(self, name: str, calls: list[str], *, demux: bool = False, consume: bool = False) -> None:
        self.name = name
        self.calls = calls
        self.demux = demux
        self.consume = consume

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        self.calls.append(self.name)
        if self.demux:
            pkt.upper = pkt.payload[0]
        return None if self.consume else pkt


def test_dispatch_and_deliver_follow_the_key() -> None:
    """receive walks the chain to the branch, then the branch the key names; ctx.deliver from a
    branching handler picks by key as well; a key nobody takes is an unclaimed drop."""
    calls: list[str] = []
    link, ip = Mark("link", calls), Mark("ip", calls, demux=True)
    mw, a, b = Mark("mw", calls), Mark("a", calls, consume=True), Mark("b", calls, consume=True)
    pipeline = Pipeline([link, ip, Node(mw, keys=(1,)), Node(a), Node(b, below="ip", keys=(2,))])
    stats = Stats()
    ctx = Context(pipeline, stats)
    pipeline.receive(Packet.inbound(b"\x01"), ctx)
    pipeline.receive(Packet.inbound(b"\x02"), ctx)
    pipeline.receive(Packet.inbound(b"\x03"), ctx)
    assert calls == ["link", "ip", "mw", "a", "link", "ip", "b", "link", "ip"]
    assert stats.drops == {("pipeline", "unclaimed"): 1}
    calls.clear()
    pkt = Packet(b"")
    pkt.upper = 2
    ctx.deliver(ip, pkt)
    pkt.upper = 1
    ctx.deliver(ip, pkt)
    ctx.deliver(mw, pkt)
    assert calls == ["b", "mw", "a", "a"]
    pipeline.send_below(b, Packet(b"out"), ctx)
    assert list(pipeline.tx_queue) == [b"out"]


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (lambda h: [h("a"), Node(h("b"), below="zz")], ["layers: 'b' sits on unknown layer 'zz'"]),
        (lambda h: [h("a"), Node(h("b"), below="b")], ["layers: 'b' sits on itself"]),
        (
            lambda h: [h("a"), Node(h("b"), below="c"), h("c")],
            ["layers: 'b' sits on 'c', which is listed after it (list each layer after the layer it sits on)"],
        ),
        (
            lambda h: [h("a"), Node(h("b"), keys=(6,)), Node(h("c"), below="a", keys=(6, 7))],
            ["layers: 'b' and 'c' both take key 6 from 'a'"],
        ),
        (
            lambda h: [h("a"), Node(h("b"), keys=(6,)), Node(h("c"), below="a")],
            ["layers: 'c' sits beside other layers on 'a' but takes no key"],
        ),
    ],
    ids=["unknown", "itself", "later", "same key", "no key"],
)
def test_pipeline_rejects_bad_trees(layers: Any, expected: list[str]) -> None:
    """Pipeline, assembled without a configuration, refuses the same shapes."""
    calls: list[str] = []
    with pytest.raises(ConfigError) as info:
        Pipeline(layers(lambda name: Mark(name, calls)))
    assert info.value.problems == expected


# ====================================================================== the command line


def test_pcap_option_sits_below_every_layer_on_the_link(tmp_path: Path) -> None:
    """``--pcap`` inserts the capture just above the link; a layer that named the link as the one it
    sits on now sits on the capture, so the capture still sees every frame."""
    from tcpstack.cli import _up_config, build_parser

    path = tmp_path / "stack.toml"
    path.write_text(
        '[[layers]]\ntype = "tun"\n[[layers]]\ntype = "ipv4"\n[[layers]]\ntype = "ipv6ish"\nbelow = "tun"\n'
    )
    data = _up_config(build_parser().parse_args(["up", "--config", str(path), "--pcap", "x.pcap"]))
    assert data["layers"] == [
        {"type": "tun"},
        {"type": "pcap", "path": "x.pcap"},
        {"type": "ipv4"},
        {"type": "ipv6ish", "below": "pcap"},
    ]


def test_config_check_shows_the_branches() -> None:
    """``tcpstack config check`` names the layer a branch sits on."""
    from tcpstack.configcmd import describe

    lines = describe(configure(ECHO_BESIDE_TCP))
    assert lines[:6] == [
        "layers (bottom to top):",
        "  0. memory: mtu=1500",
        "  1. tap",
        lines[3],
        lines[4],
        "  4. echo (on ipv4): reply=True",
    ]
    assert lines[3].startswith("  2. ipv4: ") and lines[4].startswith("  3. tcp: ")
