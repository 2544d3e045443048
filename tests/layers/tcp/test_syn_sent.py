"""SYN-SENT (RFC 9293 §3.10.1 active OPEN, §3.10.7.3 segment arrival), on the sans-IO connection."""

from __future__ import annotations

from dataclasses import replace

import pytest

from layers.tcp.events import Connected, ConnectionClosed, ConnectionFailed, DataReceived, EofReceived
from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, FIN, PSH, RST, SYN
from tests.layers.tcp.helpers import (
    LOCAL_MSS,
    LOCAL_SEQ,
    RECV,
    REMOTE_SEQ,
    SEND,
    closed,
    events,
    recv,
    recv_nothing,
    run_until,
    send,
    syn_sent,
)

S = TcpState
SYN_ACK = replace(SEND, seq=REMOTE_SEQ, ack=LOCAL_SEQ + 1, flags=SYN | ACK)


class TestActiveOpen:
    def test_syn_format(self) -> None:
        """RFC 9293 §3.10.1 (E2, MUST-14): <SEQ=ISS><CTL=SYN> with our MSS and the free buffer as window."""
        conn = closed(passive=False)
        conn.open_active(0.0)
        assert conn.state is S.SYN_SENT
        assert recv(conn, t=0.0) == [replace(RECV, seq=LOCAL_SEQ, ack=0, flags=SYN, window=64, mss=LOCAL_MSS)]
        assert (conn.snd_una, conn.snd_nxt) == (LOCAL_SEQ, LOCAL_SEQ + 1)

    def test_syn_window_is_capped_at_65535(self) -> None:
        """RFC 7323 §2.2: the window in a SYN is never scaled, so it is at most 65535."""
        conn = closed(passive=False, recv_buffer=1 << 20)
        conn.open_active(0.0)
        [syn] = recv(conn, t=0.0)
        assert syn.window == 65535

    def test_nothing_else_is_sent_before_the_syn_is_answered(self) -> None:
        """RFC 9293 §3.10.1: data queued in SYN-SENT waits for ESTABLISHED."""
        conn = syn_sent()
        assert conn.send(b"queued", 0.0) == 6
        recv_nothing(conn, t=0.5)


