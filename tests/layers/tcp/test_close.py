"""Closing (RFC 9293 §3.6, §3.10.4, §3.10.7.4 "Eighth"): FIN-WAIT-1/2, CLOSING, TIME-WAIT,
CLOSE-WAIT, LAST-ACK, half-close, FIN retransmission, TIME-WAIT rules and RST on close with
unread data (RFC 2525 §2.17). Sans-IO unless a test needs the layer (4-tuple reuse, RST after
TIME-WAIT)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from framework.errors import InvalidStateError
from layers.tcp.events import ConnectionClosed, DataReceived, EofReceived, SendSpaceAvailable
from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, FIN, PSH, RST, SYN
from tests.layers.tcp.helpers import (
    L1,
    LOCAL_PORT,
    LOCAL_SEQ,
    R1,
    RECV,
    SEND,
    LayerHarness,
    close_wait,
    closing,
    data,
    established,
    events,
    fin_wait_1,
    fin_wait_2,
    last_ack,
    recv,
    recv_nothing,
    run_until,
    send,
    time_wait,
)

S = TcpState
DATA = replace(SEND, seq=R1, ack=L1)
OUR_FIN = replace(RECV, seq=L1, ack=R1, flags=FIN | ACK)


class TestActiveClose:
    def test_close_sends_fin_and_enters_fin_wait_1(self) -> None:
        """RFC 9293 §3.10.4 (C1, C10): CLOSE in ESTABLISHED -> FIN at once, FIN-WAIT-1."""
        conn = established()
        conn.close(0.0)
        assert conn.state is S.FIN_WAIT_1
        assert recv(conn, t=0.0) == [OUR_FIN]

    def test_fin_is_piggybacked_on_the_last_data_segment(self) -> None:
        """RFC 9293 §3.6: the FIN follows the queued data; it may ride on the last data segment."""
        conn = established()
        conn.send(b"abc", 0.0)
        conn.close(0.0)
        assert recv(conn, t=0.0) == [replace(OUR_FIN, flags=FIN | PSH | ACK, payload=b"abc")]

    def test_ack_of_fin_moves_to_fin_wait_2_then_fin_to_time_wait(self) -> None:
        """RFC 9293 §3.10.7.4 (C1): FIN-WAIT-1 -ACK of FIN-> FIN-WAIT-2 -FIN-> TIME-WAIT, the FIN acknowledged."""
        conn = fin_wait_1()
        send(conn, t=0.1, seg=replace(DATA, ack=L1 + 1))
        assert conn.state is S.FIN_WAIT_2
        recv_nothing(conn, t=0.1)
        send(conn, t=0.2, seg=replace(DATA, ack=L1 + 1, flags=FIN | ACK))
        assert conn.state is S.TIME_WAIT
        # The FIN takes a sequence number, not buffer space: the right edge stays, the window is 63.
        assert recv(conn, t=0.2) == [replace(RECV, seq=L1 + 1, ack=R1 + 1, window=63)]
        assert events(conn) == [EofReceived(), ConnectionClosed()]

    def test_fin_that_acks_our_fin_goes_straight_to_time_wait(self) -> None:
        """RFC 9293 §3.10.7.4 "Eighth" (C1): in FIN-WAIT-1 a FIN that also acknowledges our FIN -> TIME-WAIT."""
        conn = fin_wait_1()
        send(conn, t=0.1, seg=replace(DATA, ack=L1 + 1, flags=FIN | ACK))
        assert conn.state is S.TIME_WAIT
        assert recv(conn, t=0.1) == [replace(RECV, seq=L1 + 1, ack=R1 + 1, window=63)]
        assert conn.get_timer() == 0.1 + 60.0

    def test_simultaneous_close_goes_through_closing(self) -> None:
        """RFC 9293 §3.6 Figure 13 (C1): FINs cross: FIN-WAIT-1 -FIN-> CLOSING -ACK of FIN-> TIME-WAIT."""
        conn = fin_wait_1()
        send(conn, t=0.1, seg=replace(DATA, flags=FIN | ACK))  # the peer's FIN, sent before ours arrived
        assert conn.state is S.CLOSING
        assert recv(conn, t=0.1) == [replace(RECV, seq=L1 + 1, ack=R1 + 1, window=63)]
        send(conn, t=0.2, seg=replace(DATA, seq=R1 + 1, ack=L1 + 1))
        assert conn.state is S.TIME_WAIT
        recv_nothing(conn, t=0.2)

    def test_fin_is_retransmitted_until_acked(self) -> None:
        """RFC 9293 §3.4, §3.6 (C4): the FIN occupies sequence space and is retransmitted with backoff until
        acknowledged."""
        conn = fin_wait_1()
        assert run_until(conn, 5.0) == [(1.0, OUR_FIN), (3.0, OUR_FIN)]
        send(conn, t=5.0, seg=replace(DATA, ack=L1 + 1))
        assert conn.state is S.FIN_WAIT_2
        assert run_until(conn, 50.0) == []

    def test_fin_retransmitted_in_closing_and_last_ack(self) -> None:
        """RFC 9293 §3.6 (C4): in CLOSING and LAST-ACK our FIN is also retransmitted until acknowledged."""
        for conn in (closing(), last_ack()):
            fin = replace(RECV, seq=L1, ack=R1 + 1, flags=FIN | ACK, window=63)
            assert run_until(conn, 2.0) == [(1.0, fin)]

    def test_delayed_ack_of_fin_after_go_back_n_timeout(self) -> None:
        """RFC 9293 §3.10.7.4 "Fifth": after an RTO resent only the first segment (cwnd 1 SMSS), a late ACK covering
        data and FIN still acknowledges our FIN: FIN-WAIT-2, and no FIN is invented past it."""
        conn = established(peer_mss=16)
        conn.send(data(64), 0.0)
        conn.close(0.0)
        first = recv(conn, t=0.0)
        assert [len(s.payload) for s in first] == [16, 16, 16, 16] and first[-1].flags & FIN
        [rexmit] = run_until(conn, 1.0)
        assert rexmit[1].seq == L1 and len(rexmit[1].payload) == 16
        send(conn, t=1.1, seg=replace(DATA, ack=L1 + 65))  # the peer's ACK of everything, delayed
        assert conn.state is S.FIN_WAIT_2
        assert conn.snd_una == conn.snd_max == L1 + 65
        assert conn.bytes_sent == 64
        recv_nothing(conn, t=1.1)
        assert run_until(conn, 30.0) == []


class TestPassiveClose:
    def test_fin_moves_to_close_wait_and_is_acked(self) -> None:
        """RFC 9293 §3.10.7.4 "Eighth" (C1): a FIN in ESTABLISHED -> CLOSE-WAIT, ACK of the FIN, EOF to the user."""
        conn = established()
        send(conn, t=0.0, seg=replace(DATA, flags=FIN | ACK))
        assert conn.state is S.CLOSE_WAIT
        assert recv(conn, t=0.0) == [replace(RECV, seq=L1, ack=R1 + 1, window=63)]
        assert events(conn) == [EofReceived()]

    def test_close_in_close_wait_goes_to_last_ack_then_closed(self) -> None:
        """RFC 9293 §3.10.4 (C1, C2): CLOSE in CLOSE-WAIT -> FIN, LAST-ACK (not CLOSING); its ACK -> CLOSED."""
        conn = close_wait()
        conn.close(0.1)
        assert conn.state is S.LAST_ACK
        assert recv(conn, t=0.1) == [replace(RECV, seq=L1, ack=R1 + 1, flags=FIN | ACK, window=63)]
        send(conn, t=0.2, seg=replace(DATA, seq=R1 + 1, ack=L1 + 1))
        assert conn.state is S.CLOSED
        assert events(conn) == [ConnectionClosed()]
        recv_nothing(conn, t=0.2)
        assert conn.get_timer() is None

    def test_retransmitted_fin_in_close_wait_and_last_ack_is_reacked(self) -> None:
        """RFC 9293 §3.10.7.4 "First": the peer's retransmitted FIN is old now: answered with an ACK, no state
        change."""
        conn = close_wait()
        send(conn, t=0.5, seg=replace(DATA, flags=FIN | ACK))
        assert recv(conn, t=0.5) == [replace(RECV, seq=L1, ack=R1 + 1, window=63)]
        assert conn.state is S.CLOSE_WAIT
        conn = last_ack()
        send(conn, t=0.5, seg=replace(DATA, flags=FIN | ACK))
        assert recv(conn, t=0.5) == [replace(RECV, seq=L1 + 1, ack=R1 + 1, window=63)]
        assert conn.state is S.LAST_ACK


class TestHalfClose:
    def test_we_half_close_and_keep_receiving(self) -> None:
        """RFC 9293 §3.6.1, RFC 1122 §4.2.2.13 (C3): after our FIN the peer can still send; we deliver and ACK it."""
        conn = fin_wait_2(half=True)
        send(conn, t=0.1, seg=replace(DATA, ack=L1 + 1, payload=b"still talking"))
        assert recv(conn, t=0.1) == [replace(RECV, seq=L1 + 1, ack=R1 + 13, window=51)]
        assert conn.read() == b"still talking"
        send(conn, t=0.2, seg=replace(DATA, seq=R1 + 13, ack=L1 + 1, flags=FIN | ACK))
        assert conn.state is S.TIME_WAIT

    def test_peer_half_closes_and_we_keep_sending(self) -> None:
        """RFC 9293 §3.6.1 (C3): in CLOSE-WAIT we may still send; the peer's ACKs free our buffer."""
        conn = close_wait()
        conn.send(b"response", 0.1)
        assert recv(conn, t=0.1) == [replace(RECV, seq=L1, ack=R1 + 1, flags=PSH | ACK, window=63, payload=b"response")]
        send(conn, t=0.2, seg=replace(DATA, seq=R1 + 1, ack=L1 + 8))
        assert conn.snd_una == L1 + 8
        assert events(conn) == [SendSpaceAvailable()]

    def test_send_after_shutdown_is_an_error(self) -> None:
        """RFC 9293 §3.10.2: SEND after CLOSE is "error: connection closing"."""
        conn = fin_wait_1(half=True)
        with pytest.raises(InvalidStateError):
            conn.send(b"x", 0.1)

    def test_no_fin_wait_2_timeout_after_half_close(self) -> None:
        """RFC 9293 §3.6.1 (C3): a half-closed connection may receive for as long as the peer likes: no FIN-WAIT-2
        timer."""
        conn = fin_wait_2(half=True)
        assert conn.get_timer() is None

    def test_fin_before_missing_data_gives_no_eof_until_the_gap_fills(self) -> None:
        """RFC 9293 §3.10.7.4 "Eighth" (C5): a FIN is processed only in sequence: after the missing bytes arrive."""
        conn = established()
        send(conn, t=0.0, seg=replace(DATA, seq=R1 + 5, flags=FIN | ACK, payload=b"world"))
        assert recv(conn, t=0.0) == [replace(RECV, seq=L1, ack=R1)]
        assert conn.state is S.ESTABLISHED and events(conn) == []
        send(conn, t=0.1, seg=replace(DATA, payload=b"hello"))
        assert recv(conn, t=0.1) == [replace(RECV, seq=L1, ack=R1 + 11, window=53)]
        assert conn.state is S.CLOSE_WAIT
        assert events(conn) == [DataReceived(), EofReceived()]
        assert conn.read() == b"helloworld"


