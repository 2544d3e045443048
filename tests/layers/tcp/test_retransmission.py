"""Retransmission timer and connection failure (RFC 6298; RFC 9293 §3.8.1, §3.8.3, §3.10.8)
and loss recovery (RFC 5681 §3.1-3.2, RFC 6582), on the sans-IO connection. Peer MSS 16 where a
test needs several segments in flight."""

from __future__ import annotations

from dataclasses import replace

import pytest

from layers.tcp.connection import TcpConnection
from layers.tcp.events import ConnectionClosed, ConnectionFailed
from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, FIN, RST, SYN
from tests.layers.tcp.helpers import (
    L1,
    R1,
    RECV,
    REMOTE_SEQ,
    SEND,
    data,
    established,
    events,
    recv,
    recv_nothing,
    run_until,
    send,
    syn_sent,
)

S = TcpState
PEER_ACK = replace(SEND, seq=R1, ack=L1)


def ack(n: int, **kw: object) -> object:
    """The peer's ACK of our first *n* data bytes."""
    return replace(PEER_ACK, ack=L1 + n, **kw)


def flight(conn: TcpConnection, t: float) -> list[tuple[int, int]]:
    """(offset from L1, length) of each data segment sent at *t*."""
    return [(s.seq - L1, len(s.payload)) for s in recv(conn, t=t)]


class TestRtoEstimation:
    def test_initial_rto_is_one_second_whatever_the_floor(self) -> None:
        """RFC 6298 (2.1) (RT1): before any RTT sample the RTO is 1 s, also with a configured min_rto of 0.2 s."""
        for min_rto in (0.2, 1.0):
            conn = syn_sent(min_rto=min_rto)
            assert conn.get_timer() == 1.0

    def test_rto_is_min_rto_after_a_zero_rtt_handshake(self) -> None:
        """RFC 6298 (2.4): the RTO never goes below the floor (1 s here, RFC 6298's SHOULD)."""
        conn = established()
        conn.send(b"x", 0.0)
        recv(conn, t=0.0)
        assert conn.get_timer() == 1.0

    def test_configured_min_rto_is_the_floor(self) -> None:
        """RFC 6298 (2.4), RT3: with min_rto = 0.2 s (Linux's choice, documented in TcpOptions) the floor is 0.2 s."""
        conn = established(min_rto=0.2)
        conn.send(b"x", 0.0)
        recv(conn, t=0.0)
        assert conn.get_timer() == 0.2

    def test_first_sample_then_the_smoothing_formula(self) -> None:
        """RFC 6298 (2.2)-(2.3) (RT2): first R: SRTT=R, RTTVAR=R/2; then RTTVAR=3/4 RTTVAR+1/4|SRTT-R'|, SRTT=7/8
        SRTT+1/8 R'."""
        conn = syn_sent(min_rto=0.01)
        send(conn, t=0.1, seg=replace(SEND, seq=REMOTE_SEQ, ack=L1, flags=SYN | ACK))
        recv(conn, t=0.1)
        assert (conn.rtt.srtt, conn.rtt.rttvar) == (0.1, 0.05)
        assert conn.rtt.rto == pytest.approx(0.3)
        conn.send(b"x", 1.0)
        recv(conn, t=1.0)
        assert conn.get_timer() == pytest.approx(1.3)
        send(conn, t=1.3, seg=ack(1))
        assert conn.rtt.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.2)
        assert conn.rtt.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.3)
        assert conn.rtt.rto == pytest.approx(0.125 + 4 * 0.0875)
        conn.send(b"y", 2.0)
        recv(conn, t=2.0)
        assert conn.get_timer() == pytest.approx(2.475)

    def test_one_segment_is_timed_at_a_time(self) -> None:
        """RFC 6298 §3, MUST-18: at least one RTT sample per round trip; here exactly one per flight."""
        conn = established(min_rto=0.01, peer_mss=16)
        conn.send(data(64), 0.0)
        recv(conn, t=0.0)
        for i in range(1, 5):
            send(conn, t=0.1 * i, seg=ack(16 * i))
        assert conn.rtt.samples == 2  # the handshake and the first segment of the flight
        assert conn.rtt.latest == pytest.approx(0.1)