class TestSynAck:
    def test_syn_ack_establishes_and_is_acked(self) -> None:
        """RFC 9293 §3.10.7.3 (E2): SND.UNA < SEG.ACK =< SND.NXT on a SYN-ACK -> ESTABLISHED, send
        <SEQ=SND.NXT><ACK=RCV.NXT><ACK>."""
        conn = syn_sent()
        send(conn, t=0.1, seg=SYN_ACK)
        assert conn.state is S.ESTABLISHED
        assert recv(conn, t=0.1) == [replace(RECV, seq=LOCAL_SEQ + 1, ack=REMOTE_SEQ + 1)]
        assert events(conn) == [Connected()]
        assert (conn.irs, conn.rcv_nxt, conn.snd_una, conn.snd_wnd) == (REMOTE_SEQ, REMOTE_SEQ + 1, LOCAL_SEQ + 1, 256)

    def test_queued_data_leaves_with_the_handshake_ack(self) -> None:
        """RFC 9293 §3.10.7.3: data queued before ESTABLISHED is sent as soon as the SYN is acknowledged."""
        conn = syn_sent()
        conn.send(b"hello", 0.0)
        send(conn, t=0.1, seg=SYN_ACK)
        assert recv(conn, t=0.1) == [
            replace(RECV, seq=LOCAL_SEQ + 1, ack=REMOTE_SEQ + 1, flags=ACK | PSH, payload=b"hello")
        ]

    def test_data_on_syn_ack_is_delivered(self) -> None:
        """RFC 9293 §3.10.7.3: text on a SYN-ACK is processed "at the sixth step": delivered and acknowledged."""
        conn = syn_sent()
        send(conn, t=0.1, seg=replace(SYN_ACK, payload=b"hello"))
        assert conn.state is S.ESTABLISHED
        assert recv(conn, t=0.1) == [replace(RECV, seq=LOCAL_SEQ + 1, ack=REMOTE_SEQ + 6, window=59)]
        assert events(conn) == [Connected(), DataReceived()]
        assert conn.read() == b"hello"

    def test_fin_on_syn_ack_goes_to_close_wait(self) -> None:
        """RFC 9293 §3.10.7.3, "Eighth": a FIN on the SYN-ACK is processed after ESTABLISHED: CLOSE-WAIT, FIN acked."""
        conn = syn_sent()
        send(conn, t=0.1, seg=replace(SYN_ACK, flags=SYN | ACK | FIN, payload=b"bye"))
        assert conn.state is S.CLOSE_WAIT
        # The FIN takes a sequence number but no buffer: the right edge stays at IRS + 1 + 64.
        assert recv(conn, t=0.1) == [replace(RECV, seq=LOCAL_SEQ + 1, ack=REMOTE_SEQ + 5, window=60)]
        assert events(conn) == [Connected(), DataReceived(), EofReceived()]
        assert conn.read() == b"bye"

    def test_bare_syn_fin_is_dropped(self) -> None:
        """RFC 9293 §3.10.7.3 (checklist §5.2, odd flag mixes): SYN+FIN without ACK in SYN-SENT is malformed:
        dropped, no state change."""
        conn = syn_sent()
        send(conn, t=0.1, seg=replace(SEND, seq=REMOTE_SEQ, ack=0, flags=SYN | FIN))
        recv_nothing(conn, t=0.1)
        assert conn.state is S.SYN_SENT

    def test_peer_mss_sets_the_send_mss(self) -> None:
        """RFC 9293 §3.7.1 (MUST-14/16): the MSS option of the SYN-ACK bounds our segments."""
        conn = syn_sent(send_buffer=256)
        send(conn, t=0.1, seg=replace(SYN_ACK, mss=100))
        conn.send(bytes(250), 0.1)
        assert [len(s.payload) for s in recv(conn, t=0.1)] == [100, 100, 50]

    @pytest.mark.parametrize("ack", [LOCAL_SEQ, LOCAL_SEQ - 1, LOCAL_SEQ + 2, LOCAL_SEQ + 5, LOCAL_SEQ + 0x7000_0000])
    def test_unacceptable_ack_gets_rst_and_stays_syn_sent(self, ack: int) -> None:
        """RFC 9293 §3.10.7.3 (E3): SEG.ACK =< ISS or > SND.NXT -> <SEQ=SEG.ACK><CTL=RST>, drop, still SYN-SENT."""
        conn = syn_sent()
        send(conn, t=0.1, seg=replace(SYN_ACK, ack=ack & 0xFFFFFFFF))
        assert recv(conn, t=0.1) == [replace(RECV, seq=ack & 0xFFFFFFFF, ack=0, flags=RST, window=0)]
        assert conn.state is S.SYN_SENT
        assert events(conn) == []
        # ... and the real SYN-ACK still completes the handshake.
        send(conn, t=0.2, seg=SYN_ACK)
        assert conn.state is S.ESTABLISHED

    def test_bare_ack_of_the_syn_does_nothing(self) -> None:
        """RFC 9293 §3.10.7.3 "Fifth": an acceptable ACK without SYN or RST is dropped; we stay in SYN-SENT."""
        conn = syn_sent()
        send(conn, t=0.1, seg=replace(SEND, seq=REMOTE_SEQ, ack=LOCAL_SEQ + 1))
        recv_nothing(conn, t=0.1)
        assert conn.state is S.SYN_SENT