class TestFinWait2Timeout:
    def test_orphaned_fin_wait_2_is_closed_after_the_timeout(self) -> None:
        """RFC 9293 §3.8.6.1 (C12): after close() a FIN-WAIT-2 the peer never ends is reclaimed after
        fin_wait_2_timeout."""
        conn = fin_wait_2(fin_wait_2_timeout=30.0)
        assert conn.get_timer() == 30.0
        assert run_until(conn, 31.0) == []
        assert conn.state is S.CLOSED and conn.failure == "fin_wait_2_timeout"

    def test_fin_wait_2_timeout_can_be_disabled(self) -> None:
        """RFC 9293 §3.6: with fin_wait_2_timeout None the connection waits for the peer's FIN forever."""
        conn = fin_wait_2(fin_wait_2_timeout=None)
        assert conn.get_timer() is None


class TestTimeWait:
    def test_time_wait_lasts_two_msl(self) -> None:
        """RFC 9293 §3.4.2, MUST-13 (C6): TIME-WAIT lasts 2*MSL, then the TCB is deleted."""
        conn = time_wait(msl=10.0)
        assert conn.get_timer() == 20.0
        run_until(conn, 19.9)
        assert conn.state is S.TIME_WAIT
        assert run_until(conn, 20.0) == []
        assert conn.state is S.CLOSED
        assert events(conn) == []  # ConnectionClosed was queued on entering TIME-WAIT

    def test_retransmitted_fin_is_reacked_and_restarts_the_timer(self) -> None:
        """RFC 9293 §3.10.7.4 (C6): in TIME-WAIT a retransmitted FIN is acknowledged and the 2MSL timer restarted."""
        conn = time_wait(msl=10.0)
        send(conn, t=15.0, seg=replace(DATA, ack=L1 + 1, flags=FIN | ACK))
        assert recv(conn, t=15.0) == [replace(RECV, seq=L1 + 1, ack=R1 + 1, window=63)]
        assert conn.get_timer() == 35.0
        run_until(conn, 34.0)
        assert conn.state is S.TIME_WAIT

    def test_in_window_syn_gets_a_challenge_ack(self) -> None:
        """RFC 5961 §4.2 (R3): a SYN in TIME-WAIT (no listener to hand it to) is answered with an ACK, the TCB stays."""
        conn = time_wait()
        send(conn, t=1.0, seg=replace(SEND, seq=R1 + 1, ack=0, flags=SYN))
        assert recv(conn, t=1.0) == [replace(RECV, seq=L1 + 1, ack=R1 + 1, window=63)]
        assert conn.state is S.TIME_WAIT

    def test_rst_in_time_wait_is_ignored_by_default(self) -> None:
        """RFC 1337 §3 (fix F1, C8): a RST in TIME-WAIT is ignored, so the 2*MSL guard of the 4-tuple is not cut
        short (TIME-WAIT assassination); the connection leaves TIME-WAIT only when 2*MSL ends."""
        conn = time_wait()
        deadline = conn.get_timer()
        send(conn, t=1.0, seg=replace(SEND, seq=R1 + 1, ack=0, flags=RST))
        assert conn.state is S.TIME_WAIT and conn.rst_ignored == 1
        recv_nothing(conn, t=1.0)  # never answer a RST
        assert conn.get_timer() == deadline
        assert events(conn) == []

    def test_rst_in_time_wait_closes_without_rfc1337(self) -> None:
        """RFC 9293 §3.10.7.4 "Second": with ``rfc1337 = false`` a RST at RCV.NXT in TIME-WAIT deletes the TCB
        (Linux's default tcp_rfc1337=0 does the same)."""
        conn = time_wait(rfc1337=False)
        send(conn, t=1.0, seg=replace(SEND, seq=R1 + 1, ack=0, flags=RST))
        assert conn.state is S.CLOSED
        recv_nothing(conn, t=1.0)
        assert events(conn) == []  # the user already had ConnectionClosed

    def test_data_in_time_wait_is_not_delivered(self) -> None:
        """RFC 9293 §3.10.7.4 "Seventh": text after the peer's FIN is ignored in TIME-WAIT."""
        conn = time_wait()
        send(conn, t=1.0, seg=replace(SEND, seq=R1 + 1, ack=L1 + 1, payload=b"late"))
        recv(conn, t=1.0)
        assert conn.readable == 0


