"""The Nagle algorithm and cork mode (RFC 896; RFC 9293 §3.7.4 SHLD-7, MUST-17; RFC 1122 §4.2.3.4).

Three levels (design notes C8): the :class:`Nagle` policy alone, one sans-IO connection at
explicit times, and the wiring (per-connection switch, two simulated stacks).
"""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from layers.tcp.policy import SendPolicy, TcpOptions
from plugins.nagle import Nagle, NagleSettings
from tests.layers.tcp.helpers import SEND, data, recv, recv_nothing, send, tcp_layer
from tests.plugins.helpers import L1, R1, Sink, TapSimulation, established_with, make_stack, transfer

PEER = socket.inet_aton("10.0.0.2")


def ack(n: int, **kw: object) -> object:
    """The peer's ACK of our first *n* bytes."""
    return replace(SEND, seq=R1, ack=L1 + n, **kw)


# ====================================================================== 1. the policy alone


class TestPolicy:
    def test_short_segment_goes_when_nothing_is_in_flight(self) -> None:
        """RFC 9293 §3.7.4: with nothing unacknowledged a short segment may go at once."""
        assert Nagle(NagleSettings()).may_send_small(10, in_flight=0, now=0.0)

    def test_short_segment_waits_while_data_is_in_flight(self) -> None:
        """RFC 896 / RFC 9293 §3.7.4 (SHLD-7): while data is unacknowledged, a short segment waits."""
        p = Nagle(NagleSettings())
        assert not p.may_send_small(10, in_flight=1, now=0.0)
        assert p.held == 1

    def test_cork_holds_even_with_nothing_in_flight(self) -> None:
        """docs/plugins.md (TCP_CORK, RFC 1122 §4.2.3.4): cork holds every short segment."""
        assert not Nagle(NagleSettings(cork=True)).may_send_small(10, in_flight=0, now=0.0)

    def test_default_policy_sends_small_segments(self) -> None:
        """RFC 9293 §3.7.4 MUST-17: without the feature (TCP_NODELAY) short segments always may go."""
        assert SendPolicy().may_send_small(1, in_flight=10_000, now=0.0)


# ====================================================================== 2. on one connection


class TestOnConnection:
    def test_small_write_is_held_until_the_ack(self) -> None:
        """RFC 9293 §3.7.4 (SHLD-7): a short segment waits while data is in flight and leaves with the ACK."""
        conn, _ = established_with({"nagle": {}})
        conn.send(b"a" * 10, 0.0)
        [first] = recv(conn, t=0.0)
        assert first.payload == b"a" * 10
        conn.send(b"b" * 5, 0.01)
        recv_nothing(conn, t=0.01)
        recv_nothing(conn, t=0.05)
        send(conn, t=0.06, seg=ack(10))
        [second] = recv(conn, t=0.06)
        assert (second.seq, second.payload) == (L1 + 10, b"b" * 5)

    def test_full_segment_is_not_held(self) -> None:
        """RFC 9293 §3.7.4: with data in flight a full-sized segment still goes; only the short tail waits."""
        conn, _ = established_with({"nagle": {}}, peer_mss=20)
        conn.send(b"a" * 10, 0.0)
        assert len(recv(conn, t=0.0)) == 1
        conn.send(data(30), 0.01)
        [full] = recv(conn, t=0.01)
        assert len(full.payload) == 20
        send(conn, t=0.02, seg=ack(30))
        [tail] = recv(conn, t=0.02)
        assert (tail.seq, tail.payload) == (L1 + 30, data(30)[20:])

    def test_without_nagle_small_writes_go_at_once(self) -> None:
        """RFC 9293 §3.7.4 MUST-17: with the feature off (TCP_NODELAY) each small write leaves at once."""
        conn, _ = established_with({})
        for i in range(3):
            conn.send(b"x", i * 0.01)
            [seg] = recv(conn, t=i * 0.01)
            assert seg.seq == L1 + i
        assert conn.in_flight == 3

    def test_cork_holds_until_the_sws_override_timer(self) -> None:
        """RFC 1122 §4.2.3.4 (TCP_CORK): a short segment waits even with nothing in flight, until ``sws_override``."""
        conn, _ = established_with({"nagle": {"cork": True}})
        conn.send(b"hello", 0.0)
        recv_nothing(conn, t=0.0)
        assert conn.get_timer() == pytest.approx(0.2)
        recv_nothing(conn, t=0.19)
        [seg] = recv(conn, t=0.2)
        assert seg.payload == b"hello"

    def test_cork_override_follows_the_connection_setting(self) -> None:
        """RFC 1122 §4.2.3.4: the override timeout is the connection's ``sws_override`` (0.1-1 s)."""
        conn, _ = established_with({"nagle": {"cork": True}}, sws_override=0.1)
        conn.send(b"hello", 0.0)
        recv_nothing(conn, t=0.0)
        assert [s.payload for s in recv(conn, t=0.1)] == [b"hello"]

    def test_cork_sends_full_segments_and_holds_the_tail(self) -> None:
        """RFC 1122 §4.2.3.4 (TCP_CORK): full segments go at once; the short tail waits for the override timer
        even after everything was acknowledged."""
        conn, _ = established_with({"nagle": {"cork": True}}, peer_mss=20)
        conn.send(data(50), 0.0)
        assert [len(s.payload) for s in recv(conn, t=0.0)] == [20, 20]
        send(conn, t=0.01, seg=ack(40))
        recv_nothing(conn, t=0.01)
        due = conn.get_timer()
        assert due == pytest.approx(0.21)
        recv_nothing(conn, t=0.2)
        [tail] = recv(conn, t=due)
        assert tail.payload == data(50)[40:]

    def test_full_timestamped_segments_are_not_short(self) -> None:
        """RFC 9293 §3.7.4 with RFC 7323 §3.2 (MUST-16): with timestamps a full segment is MSS - 12 bytes and
        Nagle sends several back to back (no stop-and-wait)."""
        conn, _synack = established_with(
            {"nagle": {}, "timestamps": {}}, peer_ts=1, peer_mss=1460, peer_window=65535, send_buffer=16384
        )
        assert conn.snd_mss == 1448
        conn.send(data(10_000), 0.0)
        segs = recv(conn, t=0.0)
        assert [len(s.payload) for s in segs] == [1448, 1448, 1448]  # the initial window: 4380 bytes
        assert all(s.ts is not None and 20 + s.options_len() + len(s.payload) + 20 == 1500 for s in segs)
        ecr = segs[0].ts[0] if segs[0].ts else 0
        send(conn, t=0.01, seg=ack(2896, ts=(2, ecr), window=65535))
        # cwnd 7276 after the ACK: three more full segments; the 1312-byte tail waits for the next ACK.
        assert [len(s.payload) for s in recv(conn, t=0.01)] == [1448, 1448, 1448]


