"""Early demux (layers/tcp/demux.py) is proven equal to the pipeline: the same frames fed to a
stack that takes predicted segments straight from the link and to one that sends every frame
up the pipeline (``early_demux = false``) give the same frames out, the same events, the same
counters (besides ``tcp.early_demux``), the same logs and the same connection state, after
every step. The sequences are random (hypothesis), biased towards in-order traffic, and mix in
what early demux must leave to the pipeline: IPv4 headers with options, fragments, a bad header
checksum, a wrong or broadcast destination, invalid sources, the reserved flag, a truncated
datagram, another protocol, another IP version, unknown connections, empty and short frames,
and every TCP case of tests/layers/tcp/test_fast_path.py; with TUN offload also
``virtio_net_hdr`` variants. Each example asserts early demux was taken.

Frames are packed with struct, never with the code under test's emitters."""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework.checksum import internet_checksum
from layers.ipv4.wire import Ipv4Repr
from layers.tcp.wire import ACK, CWR, ECE, SYN, TcpRepr
from tcpstack.config import build_stack, config_from_dict
from tcpstack.plugins import PluginHost
from tcpstack.testing import capture_logs
from tests.layers.tcp.helpers import (
    LOCAL_ADDR,
    LOCAL_PORT,
    MASK,
    REMOTE_ADDR,
    REMOTE_PORT,
    frame,
    stack_config,
    tcp_bytes,
    tcp_layer,
)
from tests.layers.tcp.test_fast_path import (
    FEATURES,
    KINDS,
    Action,
    Peer,
    Recorder,
    Side,
    build,
    payload,
    snapshot,
)

EARLY = "tcp.early_demux"
EARLY_SLOW = "tcp.early_demux_slow"  # taken early, not predicted: the TCP layer's full processing
VNET = struct.Struct("<BBHHHH")
NEEDS_CSUM, DATA_VALID, GSO_TCPV4, GSO_UDP, GSO_ECN = 1, 2, 1, 3, 0x80


def ip_frame(
    tcp: bytes,
    *,
    src: bytes = REMOTE_ADDR,
    dst: bytes = LOCAL_ADDR,
    ver_ihl: int = 0x45,
    options: bytes = b"",
    flags_frag: int = 0x4000,
    proto: int = 6,
    total: int | None = None,
    tos: int = 0,
    ttl: int = 64,
    ident: int = 7,
    bad_csum: bool = False,
) -> bytes:
    """An IPv4 datagram around *tcp* with the header fields given (checksum correct unless told)."""
    length = 20 + len(options) + len(tcp) if total is None else total
    hdr = struct.pack("!BBHHHBBH4s4s", ver_ihl, tos, length, ident, flags_frag, ttl, proto, 0, src, dst) + options
    csum = internet_checksum(hdr) ^ (0x5555 if bad_csum else 0)
    return hdr[:10] + csum.to_bytes(2, "big") + hdr[12:] + tcp


# ====================================================================== two sides


class EdSide(Side):
    """A side of test_fast_path's harness, fast path on, with or without early demux, on a memory
    link or a TUN link with offload (each frame behind a ``virtio_net_hdr``)."""

    def __init__(self, features: dict[str, Any], early: bool, offload: bool = False) -> None:
        cfg = stack_config(
            features=features,
            fast_path=True,
            early_demux=early,
            recv_buffer=6000,
            send_buffer=20000,
            initial_sequence=5000,
        )
        if offload:
            cfg["layers"][0] = {"type": "tun", "offload": True}
        self.stack = build_stack(config_from_dict(cfg, host=PluginHost(entry_points=False)))
        self.tcp = tcp_layer(self.stack)
        self.tcp.listen(LOCAL_PORT)
        self.app = Recorder()
        self.conn = None
        self.read = []
        self.decisions = 0
        self.offload = offload

    def counters(self) -> tuple[dict[Any, int], dict[str, int]]:
        stats = self.stack.stats
        return dict(stats.drops), {k: v for k, v in stats.events.items() if k not in (EARLY, EARLY_SLOW)}


