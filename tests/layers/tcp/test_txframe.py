"""The send path (layers/tcp/txframe.py) against the pipeline path it replaces: byte-identical
frames for random segments (options, flags, payload sizes, offload, oversize and wrong-source
drops), and for whole random connections between two stacks (timestamps, SACK, window scaling,
loss, both directions, FIN); the pipeline path stays in use where a middleware sits below TCP.
The pipeline path is checked in turn by an independent checksum (RFC 1071 in tests/)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework.packet import Frame, frame_bytes
from framework.pipeline import Pipeline
from framework.stack import Stack
from layers.ipv4.handler import Ipv4Layer, Ipv4Settings
from layers.link.handler import MemorySettings, RawIpLink, TunSettings
from layers.tcp.buffers import SendBuffer
from layers.tcp.handler import TcpLayer
from layers.tcp.settings import TcpSettings
from layers.tcp.txframe import TxTemplate
from layers.tcp.wire import ACK, FIN, PSH, RST, SYN, TcpRepr, pseudo_base
from tcpstack.config import build_stack, config_from_dict
from tcpstack.io.driver import AsyncioDriver
from tcpstack.io.memory import MemoryLink
from tcpstack.plugins import PluginHost
from tcpstack.testing import StackPair, make_stack, tcp_layer
from tcpstack.testing.pair import CLIENT_ADDRESS, SERVER_ADDRESS, TapSimulation, stack_config
from tests.layers.ipv4.helpers import rfc1071

OWN = bytes([10, 0, 0, 1])
PEER = bytes([10, 0, 0, 2])
OTHER = bytes([10, 0, 0, 9])


def _stack(*, offload: bool, mtu: int, ttl: int, seed: int, direct: bool) -> tuple[Stack, TcpLayer]:
    link_settings: TunSettings | MemorySettings = (
        TunSettings(mtu=mtu, offload=True) if offload else MemorySettings(mtu=mtu)
    )
    link = RawIpLink("tun" if offload else "memory", mtu, link_settings)
    ipv4 = Ipv4Layer("ipv4", Ipv4Settings(address="10.0.0.1/24", ttl=ttl, ident_seed=seed))
    tcp = TcpLayer("tcp", TcpSettings())
    stack = Stack(Pipeline([link, ipv4, tcp]))
    assert tcp.tx_direct  # nothing but IPv4 and the link below: the send path is found
    tcp.tx_direct = direct
    return stack, tcp


u32 = st.integers(0, 0xFFFFFFFF)
u16 = st.integers(0, 0xFFFF)


@st.composite
def segments(draw: st.DrawFn, *, big: bool) -> TcpRepr:
    ts = draw(st.none() | st.tuples(u32, u32))
    sack_room = 3 if ts is not None else 4
    sack = draw(st.none() | st.lists(st.tuples(u32, u32), min_size=1, max_size=sack_room))
    syn_opts = draw(st.booleans())
    mss = draw(st.none() | u16) if syn_opts else None
    wscale = draw(st.none() | st.integers(0, 14)) if syn_opts else None
    sack_perm = draw(st.booleans()) if syn_opts else False
    if syn_opts:
        sack = None
    size = draw(st.integers(0, 70_000) if big else st.sampled_from([0, 0, 1, 2, 3, 535, 1447, 1448, 1460, 1461]))
    data = bytearray(random.Random(size).randbytes(size + 3))
    start = draw(st.integers(0, 3))  # views starting anywhere in their buffer, odd or even
    payload: Any = draw(st.sampled_from(["view", "bytes"]))
    body = memoryview(data)[start : start + size] if payload == "view" else bytes(data[start : start + size])
    seg = TcpRepr(
        draw(u16),
        draw(u16),
        draw(u32),
        draw(u32),
        draw(st.integers(0, 255)),
        draw(u16),
        body,
        draw(st.sampled_from([0, 0, 1, 0xFFFF])),
        mss,
        wscale,
        sack_perm,
        sack,
        ts,
    )
    seg.ip_ecn = draw(st.integers(0, 3))
    seg.gso_size = draw(st.sampled_from([0, 1448, 1460])) if size > 1460 else 0
    seg.rexmit = draw(st.booleans())
    return seg


def _run_both(seg: TcpRepr, src: bytes, **kw: Any) -> tuple[list[Frame], list[bytes], Stack, Stack]:
    fast, fast_tcp = _stack(direct=True, **kw)
    slow, slow_tcp = _stack(direct=False, **kw)
    for _ in range(2):  # the identification advances the same way on both
        fast_tcp._transmit(src, PEER, replace(seg), fast.context)
        slow_tcp._transmit(src, PEER, replace(seg), slow.context)
    return fast.frames_to_write(now=0.0), slow.frames_to_send(now=0.0), fast, slow


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seg=segments(big=False),
    mtu=st.sampled_from([576, 1500, 9000]),
    ttl=st.integers(1, 255),
    seed=u16,
    src=st.sampled_from([OWN, OWN, OWN, OTHER]),
)
def test_send_path_frames_equal_pipeline_frames(seg: TcpRepr, mtu: int, ttl: int, seed: int, src: bytes) -> None:
    """Without offload: every frame byte for byte as the pipeline (IPv4 layer, link, Packet.to_bytes)
    builds it, drops counted alike; the payload is a piece of its own (no joined copy)."""
    fast, slow, fast_stack, slow_stack = _run_both(seg, src, offload=False, mtu=mtu, ttl=ttl, seed=seed)
    assert [frame_bytes(f) for f in fast] == slow
    assert fast_stack.stats.drops == slow_stack.stats.drops
    assert fast_stack.stats.events == slow_stack.stats.events
    for f in fast:
        if len(seg.payload):
            assert isinstance(f, tuple) and f[-1] is seg.payload  # written as it is: a view stays a view
        else:
            assert isinstance(f, bytes)
    for frame in slow:  # and the pipeline path is right: both checksums verify (RFC 1071)
        assert rfc1071(frame[:20]) == 0
        tcp = frame[20:]
        pseudo = OWN + PEER + bytes([0, 6]) + len(tcp).to_bytes(2, "big")
        assert rfc1071(pseudo + tcp) == 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seg=segments(big=True), ttl=st.integers(1, 255), seed=u16)
def test_send_path_frames_equal_pipeline_frames_with_offload(seg: TcpRepr, ttl: int, seed: int) -> None:
    """With TUN offload: the same virtio_net_hdr, partial checksum, super-segments (and oversized
    ones dropped) as the pipeline path."""
    fast, slow, fast_stack, slow_stack = _run_both(seg, OWN, offload=True, mtu=1500, ttl=ttl, seed=seed)
    assert [frame_bytes(f) for f in fast] == slow
    assert fast_stack.stats.drops == slow_stack.stats.drops
    for frame in slow:
        assert frame[0] == 1  # NEEDS_CSUM: the device completes the checksum


def test_template_sums_match_the_pseudo_header() -> None:
    tpl = TxTemplate(OWN, PEER, 80, 49500)
    assert tpl.pseudo == pseudo_base(OWN, PEER)
    assert tpl.ports_sum == 80 + 49500


# ---------------------------------------------------------------------------------------------
# Whole connections: the same frames either way


class _Recording(TapSimulation):
    """Records every frame put on the wire, raw: ``(time, 0 client→server / 1 back, bytes)``."""

    def __init__(self, client: Stack) -> None:
        super().__init__()
        self.client = client
        self.frames: list[tuple[float, int, bytes]] = []

    def _send(self, d: Any, frame: bytes) -> None:
        self.frames.append((self.now, 1 if d.dst is self.client else 0, frame))
        super()._send(d, frame)


def _conversation(direct: bool, p: dict[str, Any]) -> tuple[list[tuple[float, int, bytes]], int]:
    feats = {name: {} for name in ("timestamps", "sack", "window_scaling", "delayed_ack") if p[name]}
    tcp_settings = {"features": feats, "send_buffer": p["send_buffer"], "recv_buffer": p["recv_buffer"]}
    pair = StackPair(**tcp_settings)
    if p["offload"]:
        # Both ends on TUN links with offload (built, never opened: the simulation carries the
        # frames, virtio_net_hdr and super-segments included, as the kernel would hand them over).
        for side in ("client", "server"):
            cfg = stack_config(CLIENT_ADDRESS if side == "client" else SERVER_ADDRESS, **tcp_settings)
            cfg["layers"][0] = {"type": "tun", "device": "tun0", "offload": True}
            setattr(pair, side, build_stack(config_from_dict(cfg, host=PluginHost(entry_points=False))))
    sim = pair.sim = _Recording(pair.client)
    sim.wire(pair.client, pair.server, bandwidth=p["bandwidth"], queue_limit=p["queue_limit"])
    paths = []
    for stack in (pair.client, pair.server):
        tcp = tcp_layer(stack)
        tcp.tx_direct = direct
        assert tcp._tx is not None
        paths.append(tcp._tx)
    conn = pair.open(timeout=30.0)
    up = random.Random(p["up"]).randbytes(p["up"])
    down = random.Random(p["down"]).randbytes(p["down"])
    conn.send(up)
    conn.reply(down)
    conn.close()
    pair.run_for(120.0, condition=lambda: conn.client.closed and conn.server.closed)
    assert bytes(conn.server.received) == up and bytes(conn.client.received) == down
    return sim.frames, sum(path.built for path in paths)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    p=st.fixed_dictionaries(
        {
            "offload": st.booleans(),
            "timestamps": st.booleans(),
            "sack": st.booleans(),
            "window_scaling": st.booleans(),
            "delayed_ack": st.booleans(),
            "queue_limit": st.none() | st.integers(4, 40),
            "bandwidth": st.none() | st.sampled_from([1e6, 1e7]),
            "send_buffer": st.sampled_from([4096, 65536, 1 << 20]),
            "recv_buffer": st.sampled_from([4096, 65536, 1 << 19]),
            "up": st.integers(0, 300_000),
            "down": st.integers(0, 50_000),
        }
    )
)
def test_connections_put_the_same_frames_on_the_wire(p: dict[str, Any]) -> None:
    """Random connections (options, windows, a lossy queue, data both ways, FIN, with and without
    offload) give the same
    frames at the same times through the send path and through the pipeline, and every TCP frame
    of the send-path run was built by the send path."""
    fast, built = _conversation(True, p)
    slow, none_built = _conversation(False, p)
    assert fast == slow
    assert built == len(fast)  # all of them: handshake, data, ACKs, retransmissions, FIN
    assert none_built == 0


def test_middleware_below_tcp_keeps_the_pipeline_path() -> None:
    """A fault (or pcap) layer between the link and IPv4 must see Packets: no send path then."""
    tcp = tcp_layer(make_stack(fault={}))
    assert tcp._tx is None and not tcp.tx_direct
    assert tcp_layer(make_stack()).tx_direct


def test_flags_of_every_kind_take_the_send_path() -> None:
    """SYN with options, RST, FIN, pure ACK: each a single piece when it has no payload."""
    stack, tcp = _stack(offload=False, mtu=1500, ttl=64, seed=1, direct=True)
    for flags in (SYN, SYN | ACK, RST, RST | ACK, FIN | ACK, ACK, PSH | ACK):
        seg = TcpRepr(80, 49500, 1, 2, flags, 1000, mss=1460 if flags & SYN else None)
        tcp._transmit(OWN, PEER, seg, stack.context)
    out = stack.frames_to_write(now=0.0)
    assert len(out) == 7 and all(isinstance(f, bytes) for f in out)
    assert [f[33] for f in out] == [SYN, SYN | ACK, RST, RST | ACK, FIN | ACK, ACK, PSH | ACK]  # type: ignore[index]


# ---------------------------------------------------------------------------------------------
# Send-buffer views and the vectored write


def test_send_buffer_views_stay_valid_while_the_buffer_changes() -> None:
    """A view handed to the link keeps its bytes while the application writes more and ACKs
    consume the head (a bytearray with a live view cannot resize: the buffer moves instead)."""
    buf = SendBuffer(1 << 20)
    first = random.Random(1).randbytes(100_000)
    assert buf.write(first) == 100_000
    view = buf.view(70_000, 1448)
    assert bytes(view) == first[70_000:71_448]
    buf.consume(70_000)  # past the compaction threshold, with a view alive
    more = random.Random(2).randbytes(5000)
    assert buf.write(more) == 5000  # grows with a view alive
    assert bytes(view) == first[70_000:71_448]
    assert bytes(buf.view(0, 30_000)) == first[70_000:]
    assert bytes(buf.view(30_000, 5000)) == more
    del view
    buf.consume(30_000)
    assert len(buf) == 5000 and bytes(buf.view(0, 10_000)) == more


def test_send_buffer_write_takes_part_of_a_large_write_once() -> None:
    buf = SendBuffer(10)
    assert buf.write(memoryview(b"abcdefghijklmnop")) == 10
    assert bytes(buf.view(0, 100)) == b"abcdefghij"
    assert buf.write(b"x") == 0


def test_memory_link_writev_sends_one_datagram() -> None:
    a, b = MemoryLink.pair()
    try:
        payload = bytearray(b"0123456789")
        assert a.writev((b"head", memoryview(payload)[2:6]))
        assert b.read_available() == [b"head2345"]
    finally:
        a.close()
        b.close()


def test_driver_writes_pieces_with_writev_and_joins_for_links_without_it() -> None:
    """The driver hands a frame of pieces to ``writev``; a link without one gets the joined bytes."""

    class Recorder:
        mtu = 1500

        def __init__(self) -> None:
            self.written: list[object] = []

        def fileno(self) -> int:
            return 0

        def read_available(self, limit: int = 64) -> list[bytes]:
            return []

        def write(self, frame: bytes) -> bool:
            self.written.append(frame)
            return True

        def close(self) -> None:
            pass

    class VectorRecorder(Recorder):
        def writev(self, parts: Any) -> bool:
            self.written.append(tuple(bytes(p) for p in parts))
            return True

    async def scenario(link: Recorder) -> None:
        stack, tcp = _stack(offload=False, mtu=1500, ttl=64, seed=1, direct=True)
        seg = TcpRepr(80, 49500, 1, 2, ACK, 1000, memoryview(b"payload"))
        tcp._transmit(OWN, PEER, seg, stack.context)
        tcp._transmit(OWN, PEER, TcpRepr(80, 49500, 8, 2, ACK, 1000), stack.context)
        AsyncioDriver(stack, link, asyncio.get_running_loop()).transmit()  # type: ignore[arg-type]

    plain, vector = Recorder(), VectorRecorder()
    asyncio.run(scenario(plain))
    asyncio.run(scenario(vector))
    assert [type(f) for f in vector.written] == [tuple, bytes]
    assert [b"".join(f) if isinstance(f, tuple) else f for f in vector.written] == plain.written
    assert plain.written[0].endswith(b"payload")  # type: ignore[union-attr]


def test_data_frames_carry_views_of_the_send_buffer() -> None:
    """What the driver writes for data is the headers plus a view of the connection's send
    buffer itself: the payload is not copied between the application's write and the link."""
    pair = StackPair(features={"timestamps": {}})
    conn = pair.open()
    sndbuf = conn.client_conn.sndbuf
    data = random.Random(5).randbytes(20_000)
    conn.client_conn.send(data, pair.now)
    tcp_layer(pair.client).touch(conn.client_conn)
    frames = pair.client.frames_to_write(now=pair.now)
    data_frames = [f for f in frames if isinstance(f, tuple)]
    assert data_frames, frames
    for headers, payload in data_frames:  # type: ignore[misc]
        assert isinstance(payload, memoryview) and payload.obj is sndbuf._buf
        assert len(headers) == 52  # IPv4 + TCP + timestamps: one pack
    assert b"".join(bytes(f[1]) for f in data_frames) == data[: sum(len(f[1]) for f in data_frames)]
