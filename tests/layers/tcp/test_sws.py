"""Silly window syndrome avoidance (RFC 9293 §3.8.6.2; RFC 1122 §4.2.3.3-4, MUST-38/39):
the receiver's window updates and the sender's small segments."""

from __future__ import annotations

from dataclasses import replace

from layers.tcp.connection import TcpConnection
from layers.tcp.wire import ACK, PSH
from tests.layers.tcp.helpers import (
    L1,
    R1,
    RECV,
    SEND,
    data,
    established,
    recv,
    recv_nothing,
    send,
)

PEER = replace(SEND, seq=R1, ack=L1)


class TestReceiverSws:
    def full_buffer(self, **kw: object) -> TcpConnection:
        conn = established(**kw)
        send(conn, t=0.0, seg=replace(PEER, payload=data(64)))
        assert recv(conn, t=0.0) == [replace(RECV, seq=L1, ack=R1 + 64, window=0)]
        return conn

    def test_window_update_only_when_half_the_buffer_is_free(self) -> None:
        """RFC 9293 §3.8.6.2.2, MUST-39 (A5): reading byte by byte, no update until free space >= min(RCV.BUFF/2,
        MSS) = 32."""
        conn = self.full_buffer()
        for i in range(31):
            assert conn.read(1) == data(1, start=i)
            recv_nothing(conn, t=0.1)
        conn.read(1)
        assert recv(conn, t=0.1) == [replace(RECV, seq=L1, ack=R1 + 64, window=32)]

    def test_threshold_is_the_mss_when_smaller_than_half_the_buffer(self) -> None:
        """RFC 1122 §4.2.3.3 (A5): the right edge moves when it gains min(RCV.BUFF/2, Eff.snd.MSS); with MSS 20 that
        is 20."""
        conn = self.full_buffer(local_mss=20)
        conn.read(19)
        recv_nothing(conn, t=0.1)
        conn.read(1)
        assert recv(conn, t=0.1) == [replace(RECV, seq=L1, ack=R1 + 64, window=20)]

    def test_small_increments_are_not_advertised_on_data_acks(self) -> None:
        """RFC 9293 §3.8.6.2.2 (A5): an ACK for new data carries the old right edge until the gain is big enough."""
        conn = established()
        send(conn, t=0.0, seg=replace(PEER, payload=data(10)))
        assert recv(conn, t=0.0) == [replace(RECV, seq=L1, ack=R1 + 10, window=54)]
        conn.read()  # 10 bytes free again: less than 32, no update
        recv_nothing(conn, t=0.1)
        send(conn, t=0.2, seg=replace(PEER, seq=R1 + 10, payload=data(5)))
        assert recv(conn, t=0.2) == [replace(RECV, seq=L1, ack=R1 + 15, window=49)]


class TestSenderSws:
    def window_opening_in_small_steps(self) -> TcpConnection:
        """100 of 200 bytes sent into a 100-byte window; the peer acknowledges them with window 0."""
        conn = established(send_buffer=256, syn_window=100, peer_window=100)
        conn.send(data(200), 0.0)
        assert [len(s.payload) for s in recv(conn, t=0.0)] == [100]
        send(conn, t=0.1, seg=replace(PEER, ack=L1 + 100, window=0))
        recv_nothing(conn, t=0.1)
        return conn

    def test_no_tiny_segments_until_the_override_timer(self) -> None:
        """RFC 1122 §4.2.3.4, MUST-38 (W3): the peer opens 10 bytes: below MSS, below Max(SND.WND)/2 and not all the
        data: nothing goes until the override timer (0.2 s) fires."""
        conn = self.window_opening_in_small_steps()
        send(conn, t=0.2, seg=replace(PEER, ack=L1 + 100, window=10))
        recv_nothing(conn, t=0.2)
        recv_nothing(conn, t=0.39)
        assert recv(conn, t=0.4) == [replace(RECV, seq=L1 + 100, ack=R1, payload=data(10, start=100))]

    def test_half_the_max_window_is_sent_at_once(self) -> None:
        """RFC 1122 §4.2.3.4, MUST-38 (W3): a segment of at least Max(SND.WND)/2 = 50 bytes may go immediately."""
        conn = self.window_opening_in_small_steps()
        send(conn, t=0.2, seg=replace(PEER, ack=L1 + 100, window=50))
        assert recv(conn, t=0.2) == [replace(RECV, seq=L1 + 100, ack=R1, payload=data(50, start=100))]

    def test_everything_queued_fits_is_sent_at_once(self) -> None:
        """RFC 1122 §4.2.3.4, MUST-38 (W3): a short segment holding all queued (pushed) data is sent without waiting."""
        conn = established()
        conn.send(b"tiny", 0.0)
        assert recv(conn, t=0.0) == [replace(RECV, seq=L1, ack=R1, flags=ACK | PSH, payload=b"tiny")]

    def test_full_sized_segments_are_not_delayed(self) -> None:
        """RFC 1122 §4.2.3.4 (W3, SHLD-28): a full Eff.snd.MSS segment always may go."""
        conn = established(peer_mss=16, syn_window=16, peer_window=16)
        conn.send(data(40), 0.0)
        assert [len(s.payload) for s in recv(conn, t=0.0)] == [16]