def strip(frm: bytes, offload: bool) -> tuple[Ipv4Repr, TcpRepr]:
    """What the peer reads of a frame we sent (with offload: behind the vnet header, the TCP
    checksum partial)."""
    ip, rest = Ipv4Repr.parse(memoryview(frm[10:] if offload else frm))
    if ip.protocol != 6:  # an ICMP error about a datagram of the peer's
        return ip, TcpRepr(0, 0, 0, 0, 0, 0)
    seg = TcpRepr.parse(rest, None)
    seg.payload = bytes(seg.payload)
    return ip, seg


class EdPeer(Peer):
    offload: bool = False

    def saw(self, frames: list[bytes]) -> None:
        for frm in frames:
            ip, seg = strip(frm, self.offload)
            if ip.protocol != 6:
                continue
            end = (seg.seq + seg.seg_len) & MASK
            if ((end - self.high) & MASK) < 1 << 31:
                self.high = end
            if seg.ts is not None:
                self.ts_recent = seg.ts[0]


def handshake(sides: list[EdSide], peer: EdPeer, now: float) -> None:
    syn = TcpRepr(REMOTE_PORT, LOCAL_PORT, (peer.seq - 1) & MASK, 0, SYN | ECE | CWR, 0xFFFF)
    opts = struct.pack("!BBHBBBBIIBBBB", 2, 4, 1460, 4, 2, 8, 10, peer.tsval, 0, 1, 3, 3, 7)
    outs = [s.feed(wrap(frame_of(syn, opts), peer.offload, 0), now) for s in sides]
    assert outs[0] == outs[1]
    _, synack = strip(outs[0][0], peer.offload)
    assert synack.flags & (SYN | ACK) == SYN | ACK
    peer.ts = synack.ts is not None
    peer.sack = synack.sack_perm
    peer.wscale = 7 if synack.wscale is not None else 0
    peer.window = 0x2000 >> peer.wscale if peer.wscale else 0x2000
    peer.ack = (synack.seq + 1) & MASK
    peer.high = peer.ack
    peer.saw(outs[0])
    ack = wrap(frame_of(peer.segment(peer.seq, ACK), peer.options()), peer.offload, 0)
    outs = [s.feed(ack, now) for s in sides]
    assert outs[0] == outs[1]
    for s in sides:
        assert s.conn is not None and s.conn.state.value == "ESTABLISHED"


def frame_of(seg: TcpRepr, options: bytes) -> bytes:
    return frame(seg, options=options)