class TestTimerManagement:
    def test_timer_starts_with_the_first_send_and_is_not_restarted_by_later_sends(self) -> None:
        """RFC 6298 (5.1): start the timer when sending if it is not running (and leave it running otherwise)."""
        conn = established()
        conn.send(b"a", 0.0)
        recv(conn, t=0.0)
        conn.send(b"b", 0.5)
        recv(conn, t=0.5)
        assert conn.get_timer() == 1.0

    def test_timer_restarts_on_new_ack_and_stops_when_all_is_acked(self) -> None:
        """RFC 6298 (5.2)-(5.3): an ACK of new data restarts the timer; when everything is acknowledged it stops."""
        conn = established()
        conn.send(b"ab", 0.0)
        recv(conn, t=0.0)
        send(conn, t=0.5, seg=ack(1))
        assert conn.get_timer() == 1.5
        send(conn, t=0.6, seg=ack(2))
        assert conn.get_timer() is None

    def test_black_holed_data_is_retransmitted_with_doubling_rto(self) -> None:
        """RFC 6298 (5.4)-(5.6), MUST-19 (RT5): retransmit the earliest unacked segment at 1, 3, 7, 15, 31, 63 s."""
        conn = established()
        conn.send(b"hello", 0.0)
        first = recv(conn, t=0.0)
        sent = run_until(conn, 100.0)
        assert [t for t, _ in sent] == [1.0, 3.0, 7.0, 15.0, 31.0, 63.0]
        assert all(s == first[0] for _, s in sent)
        assert conn.get_timer() == 123.0  # the RTO is capped at max_rto = 60 s (RFC 6298 (2.5))
        assert conn.retransmits == 6

    def test_backed_off_rto_is_kept_until_new_data_is_acked(self) -> None:
        """RFC 6298 (5.7) note and §5: after an ACK of retransmitted data the backed-off RTO stays (Karn) until a new
        sample."""
        conn = established()
        conn.send(b"a", 0.0)
        recv(conn, t=0.0)
        run_until(conn, 3.0)  # retransmissions at 1 and 3: RTO now 4 s
        send(conn, t=3.1, seg=ack(1))
        conn.send(b"b", 3.2)
        recv(conn, t=3.2)
        assert conn.get_timer() == pytest.approx(7.2)
        send(conn, t=3.3, seg=ack(2))  # a fresh sample: 0.1 s
        assert conn.rtt.backoff == 0
        conn.send(b"c", 3.4)
        recv(conn, t=3.4)
        assert conn.get_timer() == pytest.approx(4.4)  # back to the 1 s floor

    def test_karn_no_sample_from_a_retransmitted_segment(self) -> None:
        """RFC 6298 §3 (Karn, RT4, MUST-18): the ACK of a retransmitted segment is ambiguous and gives no RTT sample."""
        conn = established(min_rto=0.01)
        samples = conn.rtt.samples
        conn.send(b"a", 0.0)
        recv(conn, t=0.0)
        rto = conn.get_timer()
        assert rto is not None
        run_until(conn, rto)  # one retransmission
        send(conn, t=rto + 5.0, seg=ack(1))  # very late ACK: would be a 5 s+ sample
        assert conn.rtt.samples == samples
        assert conn.rtt.srtt == 0.0


