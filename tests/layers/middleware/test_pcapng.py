"""Tests for the pcapng capture with decision comments (layers/middleware/pcapng.py).

The files are read back by two libraries that are not ours: dpkt checks the block structure
(section and interface headers, one Enhanced Packet Block per frame), scapy reads the frames and
their comments (``pkt.comments``); tests/integration/test_pcapng_wire.py adds tshark.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dpkt
import pytest
from scapy.layers.inet import IP, TCP
from scapy.utils import PcapNgReader, rdpcap

from framework import lazylog
from framework.context import Context
from framework.handler import BaseHandler
from framework.lazylog import LazyLog, debug_enabled
from framework.packet import Packet
from framework.registry import Registry
from framework.stack import Stack
from layers.middleware import pcap
from layers.middleware.pcap import PcapSettings, PcapWriter
from layers.middleware.pcapng import COMMENTS_MAX, HOLD_MAX, PENDING_MAX, PcapngWriter, frame_conn_key, label_conn_key
from tcpstack.config import build_stack, config_from_dict
from tcpstack.plugins import PluginHost
from tcpstack.testing.pair import StackPair
from tests.layers.middleware.helpers import ipv4_datagram, make_stack, outbound

# The connection a synthetic frame from 10.0.0.1:4000 to us at 10.0.0.2:80 belongs to, as its
# connection's decision log names it (ConnInfo.label: local>remote).
CONN = "10.0.0.2:80>10.0.0.1:4000"
OTHER = "10.0.0.2:81>10.0.0.1:4001"


def tcp_in(body: bytes = b"", *, sport: int = 4000, dport: int = 80, ident: int = 0) -> bytes:
    """An inbound IPv4 datagram of protocol 6 starting with the ports (all the writer reads of it)."""
    return ipv4_datagram(struct.pack("!HH", sport, dport) + body, proto=6, ident=ident)


def tcp_out(body: bytes = b"", *, sport: int = 80, dport: int = 4000, ident: int = 0) -> Packet:
    """An outbound packet from us (10.0.0.2:80) to 10.0.0.1:4000, IPv4 header not yet serialized."""
    return outbound(struct.pack("!HH", sport, dport) + body, ident=ident, proto=6)


def decide(conn: str, what: str, t: float, **kw: Any) -> None:
    """A decision as a policy takes it: a debug-level ``tcp.decision`` through a LazyLog."""
    LazyLog("tcpstack.decision", conn, "tester").debug("tcp.decision", decision=what, rfc="RFC 0 §1", t=t, **kw)


class Scripted(BaseHandler):
    """Above the writer: runs ``script(pkt, ctx, self)`` on every inbound packet and consumes it
    (replies with ``self.reply``, decisions with :func:`decide`)."""

    def __init__(self, script: Callable[[Packet, Context, Scripted], None]) -> None:
        self.name = "scripted"
        self.script = script

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        self.script(pkt, ctx, self)
        return None

    def reply(self, ctx: Context, body: bytes = b"", **kw: int) -> None:
        ctx.transmit(self, tcp_out(body, **kw))


def frames(data: bytes | Path) -> list[tuple[float, bytes, list[str]]]:
    """(time, bytes, comments) of each frame of a pcapng, as scapy reads them."""
    src = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    out = []
    with PcapNgReader(src) as reader:  # type: ignore[arg-type]
        for p in reader:
            out.append((float(p.time), bytes(p), [c.decode() for c in (p.comments or [])]))
    return out


def blocks(data: bytes) -> list[tuple[int, bytes]]:
    """(type, whole block) of each pcapng block, walked by the length fields."""
    out, pos = [], 0
    while pos < len(data):
        kind, total = struct.unpack_from("<II", data, pos)
        assert total % 4 == 0 and total >= 12
        assert struct.unpack_from("<I", data, pos + total - 4)[0] == total
        out.append((kind, data[pos : pos + total]))
        pos += total
    return out


def writer_stack(script: Callable[[Packet, Context, Scripted], None] | None = None, **kw: Any) -> Any:
    buf = io.BytesIO()
    writer = PcapngWriter("pcap", buf, **kw)
    middle = [writer] if script is None else [writer, Scripted(script)]
    stack, top = make_stack(*middle)
    return buf, writer, stack, top, (middle[1] if script else None)


@pytest.fixture(autouse=True)
def no_tap_left() -> Any:
    """Every test closes its writers: no debug tap stays installed behind it (removed if one did)."""
    yield
    left = list(lazylog._taps)
    for tap in left:
        lazylog.remove_debug_tap(tap)
    assert not left


# ====================================================================== the format


def test_format_is_read_by_dpkt_and_scapy_with_the_classic_frames_and_times() -> None:
    """Section header, one LINKTYPE_RAW interface with the snaplen, one EPB per frame: dpkt reads the
    same frames and times as the classic writer records from the same calls, scapy reads the comment."""

    def script(pkt: Packet, ctx: Context, me: Scripted) -> None:
        decide(CONN, "ACK delayed", ctx.now, deadline=ctx.now + 0.04)

    classic_buf = io.BytesIO()
    classic = PcapWriter("pcap", classic_buf, snaplen=100)
    classic.time_offset = 1_700_000_000.0
    c_stack, c_top = make_stack(classic)
    buf, writer, stack, top, _ = writer_stack(script, snaplen=100)
    writer.time_offset = 1_700_000_000.0
    for st, tp in ((c_stack, c_top), (stack, top)):
        st.receive_frame(tcp_in(b"x" * 200, ident=1), now=0.5)
        st.send(tp, tcp_out(b"y" * 3, ident=2), now=0.75)
        st.frames_to_send(now=0.75)
    writer.close()
    classic.close()

    data = buf.getvalue()
    kinds = [k for k, _ in blocks(data)]
    assert kinds == [0x0A0D0D0A, 0x00000001, 6, 6]
    idb = dpkt.pcapng.InterfaceDescriptionBlockLE(blocks(data)[1][1])
    assert (idb.linktype, idb.snaplen) == (101, 100)
    got = list(dpkt.pcapng.Reader(io.BytesIO(data)))
    want = list(dpkt.pcap.Reader(io.BytesIO(classic_buf.getvalue())))
    assert [(round(ts, 6), bytes(b)) for ts, b in got] == [(round(ts, 6), bytes(b)) for ts, b in want]
    epb = dpkt.pcapng.EnhancedPacketBlockLE(blocks(data)[2][1])
    assert (epb.caplen, epb.pkt_len) == (100, 224)  # cut to the snaplen, the original length kept
    assert [o.text for o in epb.opts if o.code == 1] == ["ACK delayed, tester, RFC 0 §1, deadline 40 ms"]
    assert frames(data)[0][2] == ["ACK delayed, tester, RFC 0 §1, deadline 40 ms"]
    assert frames(data)[1][2] == []
    assert writer.comments == 1 and writer.frames == 2


def test_classic_pcap_is_unchanged_byte_for_byte() -> None:
    """The classic writer's bytes for a fixed sequence are those of the writer before pcapng existed
    (the hash was taken from it), decisions taken meanwhile add nothing, and no debug tap is installed."""
    buf = io.BytesIO()
    w = PcapWriter("pcap", buf, snaplen=100)
    w.time_offset = 1_700_000_000.25
    stack, top = make_stack(w)
    assert not isinstance(w, PcapngWriter) and not lazylog._taps
    for i in range(20):
        stack.receive_frame(ipv4_datagram(bytes(range(i * 7 % 150)), ident=i), now=i * 0.0137)
        decide(CONN, "ACK delayed", i * 0.0137)
        if i % 3 == 0:
            stack.send(top, outbound(b"r" * (i * 11), ident=1000 + i), now=i * 0.0137 + 0.001)
            stack.frames_to_send(now=i * 0.0137 + 0.001)
    w.close()
    data = buf.getvalue()
    assert len(data) == 2517
    assert hashlib.sha256(data).hexdigest() == "9c305a44410db81274d72bbe3247f7c258fbd804b97be075ad6212940ca985a5"


def test_debug_tap_only_while_a_pcapng_writer_is_open() -> None:
    """The pcapng writer taps decisions from creation to close (so debug_enabled() is true only then);
    a dropped writer that was never closed does not keep its tap."""
    assert not lazylog._taps
    w = PcapngWriter("pcap", io.BytesIO())
    assert len(lazylog._taps) == 1 and debug_enabled()
    w.close()
    assert not lazylog._taps
    w.close()  # idempotent
    PcapngWriter("pcap", io.BytesIO())  # never closed, dropped at once
    assert not lazylog._taps


@pytest.mark.parametrize(
    ("name", "kind"),
    [("c.pcapng", PcapngWriter), ("c.PCAPNG", PcapngWriter), ("c.pcap", PcapWriter), ("c.cap", PcapWriter)],
)
def test_the_factory_picks_the_format_by_the_name(tmp_path: Path, name: str, kind: type) -> None:
    """``.pcapng`` (any case) gets pcapng; ``.pcap`` and any other name classic pcap."""
    registry = Registry()
    pcap.stack_register(registry)
    writer = registry.layers["pcap"].factory("pcap", PcapSettings(path=str(tmp_path / name)))
    try:
        assert type(writer) is kind
    finally:
        writer.close()
    magic = (tmp_path / name).read_bytes()[:4]
    assert magic == (b"\x0a\x0d\x0d\x0a" if kind is PcapngWriter else b"\xd4\xc3\xb2\xa1")


def test_a_frame_and_its_connections_label_give_the_same_key() -> None:
    """A frame's connection, either direction, has the key of its connection's label (ConnInfo.label)."""
    key = label_conn_key(CONN)
    assert key is not None and len(key) == 12
    assert frame_conn_key(tcp_in(), False) == key
    assert frame_conn_key(tcp_out().to_bytes(), True) == key
    assert frame_conn_key(tcp_in(), True) != key  # the same frame seen as ours: the mirror image
    assert label_conn_key(OTHER) not in (None, key)
    assert frame_conn_key(ipv4_datagram(b"\0" * 8), False) is None  # not TCP
    assert frame_conn_key(tcp_in()[:22], False) is None  # too short to hold the ports
    frag = bytearray(tcp_in())
    frag[6:8] = b"\x00\x10"  # a later fragment: no TCP header in it
    assert frame_conn_key(frag, False) is None
    for odd in ("?", "", "a>b", "10.0.0.2:80>10.0.0.1:x", "10.0.0.2:80>999.0.0.1:1", "10.0.0.2:80>10.0.0.1:70000"):
        assert label_conn_key(odd) is None, odd


# ====================================================================== which frame a decision belongs to


def test_a_decision_while_a_frame_is_handled_lands_on_it_even_after_replies() -> None:
    """Replies recorded while an inbound frame is handled wait behind it; a decision taken after them
    is still the inbound frame's, and the file keeps the order the frames were recorded in."""

    def script(pkt: Packet, ctx: Context, me: Scripted) -> None:
        me.reply(ctx, b"reply-1", ident=11)
        decide(CONN, "marked lost", ctx.now, segments=2)
        me.reply(ctx, b"reply-2", ident=12)
        decide(CONN, "cwnd reduced", ctx.now, reason="loss")
        decide(OTHER, "not this frame's", ctx.now)  # another connection's: waits for its own frame

    buf, writer, stack, _top, _ = writer_stack(script)
    stack.receive_frame(tcp_in(b"ack", ident=1), now=2.0)
    assert buf.getvalue().count(b"reply") == 0  # held while the frame is handled
    stack.frames_to_send(now=2.0)  # the stack's next call: the handling is over
    writer.close()
    got = frames(buf.getvalue())
    assert [IP(b).id for _, b, _ in got] == [1, 11, 12]
    assert got[0][2] == [
        "marked lost, tester, RFC 0 §1, segments 2",
        "cwnd reduced, tester, RFC 0 §1, reason loss",
    ]
    assert got[1][2] == [] and got[2][2] == []
    assert stack.stats.events["pcap.comments_unplaced"] == 1  # OTHER's never got a frame