class TestRstInSynSent:
    def test_rst_with_acceptable_ack_is_connection_refused(self) -> None:
        """RFC 9293 §3.10.7.3 (E4): a RST whose ACK acknowledges our SYN -> "connection reset" (refused), CLOSED."""
        conn = syn_sent()
        send(conn, t=0.1, seg=replace(SEND, seq=0, ack=LOCAL_SEQ + 1, flags=RST | ACK, window=0))
        assert conn.state is S.CLOSED
        recv_nothing(conn, t=0.1)
        assert events(conn) == [ConnectionFailed("refused", "connection refused by peer"), ConnectionClosed()]

    def test_bare_rst_is_ignored(self) -> None:
        """RFC 9293 §3.10.7.3 (E4): a RST without ACK in SYN-SENT is dropped (it cannot prove it saw our SYN)."""
        conn = syn_sent()
        send(conn, t=0.1, seg=replace(SEND, seq=0, ack=0, flags=RST))
        recv_nothing(conn, t=0.1)
        assert conn.state is S.SYN_SENT and events(conn) == []

    def test_rst_with_unacceptable_ack_is_ignored_without_reply(self) -> None:
        """RFC 9293 §3.10.7.3 (E3, R10): a bad ACK on a RST is dropped silently (never a RST for a RST)."""
        conn = syn_sent()
        send(conn, t=0.1, seg=replace(SEND, seq=0, ack=LOCAL_SEQ + 9, flags=RST | ACK))
        recv_nothing(conn, t=0.1)
        assert conn.state is S.SYN_SENT


class TestSimultaneousOpen:
    def test_bare_syn_moves_to_syn_received_and_answers_syn_ack_with_the_same_iss(self) -> None:
        """RFC 9293 §3.10.7.3, MUST-10 (E5): a SYN without ACK in SYN-SENT -> SYN-RECEIVED,
        <SEQ=ISS><ACK=RCV.NXT><SYN,ACK>."""
        conn = syn_sent()
        send(conn, t=0.1, seg=replace(SEND, seq=REMOTE_SEQ, ack=0, flags=SYN))
        assert conn.state is S.SYN_RECEIVED
        assert recv(conn, t=0.1) == [replace(RECV, seq=LOCAL_SEQ, ack=REMOTE_SEQ + 1, flags=SYN | ACK, mss=LOCAL_MSS)]
        # The peer's ACK of our SYN completes the open.
        send(conn, t=0.2, seg=replace(SEND, seq=REMOTE_SEQ + 1, ack=LOCAL_SEQ + 1))
        assert conn.state is S.ESTABLISHED
        assert events(conn) == [Connected()]
        recv_nothing(conn, t=0.2)

    def test_crossing_syn_acks_both_complete(self) -> None:
        """RFC 9293 §3.5 Figure 8: in SYN-RECEIVED the peer's SYN-ACK (its SYN is old now) gets an ACK; that ACK and the
        peer's own establish both sides."""
        conn = syn_sent()
        send(conn, t=0.1, seg=replace(SEND, seq=REMOTE_SEQ, ack=0, flags=SYN))
        recv(conn, t=0.1)
        send(conn, t=0.2, seg=replace(SEND, seq=REMOTE_SEQ, ack=LOCAL_SEQ + 1, flags=SYN | ACK))
        out = recv(conn, t=0.2)
        assert out == [replace(RECV, seq=LOCAL_SEQ + 1, ack=REMOTE_SEQ + 1)]
        send(conn, t=0.3, seg=replace(SEND, seq=REMOTE_SEQ + 1, ack=LOCAL_SEQ + 1))
        assert conn.state is S.ESTABLISHED

    def test_rst_in_active_syn_received_is_refused(self) -> None:
        """RFC 9293 §3.10.7.4 "Second", MUST-11 (E6): SYN-RECEIVED reached by an active open -> RST means "connection
        refused"."""
        conn = syn_sent()
        send(conn, t=0.1, seg=replace(SEND, seq=REMOTE_SEQ, ack=0, flags=SYN))
        recv(conn, t=0.1)
        events(conn)
        send(conn, t=0.2, seg=replace(SEND, seq=REMOTE_SEQ + 1, ack=0, flags=RST))
        assert conn.state is S.CLOSED
        assert events(conn) == [ConnectionFailed("refused", "connection refused by peer"), ConnectionClosed()]