class TestAfterTimeout:
    def test_one_segment_after_rto_then_slow_start(self) -> None:
        """RFC 5681 §3.1 (RT7, CC4): after an RTO cwnd = 1 SMSS (one segment goes), ssthresh = max(FlightSize/2, 2
        SMSS)."""
        conn = established(peer_mss=16)
        conn.send(data(64), 0.0)
        assert flight(conn, 0.0) == [(0, 16), (16, 16), (32, 16), (48, 16)]
        [(t, seg)] = run_until(conn, 1.0)
        assert t == 1.0
        assert (seg.seq, len(seg.payload)) == (L1, 16)
        assert (conn.cc.cwnd, conn.cc.ssthresh) == (16, 32)
        send(conn, t=1.1, seg=ack(16))
        assert flight(conn, 1.1) == [(16, 16), (32, 16)]  # cwnd 32: two segments

    def test_give_up_after_r2_with_timeout_event_and_rst(self) -> None:
        """RFC 9293 §3.8.3, MUST-20/21, SHLD-11 (RT6): after retrying for R2 (>= 100 s and at least 8 retransmissions,
        RFC 1122 §4.2.3.5 allows a count) abort: "timeout" event and a RST."""
        conn = established()
        conn.send(b"hello", 0.0)
        recv(conn, t=0.0)
        sent = run_until(conn, 300.0)
        # Retransmissions at 1, 3, 7, 15, 31, 63, 123 and 183 s (RTO capped at 60 s); the next timeout gives up.
        assert [t for t, seg in sent if seg.payload] == [1.0, 3.0, 7.0, 15.0, 31.0, 63.0, 123.0, 183.0]
        assert sent[-1] == (243.0, replace(RECV, seq=L1 + 5, ack=0, flags=RST, window=0))
        assert conn.state is S.CLOSED and conn.closed_at == 243.0
        assert events(conn) == [ConnectionFailed("timeout", "retransmission timeout"), ConnectionClosed()]

    def test_progress_resets_the_give_up_clock(self) -> None:
        """RFC 9293 §3.8.3: R2 measures retransmission without progress; an ACK of new data starts it again."""
        conn = established(retries_timeout=10.0)
        conn.send(b"ab", 0.0)
        recv(conn, t=0.0)
        run_until(conn, 7.0)  # retransmissions at 1, 3, 7
        send(conn, t=8.0, seg=ack(1))
        run_until(conn, 17.9)
        assert conn.state is S.ESTABLISHED

    def test_user_timeout_aborts_when_it_expires(self) -> None:
        """RFC 9293 §3.10.8 (RT8): when the user timeout expires with data unacknowledged, the connection is aborted
        then."""
        conn = established(user_timeout=5.0)
        conn.send(b"hello", 0.0)
        recv(conn, t=0.0)
        sent = run_until(conn, 10.0)
        assert [t for t, _ in sent] == [1.0, 3.0, 5.0]
        assert sent[-1][1].flags == RST
        assert conn.state is S.CLOSED and conn.closed_at == 5.0
        assert events(conn)[0].reason == "timeout"  # type: ignore[attr-defined]

    def test_user_timeout_from_an_odd_start_time_fires_once_exactly(self) -> None:
        """RFC 9293 §3.10.8 (RT8): data first sent at t=0.1 with a 5 s user timeout is aborted at 0.1 + 5 s, in one
        step."""
        conn = established(user_timeout=5.0)
        conn.send(b"hello", 0.1)
        recv(conn, t=0.1)
        sent = run_until(conn, 10.0)
        assert [t for t, _ in sent] == [1.1, 3.1, 0.1 + 5.0]
        assert conn.state is S.CLOSED and conn.closed_at == 0.1 + 5.0

    def test_user_timeout_does_not_fire_while_data_is_acknowledged(self) -> None:
        """RFC 9293 §3.10.8: the user timeout counts time without acknowledgment, not the connection's age."""
        conn = established(user_timeout=2.0)
        for i in range(10):
            conn.send(b"x", float(i))
            recv(conn, t=float(i))
            send(conn, t=i + 0.5, seg=ack(i + 1))
        assert conn.state is S.ESTABLISHED
        assert conn.get_timer() is None


class TestAckSequenceNumber:
    def test_pure_ack_after_go_back_n_carries_the_highest_sequence_sent(self) -> None:
        """RFC 9293 §3.10.7.4 Table 6: a pure ACK must be acceptable to the peer, which already holds our data up to
        SND.MAX; after an RTO rewound the resend point it still carries SND.MAX (BSD, Linux tcp_acceptable_seq)."""
        conn = established(peer_mss=16)
        conn.send(data(64), 0.0)
        recv(conn, t=0.0)
        run_until(conn, 1.0)  # RTO: one segment resent, the resend point is L1 + 16
        send(conn, t=1.1, seg=replace(PEER_ACK, payload=b"peer data"))
        assert recv(conn, t=1.1) == [replace(RECV, seq=L1 + 64, ack=R1 + 9, window=55)]

    def test_pure_ack_never_lies_beyond_the_peer_window(self) -> None:
        """RFC 9293 §3.10.7.4 Table 6: with a zero-window probe byte outstanding, a pure ACK uses the window's right
        edge (SND.UNA), which a receiver with RCV.WND = 0 accepts."""
        conn = established()
        send(conn, t=0.0, seg=replace(PEER_ACK, window=0))
        conn.send(b"abc", 0.0)
        recv(conn, t=0.0)
        [probe] = recv(conn, t=1.0)
        assert probe.payload == b"a" and conn.snd_max == L1 + 1
        send(conn, t=1.1, seg=replace(PEER_ACK, window=0, payload=b"x"))
        assert recv(conn, t=1.1) == [replace(RECV, seq=L1, ack=R1 + 1, window=63)]