def test_each_inbound_frame_of_a_batch_gets_its_own_decisions() -> None:
    """Frames read in one batch: each frame's decisions are its own (the next frame ends the handling)."""

    def script(pkt: Packet, ctx: Context, me: Scripted) -> None:
        ident = int.from_bytes(bytes(pkt.payload[4:6]), "big")
        decide(CONN, f"decided on {ident}", ctx.now)

    buf, writer, stack, _top, _ = writer_stack(script)
    for i in range(5):
        stack.receive_frame(tcp_in(b"\0" * 20, ident=i), now=1.0)
    writer.close()
    got = frames(buf.getvalue())
    assert [(IP(b).id, c) for _, b, c in got] == [(i, [f"decided on {i}, tester, RFC 0 §1"]) for i in range(5)]


def test_a_decision_outside_handling_lands_on_our_next_frame_of_its_connection_with_its_time() -> None:
    """A decision taken outside inbound handling (a timer, an application's send) waits for the next
    frame we send on its connection, not another connection's nor an inbound one; its time is shown."""
    buf, writer, stack, top, _ = writer_stack()
    stack.handle_timer(now=1.0)
    decide(CONN, "segment held", 1.0)  # taken at 1.0, outside any inbound handling
    stack.send(top, tcp_out(b"other", sport=81, dport=4001, ident=1), now=1.1)  # OTHER's frame
    stack.receive_frame(tcp_in(b"in", ident=2), now=1.2)  # inbound, on CONN
    stack.send(top, tcp_out(b"caused", ident=3), now=1.25)  # ours, on CONN: the frame it caused
    stack.send(top, tcp_out(b"later", ident=4), now=1.3)
    writer.close()
    got = frames(buf.getvalue())
    assert [(IP(b).id, c) for _, b, c in got] == [
        (1, []),
        (2, []),
        (3, ["segment held, tester, RFC 0 §1 (decided 250 ms earlier)"]),
        (4, []),
    ]


