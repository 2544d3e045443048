"""SYN-RECEIVED after a passive open (RFC 9293 §3.10.7.2, §3.10.7.4), on the sans-IO connection."""

from __future__ import annotations

from dataclasses import replace

import pytest

from layers.tcp.events import Connected, ConnectionClosed, ConnectionFailed, DataReceived
from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, FIN, RST, SYN
from tests.layers.tcp.helpers import (
    LOCAL_MSS,
    LOCAL_SEQ,
    RECV,
    REMOTE_SEQ,
    SEND,
    events,
    listen,
    peer_syn,
    recv,
    recv_nothing,
    run_until,
    send,
    syn_received,
)

S = TcpState
SYN_ACK = replace(RECV, seq=LOCAL_SEQ, ack=REMOTE_SEQ + 1, flags=SYN | ACK, window=64, mss=LOCAL_MSS)
FINAL_ACK = replace(SEND, seq=REMOTE_SEQ + 1, ack=LOCAL_SEQ + 1)


class TestPassiveOpen:
    def test_syn_is_answered_with_syn_ack(self) -> None:
        """RFC 9293 §3.10.7.2: a SYN in LISTEN -> SYN-RECEIVED, <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK> with our MSS."""
        conn = listen()
        conn.open_passive(peer_syn(), 0.0)
        assert conn.state is S.SYN_RECEIVED
        assert recv(conn, t=0.0) == [SYN_ACK]
        assert (conn.irs, conn.rcv_nxt, conn.snd_nxt) == (REMOTE_SEQ, REMOTE_SEQ + 1, LOCAL_SEQ + 1)

    def test_retransmitted_syn_is_answered_with_the_same_syn_ack(self) -> None:
        """RFC 9293 §3.10.7.4 "First" (checklist §5.2, lost SYN-ACK): the peer's duplicate SYN in SYN-RECEIVED gets
        the same SYN-ACK again."""
        conn = syn_received()
        send(conn, t=1.0, seg=peer_syn())
        assert recv(conn, t=1.0) == [SYN_ACK]
        assert conn.state is S.SYN_RECEIVED

    def test_lost_syn_ack_is_retransmitted_with_backoff(self) -> None:
        """RFC 6298 (5.4)-(5.6), MUST-22 (E9): the SYN-ACK is resent at 1, 3, 7 s until acknowledged."""
        conn = syn_received()
        assert run_until(conn, 10.0) == [(1.0, SYN_ACK), (3.0, SYN_ACK), (7.0, SYN_ACK)]

    def test_syn_ack_gives_up_with_rst_after_syn_retries_timeout(self) -> None:
        """RFC 9293 §3.8.3, MUST-20/23: after R2 for the SYN-ACK (>= 3 min) the half-open TCB is deleted with a RST."""
        conn = syn_received()
        sent = run_until(conn, 200.0)
        assert conn.state is S.CLOSED and conn.closed_at == 183.0
        assert sent[-1] == (183.0, replace(RECV, seq=LOCAL_SEQ + 1, ack=0, flags=RST, window=0))
        assert ConnectionFailed("timeout", "retransmission timeout") in events(conn)


