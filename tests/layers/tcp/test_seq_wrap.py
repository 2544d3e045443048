"""Sequence numbers modulo 2**32 (RFC 9293 §3.4, checklist S1): properties of the arithmetic,
the receive path across the wrap, and whole transfers across 2**32 in both directions between
two stacks in a simulation (our ISS near 2**32 and the peer's ISN 0xFFFFFF00)."""

from __future__ import annotations

import socket
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from framework.simulation import Simulation
from layers.tcp.seq import HALF, MASK, seq_add, seq_diff, seq_ge, seq_gt, seq_in, seq_le, seq_lt
from layers.tcp.state import TcpState
from tests.layers.tcp.helpers import RECV, SEND, App, data, established, make_stack, recv, send, tcp_layer

S = TcpState
SEQ = st.integers(0, MASK)
DIST = st.integers(-(HALF - 1), HALF - 1)  # comparisons are defined for distances below 2**31


class TestArithmetic:
    @given(SEQ, DIST)
    def test_add_then_diff_is_the_distance(self, a: int, n: int) -> None:
        """RFC 9293 §3.4: arithmetic modulo 2**32; the signed distance undoes the addition."""
        b = seq_add(a, n)
        assert 0 <= b <= MASK
        assert seq_diff(b, a) == n

    @given(SEQ, DIST)
    def test_comparisons_follow_the_distance(self, a: int, n: int) -> None:
        """RFC 9293 §3.4: a < b iff b is ahead of a by less than 2**31, whatever the wrap."""
        b = seq_add(a, n)
        assert seq_lt(a, b) == (n > 0)
        assert seq_gt(a, b) == (n < 0)
        assert seq_le(a, b) == (n >= 0)
        assert seq_ge(a, b) == (n <= 0)
        assert seq_lt(a, b) + seq_gt(a, b) + (a == b) == 1

    @given(SEQ, st.integers(0, HALF // 2), st.integers(0, HALF // 2))
    def test_order_is_transitive_within_half_the_space(self, a: int, m: int, n: int) -> None:
        """RFC 9293 §3.4: within a window (< 2**31) the order is a total order: a <= a+m <= a+m+n."""
        b, c = seq_add(a, m), seq_add(a, m + n)
        assert seq_le(a, b) and seq_le(b, c) and seq_le(a, c)

    @given(SEQ, st.integers(0, HALF - 1), st.integers(-10, HALF))
    def test_seq_in_is_a_half_open_range(self, start: int, length: int, k: int) -> None:
        """RFC 9293 §3.3.1 "start =< x < end": seq_in holds exactly for the first *length* numbers from *start*."""
        x = seq_add(start, k)
        assert seq_in(x, start, seq_add(start, length)) == (0 <= k < length)

    def test_wrap_examples(self) -> None:
        """RFC 9293 §3.4: 0xFFFFFFFF < 0 < 1 across the wrap."""
        assert seq_lt(0xFFFFFFFF, 0) and seq_lt(0xFFFFFF00, 0x100)
        assert seq_add(0xFFFFFFFF, 1) == 0 and seq_add(0, -1) == 0xFFFFFFFF
        assert seq_diff(0x10, 0xFFFFFFF0) == 0x20


class TestReceiveAcrossTheWrap:
    def test_in_order_and_out_of_order_data_across_the_wrap(self) -> None:
        """RFC 9293 §3.4 (S1): the peer's ISN 0xFFFFFFF0: segments before and after 2**32, out of order, reassemble
        exactly."""
        irs, iss = 0xFFFFFFF0, 0xFFFFFFFA
        conn = established(irs=irs, iss=iss, recv_buffer=256)
        r1, l1 = seq_add(irs, 1), seq_add(iss, 1)
        peer = replace(SEND, ack=l1)
        send(conn, t=0.0, seg=replace(peer, seq=seq_add(r1, 20), payload=data(20, start=20)))  # past 2**32
        send(conn, t=0.0, seg=replace(peer, seq=r1, payload=data(20)))  # straddles 2**32
        dup, ack = recv(conn, t=0.0)
        assert dup == replace(RECV, seq=l1, ack=r1, window=256)  # the out-of-order segment's duplicate ACK
        assert ack == replace(RECV, seq=l1, ack=seq_add(r1, 40), window=216)
        assert conn.read() == data(40)

    def test_sending_across_the_wrap(self) -> None:
        """RFC 9293 §3.4 (S1): our ISS 0xFFFFFFF8: data across 2**32 is acknowledged and freed exactly."""
        iss = 0xFFFFFFF8
        conn = established(iss=iss, send_buffer=256)
        l1 = seq_add(iss, 1)
        conn.send(data(100), 0.0)
        [seg] = recv(conn, t=0.0)
        assert seg.seq == l1 and len(seg.payload) == 100
        send(conn, t=0.1, seg=replace(SEND, seq=conn.rcv_nxt, ack=seq_add(l1, 60)))
        assert conn.snd_una == seq_add(l1, 60) and len(conn.sndbuf) == 40
        send(conn, t=0.2, seg=replace(SEND, seq=conn.rcv_nxt, ack=seq_add(l1, 100)))
        assert conn.snd_una == 93 and len(conn.sndbuf) == 0
        assert conn.get_timer() is None


def transfer(iss_a: int, iss_b: int, size_a: int, size_b: int) -> tuple[App, App, Simulation]:
    """A (10.0.0.1) connects to B (10.0.0.2):80; each sends its bytes, half-closes, reads to EOF."""
    sim = Simulation()
    a = make_stack("10.0.0.1/24", initial_sequence=iss_a)
    b = make_stack("10.0.0.2/24", initial_sequence=iss_b)
    sim.wire(a, b, delay=0.001, bandwidth=10e6)
    ta, tb = tcp_layer(a), tcp_layer(b)
    server = App(sim, tb, data(size_b, start=7))
    tb.listen(80, on_accept=server.attach)
    client = App(sim, ta, data(size_a))
    client.attach(ta.connect(socket.inet_aton("10.0.0.2"), 80, now=0.0))

    def done() -> bool:
        ends = (S.CLOSED, S.TIME_WAIT)
        return bool(
            client.eof
            and server.eof
            and client.conn
            and server.conn
            and client.conn.state in ends
            and server.conn.state in ends
        )

    sim.run(until=120.0, condition=done, max_steps=200_000)
    assert done(), (client.conn, server.conn)
    for s in (a, b):
        assert s.stats.drops[("stack", "internal_error")] == 0
    return client, server, sim


class TestTransferAcrossTheWrap:
    def test_64k_both_ways_with_both_isns_near_the_wrap(self) -> None:
        """RFC 9293 §3.4 (S1): our ISS 0xFFFFFFF0 and the peer's 0xFFFFFF00: 64 KiB each way arrive exactly, in
        order."""
        client, server, _ = transfer(0xFFFFFFF0, 0xFFFFFF00, 65536, 65536)
        assert bytes(server.received) == data(65536)
        assert bytes(client.received) == data(65536, start=7)
        assert not client.failures and not server.failures

    def test_wrap_in_mid_transfer(self) -> None:
        """RFC 9293 §3.4 (S1): ISNs 100 KB before 2**32: the wrap falls in the middle of a 300 KB stream, both ways."""
        client, server, _ = transfer(MASK - 100_000, MASK - 150_000, 300_000, 300_000)
        assert bytes(server.received) == data(300_000)
        assert bytes(client.received) == data(300_000, start=7)
        assert client.conn is not None and seq_lt(client.conn.iss, client.conn.snd_una)