class TestTimeWaitOnTheLayer:
    def server_in_time_wait(self, **tcp: object) -> LayerHarness:
        """A server that closed first: FIN out, peer's ACK and FIN in -> TIME-WAIT at t=0.2."""
        h = LayerHarness(initial_sequence=LOCAL_SEQ, msl=10.0, **tcp)
        h.tcp.listen(LOCAL_PORT)
        conn, _ = h.handshake()
        conn.close(0.1)
        h.user(conn)
        assert h.output(t=0.1) == [replace(RECV, seq=L1, ack=R1, flags=FIN | ACK, window=65535)]
        h.inject(replace(DATA, ack=L1 + 1, flags=FIN | ACK), t=0.2)
        assert conn.state is S.TIME_WAIT
        return h

    def test_after_two_msl_segments_get_rst(self) -> None:
        """RFC 9293 MUST-13, §3.10.7.1 (C6): once TIME-WAIT ends the 4-tuple is CLOSED: a segment gets a RST."""
        h = self.server_in_time_wait()
        assert h.advance(20.2) == []
        assert h.tcp.connections == {}
        out = h.inject(replace(DATA, seq=R1 + 1, ack=L1 + 1, payload=b"x"), t=21.0)
        assert out == [replace(RECV, seq=L1 + 1, ack=0, flags=RST, window=0)]

    def test_syn_with_higher_sequence_opens_a_new_incarnation(self) -> None:
        """RFC 9293 MAY-2 (C7): a SYN in TIME-WAIT above the old RCV.NXT reuses the 4-tuple for a new
        connection."""
        h = self.server_in_time_wait()
        new_isn = R1 + 100_000
        out = h.inject(replace(SEND, seq=new_isn, ack=0, flags=SYN), t=1.0)
        assert len(out) == 1 and out[0].flags == SYN | ACK and out[0].ack == new_isn + 1
        conn = next(iter(h.tcp.connections.values()))
        assert conn.state is S.SYN_RECEIVED and conn.irs == new_isn

    def test_syn_with_old_sequence_does_not_reopen(self) -> None:
        """RFC 9293 MAY-2 (C7): a SYN at or below the old RCV.NXT cannot be a new incarnation: the TIME-WAIT TCB
        stays."""
        h = self.server_in_time_wait()
        out = h.inject(replace(SEND, seq=R1, ack=0, flags=SYN), t=1.0)
        assert out == [replace(RECV, seq=L1 + 1, ack=R1 + 1, window=65535)]
        [conn] = h.tcp.connections.values()
        assert conn.state is S.TIME_WAIT