class TestFinalAck:
    def test_acceptable_ack_establishes_with_send_window_set(self) -> None:
        """RFC 9293 §3.10.7.4 "Fifth" (E1): SND.UNA < SEG.ACK =< SND.NXT -> ESTABLISHED; SND.WND, WL1, WL2 from the
        segment."""
        conn = syn_received()
        send(conn, t=0.1, seg=replace(FINAL_ACK, window=1234))
        assert conn.state is S.ESTABLISHED
        recv_nothing(conn, t=0.1)  # never ACK a pure ACK
        assert events(conn) == [Connected()]
        assert (conn.snd_una, conn.snd_wnd, conn.snd_wl1, conn.snd_wl2) == (
            LOCAL_SEQ + 1,
            1234,
            REMOTE_SEQ + 1,
            LOCAL_SEQ + 1,
        )

    @pytest.mark.parametrize("ack", [LOCAL_SEQ, LOCAL_SEQ - 100, LOCAL_SEQ + 2, LOCAL_SEQ + 1000])
    def test_unacceptable_ack_gets_rst_with_seq_seg_ack(self, ack: int) -> None:
        """RFC 9293 §3.10.7.4 "Fifth": in SYN-RECEIVED an unacceptable ACK gets <SEQ=SEG.ACK><CTL=RST>; the TCB
        stays."""
        conn = syn_received()
        send(conn, t=0.1, seg=replace(FINAL_ACK, ack=ack))
        assert recv(conn, t=0.1) == [replace(RECV, seq=ack, ack=0, flags=RST, window=0)]
        assert conn.state is S.SYN_RECEIVED
        send(conn, t=0.2, seg=FINAL_ACK)
        assert conn.state is S.ESTABLISHED

    def test_data_with_the_final_ack_is_accepted(self) -> None:
        """RFC 9293 §3.10.7.4 "Fifth"/"Seventh": the client's first data segment can act as the handshake's final
        ACK, its data delivered."""
        conn = syn_received()
        send(conn, t=0.1, seg=replace(FINAL_ACK, payload=b"abc"))
        assert conn.state is S.ESTABLISHED
        assert recv(conn, t=0.1) == [replace(RECV, seq=LOCAL_SEQ + 1, ack=REMOTE_SEQ + 4, window=61)]
        assert events(conn) == [Connected(), DataReceived()]
        assert conn.read() == b"abc"

    def test_fin_with_the_final_ack_goes_to_close_wait(self) -> None:
        """RFC 9293 §3.10.7.4 "Eighth": SYN-RECEIVED + FIN (after the ACK of our SYN) -> CLOSE-WAIT."""
        conn = syn_received()
        send(conn, t=0.1, seg=replace(FINAL_ACK, flags=ACK | FIN))
        assert conn.state is S.CLOSE_WAIT
        assert recv(conn, t=0.1) == [replace(RECV, seq=LOCAL_SEQ + 1, ack=REMOTE_SEQ + 2, window=63)]

    def test_segment_without_ack_is_dropped(self) -> None:
        """RFC 9293 §3.10.7.4 "Fifth": "if the ACK bit is off, drop the segment and return"."""
        conn = syn_received()
        send(conn, t=0.1, seg=replace(FINAL_ACK, flags=0, payload=b"abc"))
        recv_nothing(conn, t=0.1)
        assert conn.state is S.SYN_RECEIVED and conn.readable == 0

    def test_out_of_window_segment_gets_an_ack(self) -> None:
        """RFC 9293 §3.10.7.4 "First": an unacceptable segment in SYN-RECEIVED ->
        <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>."""
        conn = syn_received()
        send(conn, t=0.1, seg=replace(FINAL_ACK, seq=REMOTE_SEQ + 1000, payload=b"far"))
        assert recv(conn, t=0.1) == [replace(RECV, seq=LOCAL_SEQ + 1, ack=REMOTE_SEQ + 1)]
        assert conn.state is S.SYN_RECEIVED


class TestSynData:
    def test_data_on_the_syn_is_not_delivered_nor_acked(self) -> None:
        """RFC 9293 §3.10.7.2 (E10): SYN data is never delivered before ESTABLISHED; here it is not acknowledged at
        all."""
        conn = listen()
        conn.open_passive(peer_syn(payload=b"0123456789"), 0.0)
        assert recv(conn, t=0.0) == [SYN_ACK]
        assert conn.readable == 0
        send(conn, t=0.1, seg=FINAL_ACK)
        assert conn.state is S.ESTABLISHED and conn.readable == 0
        # The peer sends the unacknowledged bytes again; now they are delivered, once.
        send(conn, t=0.2, seg=replace(FINAL_ACK, payload=b"0123456789"))
        assert conn.read() == b"0123456789"
        assert recv(conn, t=0.2) == [replace(RECV, seq=LOCAL_SEQ + 1, ack=REMOTE_SEQ + 11, window=54)]