# ====================================================================== 3. wiring


def one_byte_writes(*, nagle: bool, count: int = 100, every: float = 0.001) -> int:
    """A client writes *count* single bytes *every* seconds to a server 10 ms away (RTT); return the
    number of data segments the client sent."""
    sim = TapSimulation()
    a = make_stack("10.0.0.1/24", features={"nagle": {}} if nagle else {})
    b = make_stack("10.0.0.2/24")  # no delayed ACK: Nagle alone decides
    sim.wire(a, b, delay=0.005)
    ta, tb = tcp_layer(a), tcp_layer(b)
    server = Sink(tb)
    tb.listen(80, on_accept=server.attach)
    conn = ta.connect(PEER, 80, now=0.0)
    sim.run(until=0.05)
    assert conn.state.value == "ESTABLISHED"
    start = sim.now
    for i in range(count):
        sim.run(until=start + i * every)
        assert conn.send(b"x", sim.now) == 1
        ta.touch(conn)
    sim.run(until=start + 2.0)
    assert bytes(server.received) == b"x" * count
    return len(sim.data_segments(a))


class TestWiring:
    def test_one_byte_writes_are_coalesced_by_nagle_only(self) -> None:
        """RFC 896 (checklist W2): 100 one-byte writes 1 ms apart over a 10 ms RTT are a few segments with
        Nagle and one segment each without (TCP_NODELAY, MUST-17)."""
        with_nagle = one_byte_writes(nagle=True)
        without = one_byte_writes(nagle=False)
        assert without == 100
        assert with_nagle <= 15, with_nagle

    def test_on_by_default_and_off_for_one_connection(self) -> None:
        """RFC 9293 §3.7.4 MUST-17: Nagle is on in the default set and ``features={"nagle": None}`` turns it
        off (TCP_NODELAY) on one connection of the stack only."""
        tcp = tcp_layer(make_stack(default_features=True))
        nodelay = tcp.connect(PEER, 80, now=0.0, options=TcpOptions(features={"nagle": None}))
        default = tcp.connect(PEER, 81, now=0.0)
        assert type(nodelay.send_policy) is SendPolicy and "nagle" not in nodelay.features
        assert isinstance(default.send_policy, Nagle) and not default.send_policy.cork

    def test_cork_per_listener(self) -> None:
        """RFC 1122 §4.2.3.4: a listener's ``features={"nagle": {"cork": True}}`` corks only its connections."""
        tcp = tcp_layer(make_stack(features={"nagle": {}}))
        corked = tcp.listen(80, options=TcpOptions(features={"nagle": {"cork": True}}))
        plain = tcp.listen(81)
        assert corked.features["nagle"].cork and "nagle" not in plain.features

    def test_bulk_transfer_with_timestamps_sends_full_segments_back_to_back(self) -> None:
        """RFC 9293 §3.7.4 with RFC 7323 (MUST-16): with the default set (Nagle, timestamps, delayed ACK) a bulk
        transfer uses full 1448-byte segments in bursts and ends in a handful of RTTs, not one per segment."""
        payload = data(300_000)
        sim, _client, _ = transfer(
            make_stack(default_features=True), make_stack("10.0.0.2/24", default_features=True), payload
        )
        a = sim.stacks[0]
        segs = sim.data_segments(a)
        sizes = [len(s.payload) for _, s in segs]
        assert all(s.ts is not None for _, s in segs)
        assert set(sizes[:-1]) == {1448} and sum(sizes) == len(payload)
        bursts: dict[float, int] = {}
        for t, _ in segs:
            bursts[t] = bursts.get(t, 0) + 1
        assert max(bursts.values()) >= 8
        assert sim.now < 0.25, sim.now  # RTT 10 ms; stop-and-wait would take > 2 s for 208 segments