def wrap(frm: bytes, offload: bool, k: int) -> bytes:
    """With offload, a vnet header in front: mostly none of the flags, sometimes the link vouching
    for the checksum, a GSO type the link takes (with and without ECN) or one it does not."""
    if not offload:
        return frm
    flags = (0, 0, NEEDS_CSUM, DATA_VALID)[k % 4]
    gso = (0, 0, 0, GSO_TCPV4, GSO_TCPV4 | GSO_ECN, GSO_ECN, GSO_UDP)[(k // 4) % 7]
    return VNET.pack(flags, gso, 0, 1448 if gso else 0, 20 if flags else 0, 16 if flags else 0) + frm


# ====================================================================== the actions

IP_KINDS = [
    "ip_opts",  # IHL 6: the pipeline's (valid; predicted by TCP after the IPv4 layer)
    "ip_pad",  # link padding after Total Length (valid; early demux takes it)
    "ip_tos",  # DSCP and ECN bits
    "ip_ttl1",
    "ip_frag",  # the data in two fragments (reassembled by the pipeline)
    "ip_mf",  # one fragment only (held)
    "ip_csum",
    "ip_dst",
    "ip_bcast",
    "ip_src_loop",
    "ip_src_own",
    "ip_src_bcast",
    "ip_src_zero",
    "ip_reserved",
    "ip_trunc",
    "ip_long_total",
    "ip_udp",
    "ip_v6",
    "other_port",
    "empty",
    "short",
]
ED_KINDS = KINDS + IP_KINDS
actions = st.lists(
    st.tuples(st.sampled_from(ED_KINDS), st.integers(1, 1448), st.integers(0, 3000)), min_size=1, max_size=40
)


BAD_SOURCES = [bytes([127, 0, 0, 1]), LOCAL_ADDR, bytes([10, 0, 0, 255]), bytes([224, 0, 0, 1]), bytes([0, 0, 0, 9])]


def build_ip(peer: EdPeer, action: Action, now: float) -> list[bytes] | None:
    """The frames for *action*: an IPv4-level variant of in-order data, or test_fast_path's."""
    kind, n, k = action
    if kind not in IP_KINDS:
        frm = build(peer, action, now)
        return None if frm is None else [wrap(frm, peer.offload, k)]
    if kind == "empty":
        return [wrap(b"", peer.offload, k)]
    peer.tsval += 1
    ident = peer.tsval & 0xFFFF  # each datagram its own Identification (fragments: one each)
    data = payload(n, peer.seq)
    seg = peer.segment(peer.seq, ACK, data)
    tcp = tcp_bytes(seg, options=peer.options())
    accepted = kind in ("ip_opts", "ip_pad", "ip_tos", "ip_ttl1", "ip_frag")
    if accepted:
        peer.seq = (peer.seq + n) & MASK
    if kind == "ip_frag":
        cut = 8 * max(1, min(len(tcp) // 16, 1 + k % 8))  # RFC 791 §3.2: in units of 8 bytes
        first = ip_frame(tcp[:cut], flags_frag=0x2000, ident=ident)
        second = ip_frame(tcp[cut:], flags_frag=cut // 8, ident=ident)
        return [wrap(first, peer.offload, k), wrap(second, peer.offload, k)]
    frm = {
        "ip_opts": lambda: ip_frame(tcp, ver_ihl=0x46, options=b"\x01\x01\x01\x00"),
        "ip_pad": lambda: ip_frame(tcp) + bytes(1 + k % 20),
        "ip_tos": lambda: ip_frame(tcp, tos=(0xB8 | (k & 3))),
        "ip_ttl1": lambda: ip_frame(tcp, ttl=1),
        "ip_mf": lambda: ip_frame(tcp, flags_frag=0x2000, ident=ident),
        "ip_csum": lambda: ip_frame(tcp, bad_csum=True),
        "ip_dst": lambda: ip_frame(tcp, dst=bytes([10, 0, 0, 99])),
        "ip_bcast": lambda: ip_frame(tcp, dst=bytes([10, 0, 0, 255]) if k % 2 else b"\xff\xff\xff\xff"),
        "ip_src_loop": lambda: ip_frame(tcp, src=BAD_SOURCES[0]),
        "ip_src_own": lambda: ip_frame(tcp, src=BAD_SOURCES[1]),
        "ip_src_bcast": lambda: ip_frame(tcp, src=BAD_SOURCES[2 + k % 2]),
        "ip_src_zero": lambda: ip_frame(tcp, src=BAD_SOURCES[4]),
        "ip_reserved": lambda: ip_frame(tcp, flags_frag=0xC000),
        "ip_trunc": lambda: ip_frame(tcp, total=20 + len(tcp) + 1 + k % 9),
        "ip_long_total": lambda: ip_frame(tcp, total=20 + len(tcp) - 1 - k % 9),
        "ip_udp": lambda: ip_frame(tcp, proto=17 if k % 2 else 1),
        "ip_v6": lambda: ip_frame(tcp, ver_ihl=0x65),
        "other_port": lambda: ip_frame(
            tcp_bytes(TcpRepr(REMOTE_PORT + 1, LOCAL_PORT, seg.seq, seg.ack, ACK, 100, data))
        ),
        "short": lambda: ip_frame(tcp)[: 20 + k % 20],
    }[kind]()
    return [wrap(frm, peer.offload, k)]


def run(features: dict[str, Any], script: list[Action], offload: bool = False) -> EdSide:
    """Feed *script* to a stack with early demux and one without, in lockstep, comparing after
    every step; return the early side."""
    with capture_logs() as logs:
        early, plain = EdSide(features, True, offload), EdSide(features, False, offload)
        assert early.tcp.early_demux is not None and plain.tcp.early_demux is None
        peer = EdPeer()
        peer.offload = offload
        now = 1.0
        handshake([early, plain], peer, now)
        compare(early, plain, "handshake")
        # The SYN (no connection yet) and the handshake's last ACK (SYN-RECEIVED) are not
        # predicted: taken early all the same.
        assert early.stack.stats.events[EARLY_SLOW] == 2
        for s in (early, plain):
            # The connection also under each invalid source the ip_src_* frames claim: no such
            # connection can arise (the IPv4 layer drops the SYN), so without it early demux's
            # own source checks (RFC 1122 §3.2.1.3) would never be reached by a test.
            for addr in BAD_SOURCES:
                s.tcp.connections[(addr, REMOTE_PORT, LOCAL_PORT)] = s.conn  # type: ignore[assignment]
        for i, action in enumerate(script):
            now += 0.001 * (1 + action[2] % 7)
            kind = action[0]
            step = f"step {i}: {action}"
            frm = None if kind in ("tick", "write", "read", "shutdown") else build_ip(peer, action, now)
            outs = []
            logged = []
            for s in (early, plain):
                start = len(logs.entries)
                if kind == "tick":
                    outs.append(s.tick(now + action[2] / 1000))
                elif frm is None:
                    outs.append(s.user(kind, action[1] * (1 + action[2] % 4), now))
                else:
                    out: list[bytes] = []
                    for piece in frm:
                        out += s.feed(piece, now)
                    outs.append(out + s.tick(now))
                logged.append(logs.entries[start:])
            if kind == "tick":
                now += action[2] / 1000
            assert outs[0] == outs[1], step
            assert logged[0] == logged[1], step
            peer.saw(outs[0])
            compare(early, plain, step)
    assert plain.stack.stats.events[EARLY] == plain.stack.stats.events[EARLY_SLOW] == 0
    return early


def compare(a: EdSide, b: EdSide, step: str) -> None:
    assert a.app.events == b.app.events, step
    assert a.read == b.read, step
    assert a.counters() == b.counters(), step
    assert a.stack.frames_in == b.stack.frames_in, step
    assert a.conn is not None and b.conn is not None
    assert snapshot(a.conn) == snapshot(b.conn), step


def taken(side: EdSide) -> int:
    return side.stack.stats.events[EARLY]


PREFIX: list[Action] = [("data", 1000, 0), ("data", 1448, 0), ("write", 700, 0), ("ack", 1, 100)]


@pytest.mark.parametrize("name", sorted(FEATURES))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=actions)
def test_early_demux_and_the_pipeline_agree(name: str, script: list[Action]) -> None:
    early = run(FEATURES[name], PREFIX + script)
    assert taken(early) >= 3  # the prefix's two data segments and one ACK at least
    events = early.stack.stats.events
    assert (
        taken(early)
        <= events["tcp.fast_path"] + events["tcp.fast_ack"] + early.stack.stats.drops[("tcp", "bad_checksum")]
    )


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=actions)
def test_early_demux_and_the_pipeline_agree_with_offload(script: list[Action]) -> None:
    """The same behind TUN offload's ``virtio_net_hdr``: the link's checks and counters
    (``link.gso_frames_in``, ``link.unsupported_gso``) and a checksum the link vouches for."""
    early = run(FEATURES["default"], PREFIX + script, offload=True)
    assert taken(early) >= 3


@pytest.mark.parametrize("offload", [False, True])
def test_bulk_receive_takes_early_demux_for_every_segment(offload: bool) -> None:
    """In-order data read as it arrives, then acknowledgments of our data: every frame is taken
    straight from the link, and counted as the pipeline counts it."""
    script: list[Action] = []
    for _ in range(40):
        script += [("data", 1448, 0), ("read", 3000, 0)]
    script += [("write", 1448, 3)]
    for _ in range(10):
        script += [("ack", 1, 50), ("write", 1000, 0)]
    early = run(FEATURES["default"], script, offload)
    events = early.stack.stats.events
    assert (events["tcp.fast_path"], events["tcp.fast_ack"]) == (40, 10)
    assert taken(early) == 50


def test_the_refused_go_up_the_pipeline() -> None:
    """Each IPv4 variant early demux must refuse is refused (and counted by the pipeline as
    before); the valid ones it cannot take (options, fragments) are still predicted by TCP."""
    script: list[Action] = [("data", 100, 0)]
    script += [(kind, 100, 1) for kind in IP_KINDS]
    early = run(FEATURES["default"], script)
    drops = early.stack.stats.drops
    for reason in ("not_for_us", "bad_checksum", "broadcast", "bad_source", "reserved_flag", "truncated"):
        assert drops[("ipv4", reason)] >= 1, reason
    assert drops[("ipv4", "bad_version")] == 1 and drops[("link", "empty")] == 1
    # Taken: the first data, padding, TOS and TTL, and the datagram whose Total Length cuts its
    # segment short (a TCP bad_checksum drop either way); options and fragments went the pipeline.
    assert taken(early) == 5 and drops[("tcp", "bad_checksum")] == 1
    assert early.stack.stats.events["tcp.fast_path"] == 6


@pytest.mark.parametrize(("middleware", "at"), [("pcap", 1), ("pcap", 2), ("fault", 1), ("seqshift", 2)])
def test_middleware_on_the_way_turns_early_demux_off(middleware: str, at: int, tmp_path: Any) -> None:
    """A middleware between the link and TCP must see every frame: early demux is not installed,
    and predicted segments go up the pipeline (the fast path still counts them)."""
    layer: dict[str, Any] = {"type": middleware}
    if middleware == "pcap":
        layer["path"] = str(tmp_path / "x.pcap")
    if middleware == "fault":
        layer["seed"] = 1
    cfg = stack_config(fast_path=True, early_demux=True)
    cfg["layers"].insert(at, layer)
    stack = build_stack(config_from_dict(cfg, host=PluginHost(entry_points=False)))
    tcp = tcp_layer(stack)
    assert tcp.early_demux is None and stack.early_receive is None
    side = EdSide({}, True)
    assert side.tcp.early_demux is not None and side.stack.early_receive is not None


def test_the_switch_and_the_fast_path_switch_turn_it_off() -> None:
    for kw in ({"early_demux": False}, {"fast_path": False}):
        stack = build_stack(config_from_dict(stack_config(**kw), host=PluginHost(entry_points=False)))
        assert tcp_layer(stack).early_demux is None and stack.early_receive is None


def test_a_connection_without_fast_path_is_left_to_the_pipeline() -> None:
    side = EdSide(FEATURES["none"], True)
    peer = EdPeer()
    handshake([side, EdSide(FEATURES["none"], True)], peer, 1.0)
    assert side.conn is not None
    side.conn.fast_path = False
    side.feed((build_ip(peer, ("data", 100, 0), 1.1) or [b""])[0], 1.1)
    assert taken(side) == 0 and side.conn.bytes_received == 100
    side.conn.fast_path = True
    side.feed((build_ip(peer, ("data", 100, 0), 1.2) or [b""])[0], 1.2)
    assert taken(side) == 1 and side.conn.bytes_received == 200


def test_the_handshake_ack_to_a_full_accept_queue_goes_up_the_pipeline() -> None:
    """RFC 4987 §3.2: the TCP layer drops the ACK that would complete a handshake nobody can
    accept; early demux leaves that frame to the pipeline, which counts the drop."""
    sides = [EdSide(FEATURES["default"], True), EdSide(FEATURES["default"], False)]
    peer = EdPeer()
    syn = TcpRepr(REMOTE_PORT, LOCAL_PORT, (peer.seq - 1) & MASK, 0, SYN, 0xFFFF)
    outs = [s.feed(frame_of(syn, b""), 1.0) for s in sides]
    assert outs[0] == outs[1]
    _, synack = strip(outs[0][0], False)
    peer.ack = (synack.seq + 1) & MASK
    for s in sides:
        s.tcp.listeners[LOCAL_PORT].backlog = 0  # the accept queue is full from now on
    ack = frame_of(peer.segment(peer.seq, ACK), b"")
    outs = [s.feed(ack, 1.1) for s in sides]
    assert outs[0] == outs[1]
    early, plain = sides
    assert early.counters() == plain.counters()
    assert early.stack.stats.drops[("tcp", "accept_queue_full")] == 1
    assert early.stack.stats.events[EARLY_SLOW] == 1  # the SYN only
    conns = [s.tcp.connections[(REMOTE_ADDR, REMOTE_PORT, LOCAL_PORT)] for s in sides]
    assert conns[0].state.value == conns[1].state.value == "SYN-RECEIVED"


SYN_VARIANTS = {
    "plain": (SYN, LOCAL_PORT, {}, True),
    "ecn_setup": (SYN | ECE | CWR, LOCAL_PORT, {}, True),
    "syn_fin": (SYN | 0x01, LOCAL_PORT, {}, False),
    "syn_rst": (SYN | 0x04, LOCAL_PORT, {}, False),
    "syn_ack": (SYN | ACK, LOCAL_PORT, {}, False),
    "rst": (0x04, LOCAL_PORT, {}, False),
    "ack": (ACK, LOCAL_PORT, {}, False),
    "no_listener": (SYN, LOCAL_PORT + 1, {}, False),
    "cookies_always": (SYN, LOCAL_PORT, {"syncookies": "always"}, False),
    "syn_queue_full": (SYN, LOCAL_PORT, {"syn_backlog": 0}, False),
    "accept_queue_full": (SYN, LOCAL_PORT, {"backlog": 0}, False),
}


@pytest.mark.parametrize("variant", sorted(SYN_VARIANTS))
def test_a_segment_without_connection_is_taken_only_as_a_plain_syn_to_a_listener(variant: str) -> None:
    """A segment of no connection: a plain SYN to a listener with room is taken early (the
    passive open), the rest goes up the pipeline; both stacks answer and count alike."""
    flags, port, listener_kw, take = SYN_VARIANTS[variant]
    sides = [EdSide(FEATURES["default"], True), EdSide(FEATURES["default"], False)]
    for s in sides:
        listener = s.tcp.listeners[LOCAL_PORT]
        for key, value in listener_kw.items():
            if key == "syncookies":
                listener.options = replace(listener.options, syncookies=value)
            else:
                setattr(listener, key, value)
    peer = EdPeer()
    opts = struct.pack("!BBHBBBBIIBBBB", 2, 4, 1460, 4, 2, 8, 10, peer.tsval, 0, 1, 3, 3, 7)
    seg = TcpRepr(REMOTE_PORT, port, 7000, 9000 if flags & ACK else 0, flags, 0xFFFF)
    outs = [s.feed(frame_of(seg, opts if flags & SYN else b""), 1.0) for s in sides]
    if "cookies" in early_counter_names(sides[1]):  # each stack its own cookie secret
        assert [strip(f, False)[1].flags for f in outs[0]] == [strip(f, False)[1].flags for f in outs[1]] == [SYN | ACK]
    else:
        assert outs[0] == outs[1]
    early, plain = sides
    assert early.counters() == plain.counters()
    assert early.stack.stats.events[EARLY_SLOW] == (1 if take else 0)
    states = [getattr(s.tcp.connections.get((REMOTE_ADDR, REMOTE_PORT, port)), "state", None) for s in sides]
    assert states[0] == states[1]
    assert (states[0] is not None) == take


def early_counter_names(side: EdSide) -> str:
    return " ".join(side.stack.stats.events)
