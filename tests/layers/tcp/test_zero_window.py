"""Zero windows (RFC 9293 §3.8.6.1, RFC 1122 §4.2.2.17, MUST-35/36/37, SHLD-29/30): persist
probes when the peer's window is 0, and our answers when ours is."""

from __future__ import annotations

from dataclasses import replace

from layers.tcp.connection import TcpConnection
from layers.tcp.state import TcpState
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
    run_until,
    send,
)

S = TcpState
PEER = replace(SEND, seq=R1, ack=L1)
PROBE = replace(RECV, seq=L1, ack=R1, payload=b"a")


def zero_window_with_data() -> TcpConnection:
    """ESTABLISHED, the peer's window closed (0), 10 bytes waiting to be sent."""
    conn = established()
    send(conn, t=0.0, seg=replace(PEER, window=0))
    conn.send(data(10), 0.0)
    recv_nothing(conn, t=0.0)
    return conn


class TestPersistProbes:
    def test_first_probe_after_one_rto(self) -> None:
        """RFC 9293 SHLD-29, MUST-35 (W5): with data waiting and a zero window, the first probe goes after one RTO."""
        conn = zero_window_with_data()
        assert conn.get_timer() == 1.0
        recv_nothing(conn, t=0.9)
        assert recv(conn, t=1.0) == [PROBE]

    def test_probes_back_off_exponentially_and_never_abort_while_answered(self) -> None:
        """RFC 9293 MUST-36/37, SHLD-30 (W5): probes at RTO, 2 RTO, 4 RTO and so on, capped at 60 s, for 10 minutes,
        each answered with window 0: no abort."""
        conn = zero_window_with_data()
        times = []
        t = 0.0
        while t < 600.0:
            timer = conn.get_timer()
            assert timer is not None
            t = timer
            conn.handle_timer(t)
            out = conn.segments_to_send(t)
            assert out == [PROBE]
            times.append(t)
            send(conn, t=t + 0.01, seg=replace(PEER, window=0))  # "still closed"
            assert conn.segments_to_send(t + 0.01) == []
        assert times[:8] == [1.0, 3.0, 7.0, 15.0, 31.0, 63.0, 123.0, 183.0]
        assert conn.state is S.ESTABLISHED
        assert conn.failure is None

    def test_probes_continue_even_unanswered(self) -> None:
        """RFC 9293 §3.8.6.1, MUST-37: a zero window is not a failure; probing goes on (the probe is not a
        retransmission that R2 would count)."""
        conn = zero_window_with_data()
        sent = run_until(conn, 900.0)
        assert len(sent) >= 15 and all(s == PROBE for _, s in sent)
        assert conn.state is S.ESTABLISHED

    def test_window_update_ends_probing_and_data_flows(self) -> None:
        """RFC 9293 §3.8.6.1 (W5): when the window opens, the waiting data is sent at once."""
        conn = zero_window_with_data()
        send(conn, t=0.5, seg=replace(PEER, window=64))
        assert recv(conn, t=0.5) == [replace(RECV, seq=L1, ack=R1, flags=ACK | PSH, payload=data(10))]

    def test_lost_window_update_is_recovered_by_the_next_probe(self) -> None:
        """RFC 9293 §3.8.6.1, RFC 1122 §4.2.2.17 (W5): the peer's window update is lost; its answer to the next probe
        (accepting the probe byte and showing the open window) restarts the transfer."""
        conn = zero_window_with_data()
        assert recv(conn, t=1.0) == [PROBE]
        send(conn, t=1.01, seg=replace(PEER, window=0))
        # ... the peer's application reads, its window update is lost; at 3 s we probe again:
        assert recv(conn, t=3.0) == [PROBE]
        send(conn, t=3.01, seg=replace(PEER, ack=L1 + 1, window=63))
        assert recv(conn, t=3.01) == [replace(RECV, seq=L1 + 1, ack=R1, flags=ACK | PSH, payload=data(9, start=1))]
        send(conn, t=3.02, seg=replace(PEER, ack=L1 + 10, window=64))
        assert conn.snd_una == L1 + 10 and len(conn.sndbuf) == 0
        assert conn.get_timer() is None

    def test_no_probes_without_data(self) -> None:
        """RFC 9293 §3.8.6.1: probing is for data waiting to be sent; an idle zero window needs no timer."""
        conn = established()
        send(conn, t=0.0, seg=replace(PEER, window=0))
        assert conn.get_timer() is None
        recv_nothing(conn, t=5.0)

    def test_probe_backoff_restarts_after_the_window_opened(self) -> None:
        """RFC 9293 SHLD-30: the backoff belongs to one zero-window episode; the next one starts at one RTO again."""
        conn = zero_window_with_data()
        run_until(conn, 7.0)  # probes at 1, 3, 7
        send(conn, t=7.5, seg=replace(PEER, window=64))
        recv(conn, t=7.5)
        send(conn, t=7.6, seg=replace(PEER, ack=L1 + 10, window=0))
        conn.send(b"more", 7.6)
        recv_nothing(conn, t=7.6)
        assert conn.get_timer() == 8.6


class TestOurZeroWindow:
    def test_probe_into_our_zero_window_gets_ack_with_window_zero(self) -> None:
        """RFC 9293 §3.8.6.1, MUST-66 (A7): a probe into our closed window is answered with an ACK showing window 0."""
        conn = established()
        send(conn, t=0.0, seg=replace(PEER, payload=data(64)))
        recv(conn, t=0.0)
        for t in (1.0, 3.0, 7.0):
            send(conn, t=t, seg=replace(PEER, seq=R1 + 64, payload=b"?"))
            assert recv(conn, t=t) == [replace(RECV, seq=L1, ack=R1 + 64, window=0)]
        assert conn.readable == 64

    def test_our_data_still_flows_while_our_window_is_zero(self) -> None:
        """RFC 9293 MUST-66 (S3): our closed receive window does not stop our sending or the peer's ACKs."""
        conn = established()
        send(conn, t=0.0, seg=replace(PEER, payload=data(64)))
        recv(conn, t=0.0)
        conn.send(b"reply", 0.1)
        assert recv(conn, t=0.1) == [replace(RECV, seq=L1, ack=R1 + 64, flags=ACK | PSH, window=0, payload=b"reply")]
        send(conn, t=0.2, seg=replace(PEER, seq=R1 + 64, ack=L1 + 5))
        assert conn.snd_una == L1 + 5