def test_a_decision_at_the_end_of_batch_output_is_not_the_last_inbound_frames() -> None:
    """A layer's end-of-batch output (TCP's flush, where Nagle holds a segment) runs after the batch's
    frames were handled, before the capture's own flush: its decisions go to the frame they caused,
    not to the inbound frame still held (the stack marked the flush as outside inbound handling)."""

    class Flusher(Scripted):
        def flush(self, ctx: Context) -> None:
            if self.pending:
                self.pending = False
                decide(CONN, "segment held", ctx.now)
                self.reply(ctx, b"sent at the flush", ident=2)

    def script(pkt: Packet, ctx: Context, me: Scripted) -> None:
        me.pending = True  # type: ignore[attr-defined]

    buf = io.BytesIO()
    writer = PcapngWriter("pcap", buf)
    flusher = Flusher(script)
    flusher.pending = False  # type: ignore[attr-defined]
    stack, _top = make_stack(writer, flusher)
    stack.receive_frame(tcp_in(b"ack", ident=1), now=1.0)
    stack.frames_to_send(now=1.0)
    writer.close()
    got = frames(buf.getvalue())
    assert [(IP(b).id, c) for _, b, c in got] == [(1, []), (2, ["segment held, tester, RFC 0 §1"])]


def test_a_timer_decision_at_the_frames_time_shows_no_time() -> None:
    """A decision whose frame went out at the same instant (an RTO and its retransmission) is shown as is."""
    buf, writer, stack, top, _ = writer_stack()
    decide(CONN, "cwnd reduced", 3.0, reason="retransmission timeout")
    stack.send(top, tcp_out(b"retransmission"), now=3.0)
    writer.close()
    assert frames(buf.getvalue())[0][2] == ["cwnd reduced, tester, RFC 0 §1, reason retransmission timeout"]