class TestResetAndSyn:
    def test_rst_removes_the_embryonic_tcb_without_an_accept(self) -> None:
        """RFC 9293 §3.10.7.4 "Second", MUST-11 (E6): RST in SYN-RECEIVED after a passive open -> back to LISTEN:
        this TCB is deleted quietly (no Connected, no failure for a user who never saw it)."""
        conn = syn_received()
        send(conn, t=0.1, seg=replace(SEND, seq=REMOTE_SEQ + 1, ack=0, flags=RST))
        assert conn.state is S.CLOSED
        recv_nothing(conn, t=0.1)
        assert events(conn) == [ConnectionClosed()]
        assert conn.get_timer() is None

    def test_rst_in_window_but_not_at_rcv_nxt_gets_challenge_ack(self) -> None:
        """RFC 5961 §3.2 (R2): in SYN-RECEIVED too, a RST in the window but not at RCV.NXT gets a challenge ACK."""
        conn = syn_received()
        send(conn, t=0.1, seg=replace(SEND, seq=REMOTE_SEQ + 5, ack=0, flags=RST))
        assert recv(conn, t=0.1) == [replace(RECV, seq=LOCAL_SEQ + 1, ack=REMOTE_SEQ + 1)]
        assert conn.state is S.SYN_RECEIVED

    def test_new_in_window_syn_returns_to_listen(self) -> None:
        """RFC 9293 §3.10.7.4 "Fourth": a SYN in the window in SYN-RECEIVED after a passive open returns the TCB to
        LISTEN."""
        conn = syn_received()
        send(conn, t=0.1, seg=replace(SEND, seq=REMOTE_SEQ + 3, ack=0, flags=SYN))
        assert conn.state is S.LISTEN
        recv_nothing(conn, t=0.1)


class TestCloseInSynReceived:
    def test_close_queues_the_fin_until_established(self) -> None:
        """RFC 9293 §3.10.4 (C2): CLOSE in SYN-RECEIVED -> the FIN is queued and sent once ESTABLISHED (FIN-WAIT-1)."""
        conn = syn_received()
        conn.close(0.05)
        assert conn.state is S.SYN_RECEIVED
        recv_nothing(conn, t=0.05)
        send(conn, t=0.1, seg=FINAL_ACK)
        assert conn.state is S.FIN_WAIT_1
        assert recv(conn, t=0.1) == [replace(RECV, seq=LOCAL_SEQ + 1, ack=REMOTE_SEQ + 1, flags=FIN | ACK)]

    def test_abort_sends_rst(self) -> None:
        """RFC 9293 §3.10.5: ABORT in SYN-RECEIVED sends <SEQ=SND.NXT><CTL=RST>."""
        conn = syn_received()
        conn.abort(0.05)
        assert recv(conn, t=0.05) == [replace(RECV, seq=LOCAL_SEQ + 1, ack=0, flags=RST, window=0)]
        assert conn.state is S.CLOSED


class TestRttInHandshake:
    def test_final_ack_gives_an_rtt_sample(self) -> None:
        """RFC 6298 (2.2): the ACK of our SYN-ACK is a measurement: SRTT = R, RTTVAR = R/2."""
        conn = syn_received(min_rto=0.1)
        send(conn, t=0.2, seg=FINAL_ACK)
        assert conn.rtt.srtt == 0.2 and conn.rtt.rttvar == 0.1

    def test_syn_ack_resent_for_a_duplicate_syn_gives_no_sample(self) -> None:
        """RFC 6298 §3 (Karn, RT4, MUST-18): after the SYN-ACK was sent twice the ACK is ambiguous: no RTT sample."""
        conn = syn_received()
        send(conn, t=0.5, seg=peer_syn())  # a client SYN retransmission: our SYN-ACK was lost
        assert recv(conn, t=0.5) == [SYN_ACK]
        send(conn, t=0.55, seg=FINAL_ACK)
        assert conn.state is S.ESTABLISHED
        assert conn.rtt.samples == 0 and conn.rtt.srtt is None
        assert conn.rtt.rto == 1.0

    def test_syn_ack_timeout_gives_no_sample_and_3_s_rto(self) -> None:
        """RFC 6298 §3 (Karn) and (5.7): after a SYN-ACK timeout, no sample; the RTO becomes 3 s for data."""
        conn = syn_received()
        run_until(conn, 1.0)
        send(conn, t=1.05, seg=FINAL_ACK)
        assert conn.rtt.srtt is None and conn.rtt.current() == 3.0