class TestFastRetransmit:
    def setup_flight(self) -> TcpConnection:
        conn = established(peer_mss=16)
        conn.send(data(64), 0.0)
        assert len(recv(conn, t=0.0)) == 4
        return conn

    def test_third_duplicate_ack_triggers_retransmission_without_rto(self) -> None:
        """RFC 5681 §3.2 (CC6): on the third duplicate ACK retransmit the missing segment at once; ssthresh and cwnd
        per equation 4."""
        conn = self.setup_flight()
        for i in range(2):
            send(conn, t=0.1 + i * 0.01, seg=PEER_ACK)
            recv_nothing(conn, t=0.1 + i * 0.01)
        send(conn, t=0.12, seg=PEER_ACK)
        assert recv(conn, t=0.12) == [replace(RECV, seq=L1, ack=R1, payload=data(16))]
        assert conn.cc.ssthresh == 32 and conn.cc.cwnd == 32 + 3 * 16
        assert conn.in_recovery and conn.retransmits == 1

    def test_full_ack_ends_recovery_and_deflates_cwnd(self) -> None:
        """RFC 6582 §3.2 step 3: a full ACK ends recovery with cwnd = min(ssthresh, max(FlightSize, SMSS) + SMSS)."""
        conn = self.setup_flight()
        send(conn, t=0.1, seg=[PEER_ACK, PEER_ACK, PEER_ACK])
        recv(conn, t=0.1)
        send(conn, t=0.2, seg=ack(64))
        assert not conn.in_recovery
        assert conn.cc.cwnd == min(32, max(0, 16) + 16)

    def test_window_updates_are_not_duplicate_acks(self) -> None:
        """RFC 5681 §2 (CC5): an ACK that changes the window is not a duplicate; three of them trigger nothing."""
        conn = self.setup_flight()
        for i, wnd in enumerate((300, 310, 320)):
            send(conn, t=0.1 + 0.01 * i, seg=replace(PEER_ACK, window=wnd))
            recv_nothing(conn, t=0.1 + 0.01 * i)
        assert conn.dup_acks == 0 and not conn.in_recovery

    def test_acks_carrying_data_or_fin_are_not_duplicate_acks(self) -> None:
        """RFC 5681 §2 (CC5): a duplicate ACK carries no data and no SYN/FIN."""
        conn = self.setup_flight()
        send(conn, t=0.1, seg=replace(PEER_ACK, payload=b"a"))
        send(conn, t=0.1, seg=replace(PEER_ACK, seq=R1 + 1, payload=b"b"))
        send(conn, t=0.1, seg=replace(PEER_ACK, seq=R1 + 2, flags=ACK | FIN))
        assert conn.dup_acks == 0 and not conn.in_recovery

    def test_newreno_partial_acks_repair_several_losses_without_rto(self) -> None:
        """RFC 6582 §3.2 (CC8): two losses in one window: fast retransmit, then a partial ACK retransmits the next
        hole at once; one cwnd reduction, no RTO."""
        conn = established(peer_mss=16, send_buffer=256)
        conn.send(data(64), 0.0)
        recv(conn, t=0.0)
        for i in range(1, 5):  # grow cwnd to 8 segments
            send(conn, t=0.01 * i, seg=ack(16 * i))
        assert conn.cc.cwnd == 128
        conn.send(data(128), 0.1)
        segs = flight(conn, 0.1)
        assert len(segs) == 8
        base = 64
        # s0 and s3 are lost: s1, s2, s4 -> three duplicate ACKs -> fast retransmit of s0.
        send(conn, t=0.2, seg=[ack(base), ack(base)])
        recv_nothing(conn, t=0.2)
        send(conn, t=0.21, seg=ack(base))
        assert flight(conn, 0.21) == [(base, 16)]
        ssthresh = conn.cc.ssthresh
        # s5, s6, s7 arrive: more duplicates (cwnd inflation; no data left to send).
        send(conn, t=0.22, seg=[ack(base), ack(base), ack(base)])
        recv_nothing(conn, t=0.22)
        # The retransmitted s0 fills the first hole: a partial ACK up to s3 -> s3 is resent at once.
        send(conn, t=0.3, seg=ack(base + 48))
        assert flight(conn, 0.3) == [(base + 48, 16)]
        assert conn.in_recovery
        # Everything is acknowledged: recovery ends.
        send(conn, t=0.4, seg=ack(base + 128))
        assert not conn.in_recovery and conn.cc.ssthresh == ssthresh
        assert conn.retransmits == 2 and conn.rtt.backoff == 0
        assert conn.get_timer() is None

    def test_no_second_fast_retransmit_before_recover(self) -> None:
        """RFC 6582 §3.2 step 2: duplicate ACKs for data sent before the last recovery point do not start a new
        recovery."""
        conn = self.setup_flight()
        send(conn, t=0.1, seg=[PEER_ACK, PEER_ACK, PEER_ACK])
        recv(conn, t=0.1)
        send(conn, t=0.2, seg=ack(16))  # partial ACK
        recv(conn, t=0.2)
        send(conn, t=0.3, seg=ack(64))  # full ACK: recovery over
        assert conn.cc.ssthresh == 32

    def test_idle_restart_limits_the_next_burst_to_the_initial_window(self) -> None:
        """RFC 5681 §4.1 (CC7): after an idle period longer than the RTO, cwnd restarts at min(cwnd, IW)."""
        conn = established(peer_mss=16, send_buffer=256)
        conn.send(data(64), 0.0)
        recv(conn, t=0.0)
        for i in range(1, 5):
            send(conn, t=0.01 * i, seg=ack(16 * i))
        assert conn.cc.cwnd == 128
        conn.send(data(128), 10.0)  # idle for 10 s >> RTO
        assert len(recv(conn, t=10.0)) == 4