# ====================================================================== bounds


def test_held_records_are_bounded_and_keep_their_order() -> None:
    """However many replies one frame's handling records, at most HOLD_MAX records wait; then they are
    written, in order, and a decision taken after that goes to the connection's next frame we send."""
    seen: list[int] = []

    def script(pkt: Packet, ctx: Context, me: Scripted) -> None:
        decide(CONN, "early", ctx.now)
        for i in range(3 * HOLD_MAX):
            me.reply(ctx, ident=100 + i)
            seen.append(len(writer._held))
        decide(CONN, "late", ctx.now)

    buf, writer, stack, top, _ = writer_stack(script)
    stack.receive_frame(tcp_in(ident=1), now=1.0)
    assert max(seen) < HOLD_MAX
    stack.frames_to_send(now=1.0)
    stack.send(top, tcp_out(ident=999), now=1.0)
    writer.close()
    got = frames(buf.getvalue())
    assert [IP(b).id for _, b, _ in got] == [1, *range(100, 100 + 3 * HOLD_MAX), 999]
    assert got[0][2] == ["early, tester, RFC 0 §1"]
    assert [c for _, _, c in got[1:-1]] == [[]] * (3 * HOLD_MAX)
    assert got[-1][2] == ["late, tester, RFC 0 §1"]  # the handling's frame was written already
    assert writer.frames == len(got)