class TestCloseWithUnreadData:
    def test_close_with_unread_data_sends_rst(self) -> None:
        """RFC 2525 §2.17, RFC 9293 SHLD-3 (C9): close() with unread received data resets instead of a FIN."""
        conn = established()
        send(conn, t=0.0, seg=replace(DATA, payload=b"unread"))
        recv(conn, t=0.0)
        conn.close(0.1)
        assert recv(conn, t=0.1) == [replace(RECV, seq=L1, ack=0, flags=RST, window=0)]
        assert conn.state is S.CLOSED

    def test_data_arriving_after_close_is_answered_with_rst(self) -> None:
        """RFC 2525 §2.16, RFC 9293 MAY-1/SHLD-3 (C9): data for an application that closed gets a RST."""
        conn = fin_wait_2()
        send(conn, t=0.1, seg=replace(DATA, ack=L1 + 1, payload=b"too late"))
        assert recv(conn, t=0.1) == [replace(RECV, seq=L1 + 1, ack=0, flags=RST, window=0)]
        assert conn.state is S.CLOSED

    def test_close_after_reading_everything_sends_fin(self) -> None:
        """RFC 9293 §3.10.4: with nothing unread, close() is the graceful FIN."""
        conn = established()
        send(conn, t=0.0, seg=replace(DATA, payload=b"read me"))
        recv(conn, t=0.0)
        conn.read()
        conn.close(0.1)
        assert recv(conn, t=0.1) == [replace(RECV, seq=L1, ack=R1 + 7, flags=FIN | ACK, window=57)]  # SWS: edge kept