class TestInitialWindowAfterLostSyn:
    def test_initial_window_is_one_segment_after_a_lost_syn(self) -> None:
        """RFC 5681 §3.1 (CC1): if the SYN was lost, the initial window after the handshake is one segment."""
        conn = syn_sent()
        run_until(conn, 1.0)  # the SYN times out once and is sent again
        send(conn, t=1.5, seg=replace(SEND, seq=REMOTE_SEQ, ack=L1, flags=SYN | ACK, mss=1460))
        assert conn.state is S.ESTABLISHED
        assert conn.cc.cwnd == conn.snd_mss

    def test_initial_window_is_the_rfc_5681_value_without_loss(self) -> None:
        """RFC 5681 §3.1 (CC1): without a lost SYN the initial window is min(4*SMSS, max(2*SMSS, 4380))."""
        conn = syn_sent()
        send(conn, t=0.1, seg=replace(SEND, seq=REMOTE_SEQ, ack=L1, flags=SYN | ACK, mss=1460))
        assert conn.cc.cwnd == min(4 * conn.snd_mss, max(2 * conn.snd_mss, 4380))


class TestLimitedTransmit:
    def test_first_two_duplicate_acks_each_release_one_new_segment(self) -> None:
        """RFC 3042 §2 (CC9): on the first and second duplicate ACK one new segment goes out beyond cwnd;
        cwnd itself does not change."""
        conn = established(send_buffer=10_000, peer_mss=100, peer_window=10_000)
        conn.cc.cwnd = 400
        conn.send(bytes(2000), 0.0)
        first = flight(conn, 0.0)
        assert first == [(0, 100), (100, 100), (200, 100), (300, 100)]
        window = 10_000
        send(conn, t=0.1, seg=ack(0, window=window))  # first duplicate ACK (segment 0 lost)
        assert flight(conn, 0.1) == [(400, 100)]
        send(conn, t=0.1, seg=ack(0, window=window))  # second
        assert flight(conn, 0.1) == [(500, 100)]
        assert conn.cc.cwnd == 400
        send(conn, t=0.1, seg=ack(0, window=window))  # third: fast retransmit of the hole
        assert flight(conn, 0.1)[0][0] == 0


class TestMoreInitialWindow:
    def test_initial_window_is_one_segment_after_a_resent_syn_ack(self) -> None:
        """RFC 5681 §3.1: a duplicate SYN shows our SYN-ACK was lost, so the initial window is one segment
        (without RFC 6298 (5.7)'s 3 s RTO, which follows only a timeout)."""
        from tests.layers.tcp.helpers import peer_syn, syn_received

        conn = syn_received()
        send(conn, t=0.5, seg=peer_syn())
        recv(conn, t=0.5)
        send(conn, t=0.55, seg=replace(SEND, seq=R1, ack=L1))
        assert conn.state is S.ESTABLISHED
        assert conn.cc.cwnd == conn.snd_mss
        assert conn.rtt.current() == 1.0

    def test_limited_transmit_needs_new_sack_information(self) -> None:
        """RFC 3042 §2: with SACK in use, a duplicate ACK releases a new segment only if it carries new SACK
        information."""
        from layers.tcp.scoreboard import Scoreboard

        conn = established(send_buffer=10_000, peer_mss=100, peer_window=10_000)
        conn.scoreboard = Scoreboard(conn.snd_mss)
        conn.cc.cwnd = 400
        conn.send(bytes(2000), 0.0)
        flight(conn, 0.0)
        send(conn, t=0.1, seg=ack(0, window=10_000))  # a duplicate without SACK blocks
        assert flight(conn, 0.1) == []
        send(conn, t=0.1, seg=ack(0, window=10_000, sack=[(L1 + 100, L1 + 200)]))  # new SACK info
        assert flight(conn, 0.1) == [(400, 100)]