def test_sync_writes_what_is_held_without_reordering(tmp_path: Path) -> None:
    """sync() writes a frame held for its handling, so a reader of the file sees every frame so far."""
    path = tmp_path / "s.pcapng"
    with open(path, "wb") as f:
        buf_writer = PcapngWriter("pcap", f)
        stack, top = make_stack(buf_writer)
        stack.receive_frame(tcp_in(ident=1), now=1.0)
        buf_writer.sync()
        assert [IP(b).id for _, b, _ in frames(path)] == [1]
        stack.send(top, tcp_out(ident=2), now=1.5)
        stack.receive_frame(tcp_in(ident=3), now=2.0)
        buf_writer.close()
    assert [IP(b).id for _, b, _ in frames(path)] == [1, 2, 3]


def test_comments_per_frame_and_waiting_decisions_are_bounded() -> None:
    """At most COMMENTS_MAX comments on a frame and one that tells how many more; at most PENDING_MAX
    decisions wait for a frame, the oldest dropped and counted."""

    def script(pkt: Packet, ctx: Context, me: Scripted) -> None:
        for i in range(COMMENTS_MAX + 5):
            decide(CONN, f"d{i}", ctx.now)

    buf, writer, stack, top, _ = writer_stack(script)
    stack.receive_frame(tcp_in(ident=1), now=1.0)
    stack.frames_to_send(now=1.0)
    for i in range(PENDING_MAX + 3):
        decide(OTHER, f"p{i}", 1.0)
    stack.send(top, tcp_out(sport=81, dport=4001, ident=2), now=1.0)
    writer.close()
    got = frames(buf.getvalue())
    assert got[0][2] == [f"d{i}, tester, RFC 0 §1" for i in range(COMMENTS_MAX)] + ["5 more decisions not shown"]
    assert got[1][2][0] == "p3, tester, RFC 0 §1"  # p0..p2 dropped
    assert (
        len(got[1][2]) == COMMENTS_MAX + 1 and got[1][2][-1] == f"{PENDING_MAX - COMMENTS_MAX} more decisions not shown"
    )
    assert stack.stats.events["pcap.comments_dropped"] == 3


