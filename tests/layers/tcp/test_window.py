"""Flow control (RFC 9293 §3.8.6): sending within min(SND.WND, cwnd), our advertised window and
its right edge, and robustness against a peer that shrinks its window (MUST-34)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from layers.tcp.events import DataReceived
from layers.tcp.seq import seq_add, seq_ge
from layers.tcp.state import TcpState
from tests.layers.tcp.helpers import (
    L1,
    R1,
    RECV,
    SEND,
    data,
    established,
    events,
    recv,
    recv_nothing,
    run_until,
    send,
)

S = TcpState
PEER = replace(SEND, seq=R1, ack=L1)


class TestSendWindow:
    def test_only_snd_wnd_bytes_are_in_flight(self) -> None:
        """RFC 9293 §3.8.6.2.1 (W1): usable window U = SND.UNA + SND.WND - SND.NXT; with SND.WND 20 only 20 bytes
        fly."""
        conn = established(syn_window=20, peer_window=20)
        conn.send(data(64), 0.0)
        assert recv(conn, t=0.0) == [replace(RECV, seq=L1, ack=R1, payload=data(20))]
        recv_nothing(conn, t=0.05)
        send(conn, t=0.1, seg=replace(PEER, ack=L1 + 20, window=20))
        assert recv(conn, t=0.1) == [replace(RECV, seq=L1 + 20, ack=R1, payload=data(20, start=20))]
        assert conn.in_flight == 20

    def test_window_that_opens_lets_more_data_go(self) -> None:
        """RFC 9293 §3.10.7.4 (W1): a window update alone (no new ACK) lets the sender use the new space."""
        conn = established(syn_window=20, peer_window=20)
        conn.send(data(64), 0.0)
        recv(conn, t=0.0)
        send(conn, t=0.1, seg=replace(PEER, window=64))
        assert [len(s.payload) for s in recv(conn, t=0.1)] == [44]

    def test_cwnd_limits_the_flight_too(self) -> None:
        """RFC 5681 §3 (W1, CC1): never more than min(SND.WND, cwnd): with MSS 16 the initial window is 4 segments."""
        conn = established(peer_mss=16, send_buffer=256, syn_window=1000, peer_window=1000)
        conn.send(data(200), 0.0)
        assert [len(s.payload) for s in recv(conn, t=0.0)] == [16, 16, 16, 16]
        assert conn.in_flight == 64

    @settings(max_examples=60)
    @given(st.lists(st.tuples(st.integers(0, 64), st.integers(0, 300)), min_size=1, max_size=30))
    def test_flight_never_exceeds_what_the_peer_allowed(self, steps: list[tuple[int, int]]) -> None:
        """RFC 9293 §3.8.6.2.1 (W1): new data never goes past SND.UNA + SND.WND (any ACK/window sequence)."""
        conn = established(peer_mss=16, send_buffer=256)
        t = 0.0
        for acked, window in steps:
            conn.send(data(256), t)
            for seg in recv(conn, t=t):
                end = seq_add(seg.seq, len(seg.payload))
                assert seq_ge(seq_add(conn.snd_una, max(conn.snd_wnd, 1)), end)
            ack = seq_add(conn.snd_una, min(acked, conn.in_flight))
            t += 0.01
            send(conn, t=t, seg=replace(PEER, ack=ack, window=window))


class TestWindowShrink:
    def test_shrunk_window_stops_new_data_and_retransmits_within_it(self) -> None:
        """RFC 9293 §3.8.6.2.1, MUST-34 (W4): the peer retracts its window below the data in flight: no new data
        goes; the retransmission stays inside the new window; the connection survives."""
        conn = established(send_buffer=128)
        conn.send(data(64), 0.0)
        recv(conn, t=0.0)
        send(conn, t=0.1, seg=replace(PEER, window=10))  # right edge moves from L1+256 to L1+10
        conn.send(data(10, start=64), 0.1)
        recv_nothing(conn, t=0.1)
        [(t, rexmit)] = run_until(conn, 1.0)
        assert t == 1.0
        assert (rexmit.seq, rexmit.payload) == (L1, data(10))
        send(conn, t=1.1, seg=replace(PEER, ack=L1 + 10, window=64))
        out = recv(conn, t=1.1)
        assert out and out[0].seq == L1 + 10
        assert conn.state is S.ESTABLISHED

    def test_window_shrunk_to_zero_does_not_time_out(self) -> None:
        """RFC 1122 §4.2.2.16-17, MUST-34/37 (W4): data beyond a window shrunk to 0 is probed, not timed out, while the
        probes are answered."""
        conn = established()
        conn.send(b"0123456789", 0.0)
        recv(conn, t=0.0)
        send(conn, t=0.1, seg=replace(PEER, window=0))
        t = 0.1
        while t < 600.0:
            timer = conn.get_timer()
            assert timer is not None
            t = timer
            conn.handle_timer(t)
            for seg in conn.segments_to_send(t):
                assert len(seg.payload) <= 1  # probes only
            send(conn, t=t + 0.01, seg=replace(PEER, window=0))
            conn.segments_to_send(t + 0.01)
        assert conn.state is S.ESTABLISHED

    def test_first_loss_after_a_long_zero_window_is_retransmitted_not_fatal(self) -> None:
        """RFC 9293 §3.8.3, MUST-20: R2 counts retransmission without progress; a 200 s zero window answered by the
        peer is not "no progress", so the first RTO after it retransmits instead of aborting."""
        conn = established()
        conn.send(b"0123456789", 0.0)
        recv(conn, t=0.0)
        send(conn, t=0.1, seg=replace(PEER, window=0))
        recv(conn, t=0.1)
        while (timer := conn.get_timer()) is not None and timer < 200.0:
            conn.handle_timer(timer)
            conn.segments_to_send(timer)
            send(conn, t=timer + 0.01, seg=replace(PEER, window=0))
            conn.segments_to_send(timer + 0.01)
        send(conn, t=200.0, seg=replace(PEER, window=64))  # the window opens
        out = recv(conn, t=200.0)
        assert out and out[0].seq == L1  # the data goes (again) ... and is lost
        run_until(conn, 202.0)
        assert conn.state is S.ESTABLISHED
        assert conn.retransmits >= 1


class TestReceiveWindow:
    def test_window_tracks_free_buffer_space(self) -> None:
        """RFC 9293 §3.8.6 (A7): the advertised window is the free receive buffer: 64, then 54 after 10 unread bytes."""
        conn = established()
        send(conn, t=0.0, seg=replace(PEER, payload=data(10)))
        assert recv(conn, t=0.0) == [replace(RECV, seq=L1, ack=R1 + 10, window=54)]

    def test_window_closes_when_the_app_does_not_read_and_reopens_with_an_update(self) -> None:
        """RFC 9293 §3.8.6, §3.10.7.4 "Seventh" (A7): an unread full buffer -> window 0; reading sends a window
        update."""
        conn = established()
        send(conn, t=0.0, seg=replace(PEER, payload=data(64)))
        assert recv(conn, t=0.0) == [replace(RECV, seq=L1, ack=R1 + 64, window=0)]
        # The peer probes the zero window: the byte is not accepted, the answer repeats window 0.
        send(conn, t=1.0, seg=replace(PEER, seq=R1 + 64, payload=b"p"))
        assert recv(conn, t=1.0) == [replace(RECV, seq=L1, ack=R1 + 64, window=0)]
        assert conn.read() == data(64)
        assert recv(conn, t=1.5) == [replace(RECV, seq=L1, ack=R1 + 64, window=64)]
        send(conn, t=2.0, seg=replace(PEER, seq=R1 + 64, payload=b"p"))
        assert recv(conn, t=2.0) == [replace(RECV, seq=L1, ack=R1 + 65, window=63)]
        assert events(conn) == [DataReceived(), DataReceived()]

    @settings(max_examples=80)
    @given(st.lists(st.tuples(st.integers(-20, 80), st.integers(0, 40), st.integers(0, 64)), max_size=40))
    def test_right_edge_never_moves_left(self, steps: list[tuple[int, int, int]]) -> None:
        """RFC 9293 §3.8.6.2.2, SHLD-14 (A6): RCV.NXT + RCV.WND never decreases, whatever arrives and whatever is
        read."""
        conn = established()
        edge = R1 + 64
        t = 0.0
        for offset, length, reads in steps:
            t += 0.01
            seq = seq_add(conn.rcv_nxt, offset)
            send(conn, t=t, seg=replace(PEER, seq=seq, payload=data(length)))
            conn.read(reads)
            for seg in recv(conn, t=t):
                new_edge = seq_add(seg.ack, seg.window)
                assert seq_ge(new_edge, edge), (seg, edge)
                edge = new_edge