class TestSynRetransmission:
    def test_syn_is_retransmitted_with_exponential_backoff(self) -> None:
        """RFC 6298 (2.1), (5.5), MUST-22 (E9): initial RTO 1 s, then doubled: SYNs at 0, 1, 3, 7, 15, 31 s."""
        conn = syn_sent(min_rto=0.2)  # the floor does not change the initial 1 s
        assert conn.get_timer() == 1.0
        sent = run_until(conn, 40.0)
        syn = replace(RECV, seq=LOCAL_SEQ, ack=0, flags=SYN, window=64, mss=LOCAL_MSS)
        assert sent == [(1.0, syn), (3.0, syn), (7.0, syn), (15.0, syn), (31.0, syn)]

    def test_syn_gives_up_after_syn_retries_timeout_with_a_timeout_event(self) -> None:
        """RFC 9293 §3.8.3, MUST-23 (E9): SYN retransmission continues for at least 3 minutes, then "timeout"; no RST
        in SYN-SENT."""
        conn = syn_sent()
        sent = run_until(conn, 179.9)
        assert conn.state is S.SYN_SENT
        times = [t for t, _ in sent]
        assert times == [1.0, 3.0, 7.0, 15.0, 31.0, 63.0, 123.0]  # RTO capped at max_rto = 60 s
        assert conn.get_timer() == 183.0
        sent = run_until(conn, 200.0)
        assert sent == []
        assert conn.state is S.CLOSED
        assert events(conn) == [ConnectionFailed("timeout", "retransmission timeout"), ConnectionClosed()]

    def test_shorter_syn_retries_timeout_is_honoured(self) -> None:
        """RFC 9293 MUST-21: R2 is settable; with syn_retries_timeout 10 s the open fails at the first expiry after
        10 s."""
        conn = syn_sent(syn_retries_timeout=10.0)
        run_until(conn, 20.0)
        assert conn.state is S.CLOSED
        assert conn.closed_at == 15.0

    def test_rto_after_a_syn_timeout_is_3_s_for_data(self) -> None:
        """RFC 6298 (5.7): if the SYN timed out and no RTT sample exists, the RTO is reset to 3 s once data starts."""
        conn = syn_sent()
        run_until(conn, 1.0)  # one SYN retransmission at 1 s
        send(conn, t=1.5, seg=SYN_ACK)  # ambiguous: no sample (Karn)
        assert conn.state is S.ESTABLISHED
        assert conn.rtt.srtt is None
        recv(conn, t=1.5)
        conn.send(b"data", 2.0)
        recv(conn, t=2.0)
        assert conn.get_timer() == 5.0

    def test_syn_ack_gives_the_first_rtt_sample(self) -> None:
        """RFC 6298 (2.2): the first measurement R sets SRTT = R, RTTVAR = R/2, RTO = SRTT + 4*RTTVAR."""
        conn = syn_sent(min_rto=0.1)
        send(conn, t=0.25, seg=SYN_ACK)
        assert conn.rtt.srtt == 0.25 and conn.rtt.rttvar == 0.125
        assert conn.rtt.rto == pytest.approx(0.75)

    def test_close_in_syn_sent_deletes_the_tcb_without_rst(self) -> None:
        """RFC 9293 §3.10.4/§3.10.5: CLOSE or ABORT in SYN-SENT deletes the TCB; nothing is sent."""
        for op in ("close", "abort"):
            conn = syn_sent()
            getattr(conn, op)(0.5)
            assert conn.state is S.CLOSED
            recv_nothing(conn, t=0.5)
            assert conn.get_timer() is None