def test_a_decision_on_no_tcp_connection_is_counted_not_placed() -> None:
    """A decision whose connection label names no IPv4 TCP connection (a policy built without its
    connection's log says "?") lands on no frame and is counted at close."""
    buf, writer, stack, top, _ = writer_stack()
    decide("?", "ACK delayed", 1.0)
    stack.send(top, tcp_out(), now=1.0)
    writer.close()
    assert frames(buf.getvalue())[0][2] == []
    assert writer.unplaced == 1 and stack.stats.events["pcap.comments_unplaced"] == 1


def test_a_write_error_stops_the_capture_cleanly() -> None:
    """A sink that fails (a full disk) stops the capture with a counted error; packets still pass."""

    class Full(io.BytesIO):
        fail = False

        def write(self, b: Any) -> int:
            if self.fail:
                raise OSError(28, "No space left on device")
            return super().write(b)

    sink = Full()
    writer = PcapngWriter("pcap", sink)
    stack, top = make_stack(writer)
    sink.fail = True
    stack.receive_frame(tcp_in(), now=1.0)
    stack.send(top, tcp_out(), now=1.0)
    sent = stack.frames_to_send(now=1.0)
    assert len(sent) == 1 and top.received
    assert stack.stats.events["pcap.write_errors"] == 1 and writer.closed
    writer.close()


# ====================================================================== two real stacks


def capture_pair(
    tmp_path: Path, name: str, server_tcp: dict[str, Any] | None = None, **kw: Any
) -> tuple[StackPair, Path]:
    """A :class:`StackPair` whose server (10.0.0.2) captures to *name* just above its link."""
    path = tmp_path / name
    pair = StackPair(server_tcp={"pcap": str(path), **(server_tcp or {})}, **kw)
    return pair, path


def close_pair(pair: StackPair) -> None:
    pair.server_host.stack_closed(pair.server)
    pair.client_host.stack_closed(pair.client)


def test_ack_delayed_is_on_the_peers_data_frame_and_frames_match_the_classic_capture(tmp_path: Path) -> None:
    """An upload to the capturing stack with delayed ACKs: every "ACK delayed" and "ACK now" comment is on
    a data segment from the peer, on the connection; the frames and their times are those the classic
    capture of the same (deterministic) run holds."""
    runs = {}
    for name in ("s.pcap", "s.pcapng"):
        pair, path = capture_pair(tmp_path, name, features={"delayed_ack": {}})
        c = pair.open()
        for _ in range(5):
            c.send(b"u" * 3000)
            pair.run_for(0.2)
        c.close()
        pair.run_for(2.0)
        close_pair(pair)
        runs[name] = path
    classic = rdpcap(str(runs["s.pcap"]))
    got = frames(runs["s.pcapng"])
    assert [(round(float(p.time), 6), bytes(p)) for p in classic] == [(round(t, 6), b) for t, b, _ in got]
    delack = [(IP(b), c) for _, b, cs in got for c in cs if c.split(",")[0] in ("ACK delayed", "ACK now")]
    assert any(c.startswith("ACK delayed, delayed_ack, RFC 1122 §4.2.3.2, deadline 40 ms") for _, c in delack)
    for ip, c in delack:
        assert ip.src == "10.0.0.1" and len(ip[TCP].payload) > 0, (c, ip.summary())


def test_an_rto_decision_is_on_the_retransmission_it_caused(tmp_path: Path) -> None:
    """The peer loses our last data segment (no SACK, no RACK): the retransmission timer fires and the
    window reduction it decides is on the retransmission, the frame the timer caused, not on a frame
    of the peer's."""
    pair, path = capture_pair(tmp_path, "rto.pcapng", client_tcp={"fault": {}})
    c = pair.open()
    fault = pair.client.layer("fault")
    data_from_server = {"n": 0}

    def third_data_segment(d: bytes) -> bool:
        ihl = (d[0] & 15) * 4
        if d[9] != 6 or len(d) <= ihl + (d[ihl + 12] >> 4) * 4:
            return False  # not TCP, or no payload
        data_from_server["n"] += 1
        return data_from_server["n"] == 3

    fault.add_rule("drop", direction="in", match=third_data_segment)  # type: ignore[attr-defined]
    c.reply(b"d" * 3000)
    pair.run_for(5.0)
    assert c.client.received == b"d" * 3000
    close_pair(pair)
    got = [(t, IP(b), cs) for t, b, cs in frames(path)]
    rto = [(t, ip) for t, ip, cs in got if any("reason retransmission timeout" in x for x in cs)]
    assert len(rto) == 1, [cs for _, _, cs in got]
    t, ip = rto[0]
    assert ip.src == "10.0.0.2" and len(ip[TCP].payload) > 0
    earlier = [p for tt, p, _ in got if tt < t and p.src == "10.0.0.2" and p[TCP].seq == ip[TCP].seq]
    assert earlier and len(earlier[0][TCP].payload) > 0  # the same data went out before: a retransmission
    assert not [cs for _, p, cs in got if p.src == "10.0.0.1" and any("retransmission timeout" in x for x in cs)]


def test_nagle_holding_is_on_the_segment_that_leaves_later_with_its_time(tmp_path: Path) -> None:
    """An application's small write while data is unacknowledged: Nagle holds it (a decision outside
    inbound handling) and the comment is on our data segment that carries it later, with how long before."""
    pair, path = capture_pair(tmp_path, "nagle.pcapng", delay=0.01, server_tcp={"features": {"nagle": {}}})
    c = pair.open()
    c.reply(b"first")
    pair.run_for(0.001)  # "first" is in flight
    c.reply(b"second")
    pair.run_for(1.0)
    assert c.client.received == b"firstsecond"
    close_pair(pair)
    got = [(IP(b), cs) for _, b, cs in frames(path)]
    held = [(ip, x) for ip, cs in got for x in cs if x.startswith("segment held")]
    assert held, got
    for ip, text in held:
        assert ip.src == "10.0.0.2" and bytes(ip[TCP].payload) == b"second", (text, ip.summary())
        assert text.endswith("ms earlier)"), text


def test_two_capturing_stacks_in_one_process_each_get_their_own_decisions(tmp_path: Path) -> None:
    """Both ends capture to pcapng in one process: each file's comments are on frames of its own stack's
    connections, the receiver's "ACK delayed" on the sender's data in both files' view."""
    client_path, server_path = tmp_path / "c.pcapng", tmp_path / "s.pcapng"
    pair = StackPair(
        client_tcp={"pcap": str(client_path)}, server_tcp={"pcap": str(server_path)}, features={"delayed_ack": {}}
    )
    c = pair.open()
    c.send(b"u" * 6000)
    c.reply(b"r" * 6000)
    pair.run_for(1.0)
    close_pair(pair)
    for path, us in ((client_path, "10.0.0.1"), (server_path, "10.0.0.2")):
        commented = [(IP(b), x) for _, b, cs in frames(path) for x in cs]
        assert any(x.startswith("ACK delayed") for _, x in commented)
        for ip, x in commented:
            if x.startswith(("ACK delayed", "ACK now")):
                assert ip.dst == us and len(ip[TCP].payload) > 0, (path.name, x, ip.summary())


def test_configured_pcapng_layer_is_closed_with_the_stack(tmp_path: Path) -> None:
    """A configured ``.pcapng`` path builds the pcapng writer; the stack_closed hook writes and closes it."""
    host = PluginHost(entry_points=False)
    path = tmp_path / "cfg.pcapng"
    config = config_from_dict({"layers": [{"type": "memory"}, {"type": "pcap", "path": str(path)}]}, host=host)
    stack: Stack = build_stack(config)
    writer = stack.layer("pcap")
    assert isinstance(writer, PcapngWriter)
    stack.receive_frame(tcp_in(ident=7), now=4.0)
    host.stack_closed(stack)
    assert writer.closed
    assert [IP(b).id for _, b, _ in frames(path)] == [7]
