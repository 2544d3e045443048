"""Loss recovery of a SACK sender in small windows and lossy paths (issue 9): what makes recovery
finish without the retransmission timer, each rule at the segment level with explicit time.

The connection is built directly (min RTO 1 s, so "before the RTO" is unambiguous), SACK is
switched on by installing a scoreboard as the sack plugin does, and RACK by installing its
loss detector as the rack_tlp plugin does."""

from __future__ import annotations

from dataclasses import replace

from layers.tcp.connection import TcpConnection
from layers.tcp.scoreboard import Scoreboard
from layers.tcp.wire import FIN, TcpRepr
from plugins.rack_tlp import Rack
from tests.layers.tcp.helpers import LOCAL_SEQ, REMOTE_SEQ, SEND, established, recv, run_until, send

L1, R1 = LOCAL_SEQ + 1, REMOTE_SEQ + 1
SEG = 100  # the peer's MSS: segment n covers [L1 + 100 n, L1 + 100 (n + 1))


def _sender(*, segments: int, rack: bool = False, more: bool = True) -> tuple[TcpConnection, list[TcpRepr]]:
    """A connection with SACK (and RACK) that has sent *segments* full segments at t=0 (cwnd-limited:
    with *more*, as much again is queued)."""
    conn = established(send_buffer=100_000, peer_mss=SEG, peer_window=60_000)
    conn.scoreboard = Scoreboard(conn.snd_mss)
    if rack:
        conn.install_loss_detector(Rack(0.25))
    conn.cc.cwnd = segments * SEG
    conn.send(bytes((2 if more else 1) * segments * SEG), 0.0)
    out = recv(conn, t=0.0)
    assert len(out) == segments
    return conn, out


def _ack(conn: TcpConnection, t: float, ack: int, *sack: tuple[int, int]) -> list[TcpRepr]:
    """The peer ACKs *ack* (relative to L1) with SACK blocks (relative) at *t*; what we send."""
    blocks = [(L1 + a, L1 + b) for a, b in sack]
    send(conn, t=t, seg=replace(SEND, seq=R1, ack=L1 + ack, window=60_000, sack=blocks or None))
    return recv(conn, t=t)


def _data(out: list[TcpRepr]) -> list[tuple[int, int]]:
    return [((s.seq - L1) % 2**32, len(s.payload)) for s in out if s.payload]


class TestRecoveryEntry:
    def test_first_lost_segment_is_retransmitted_on_entry_whatever_the_pipe(self) -> None:
        """RFC 6675 §5 (4.3): on entering recovery the segment at HighACK + 1 is retransmitted at once.
        Here 10 segments are out, 1-3 are SACKed: segment 0 is lost, 4-9 count in the pipe (600 bytes),
        above the halved cwnd (500): NextSeg's cwnd - pipe >= SMSS rule alone would send nothing and
        leave the hole to the retransmission timer when no further ACK comes (a small window)."""
        conn, _ = _sender(segments=10)
        out = _ack(conn, 0.01, 0, (100, 200))
        out += _ack(conn, 0.01, 0, (100, 300))
        out += _ack(conn, 0.01, 0, (100, 400))
        assert conn.sack_recovery
        assert conn.scoreboard is not None and conn.scoreboard.pipe(1000) >= conn.cc.cwnd
        assert (0, SEG) in _data(out)


class TestLostRetransmission:
    def test_a_lost_retransmission_is_sent_again_by_rack_before_the_rto(self) -> None:
        """RFC 8985 §6.2 step 5: RACK judges a retransmission by its own send time: once a segment sent
        after it is delivered and RACK.rtt + reo_wnd has passed, the retransmission is lost and goes again
        (before HighRxt moves on to other holes), without waiting for the retransmission timer (1 s)."""
        conn, _ = _sender(segments=10, rack=True)
        out: list[TcpRepr] = []
        for right in (200, 300, 400):
            out += _ack(conn, 0.1, 0, (100, right))
        assert (0, SEG) in _data(out)  # the first retransmission of segment 0, at t=0.1
        # Segments 4-9 arrive (sent at t=0, before the retransmission): new data goes out at t=0.2.
        out = _ack(conn, 0.2, 0, (100, 1000))
        new = [d for d in _data(out) if d[0] >= 1000]
        assert new, _data(out)
        # The new data (sent after the retransmission) is SACKed; the retransmission is not: lost.
        first_new = new[0][0]
        later = _ack(conn, 0.3, 0, (100, first_new + SEG))
        sent = [(0.3, s) for s in later] + run_until(conn, 0.9)
        again = [t for t, s in sent if s.payload and s.seq == L1]
        assert again and again[0] < 0.9, [(t, _data([s])) for t, s in sent]
        assert conn.timeouts == 0

    def test_without_new_data_delivered_a_retransmission_is_not_judged(self) -> None:
        """RFC 8985 §6.2 step 5: only segments sent before the most recently delivered one can be lost:
        SACKs of segments sent before the retransmission never mark it lost again."""
        conn, _ = _sender(segments=10, rack=True, more=False)  # no new data to send after the retransmission
        for right in (200, 300, 400):
            _ack(conn, 0.1, 0, (100, right))
        out = _ack(conn, 0.2, 0, (100, 1000))
        sent = [(0.2, s) for s in out] + run_until(conn, 0.9)
        assert not [t for t, s in sent if s.payload and s.seq == L1]


class TestAfterTimeout:
    def test_a_lost_go_back_n_retransmission_is_sent_again_by_rack_before_the_next_rto(self) -> None:
        """RFC 8985 §6.3 / §6.2 step 5: after a retransmission timeout RACK still judges each segment by
        its latest send time. Here the RTO fires at t=1 (4 segments out); the go-back-N resend sends
        segment 0, then (cwnd 2 SMSS) segments 1 and 2 at t=1.05; 1 is lost again, 2 is SACKed at t=1.1:
        segment 1 goes again at once, not at the next, backed-off RTO (t=3.05)."""
        conn, _ = _sender(segments=4, rack=True, more=False)
        sent = run_until(conn, 1.01)
        assert conn.timeouts == 1 and [d for t, s in sent for d in _data([s])] == [(0, SEG)]
        out = _ack(conn, 1.05, SEG)
        assert _data(out) == [(SEG, SEG), (2 * SEG, SEG)]
        out = _ack(conn, 1.1, SEG, (2 * SEG, 3 * SEG))
        sent = [(1.1, s) for s in out] + run_until(conn, 1.5)
        again = [t for t, s in sent if s.payload and s.seq == L1 + SEG]
        assert again and again[0] < 1.5, [(t, _data([s])) for t, s in sent]
        assert conn.timeouts == 1


class TestTailLossProbe:
    def test_a_lost_fin_is_probed_for_before_the_rto(self) -> None:
        """RFC 8985 §7.3: the probe is the last segment sent, and when that is our FIN it carries the FIN.
        Three segments and the FIN go out at t=0; the ACK at t=0.05 covers the data but not the FIN (lost):
        the probe (PTO = 2 * SRTT + WCDelAckT with one segment out: 0.3 s) sends the FIN again, well
        before the retransmission timer (1 s)."""
        conn = established(send_buffer=100_000, peer_mss=SEG, peer_window=60_000)
        conn.scoreboard = Scoreboard(conn.snd_mss)
        conn.install_loss_detector(Rack(0.25, tlp=True))
        conn.rtt.sample(0.05)
        conn.cc.cwnd = 10 * SEG
        conn.send(bytes(3 * SEG), 0.0)
        conn.shutdown(0.0)
        out = recv(conn, t=0.0)
        assert out[-1].flags & FIN
        assert not _ack(conn, 0.05, 3 * SEG)
        sent = run_until(conn, 0.9)
        fins = [t for t, s in sent if s.flags & FIN and s.seq == L1 + 3 * SEG]
        assert fins and fins[0] < 0.9, [(t, s.flags, _data([s])) for t, s in sent]
        assert conn.timeouts == 0


class TestDuplicateSack:
    def _dsack_of_an_original(self, conn: TcpConnection) -> None:
        # The network duplicated segment 0 (never retransmitted): the peer reports it with a D-SACK
        # block below the cumulative ACK (RFC 2883 §4.1.2).
        send(conn, t=0.01, seg=replace(SEND, seq=R1, ack=L1 + 1000, window=60_000, sack=[(L1, L1 + SEG)]))
        recv(conn, t=0.01)

    def test_dsack_of_a_network_duplicate_does_not_widen_reo_wnd(self) -> None:
        """RFC 3708 §2 / RFC 8985 §6.2 step 4: a D-SACK widens RACK's reordering window only as evidence of
        a spurious retransmission; for data we never retransmitted it shows a duplicating network."""
        conn, _ = _sender(segments=10, rack=True)
        self._dsack_of_an_original(conn)
        assert conn.loss_detector.reo_wnd_mult == 1

    def test_dsack_after_a_retransmission_widens_reo_wnd(self) -> None:
        """RFC 8985 §6.2 step 4: a D-SACK for a segment we did retransmit widens reo_wnd."""
        conn, _ = _sender(segments=10, rack=True)
        for right in (200, 300, 400):
            _ack(conn, 0.1, 0, (100, right))
        assert conn.retransmits >= 1
        self._dsack_of_an_original(conn)
        assert conn.loss_detector.reo_wnd_mult == 2


class TestUndo:
    """A recovery that reordering caused is undone: cwnd and ssthresh return to their values before it
    (RFC 4015 §3.2's restore, as Linux's tcp_undo_cwnd_reduction), when the peer shows that no
    retransmission was needed."""

    def _recovering(self, *, ts: bool) -> tuple[TcpConnection, list[TcpRepr], tuple[int, int]]:
        """10 segments out at t=0, segment 0 "lost" (1-3 SACKed): recovery entered at t=0.1, segment 0
        retransmitted. Returns the connection, the originals and (cwnd, ssthresh) before the recovery."""
        conn = established(
            {"timestamps": {}} if ts else None,
            send_buffer=100_000,
            peer_mss=SEG + (12 if ts else 0),
            peer_window=60_000,
            peer_ts=5000 if ts else None,
        )
        conn.scoreboard = Scoreboard(conn.snd_mss)
        conn.cc.cwnd = 10 * SEG
        conn.send(bytes(10 * SEG), 0.0)
        originals = recv(conn, t=0.0)
        before = (conn.cc.cwnd, conn.cc.ssthresh)
        out = []
        for right in (200, 300, 400):
            out += self._ack(conn, 0.1, 0, [(100, right)], ts=(5001, originals[-1].ts[0]) if ts else None)
        assert conn.sack_recovery and (0, SEG) in _data(out) and conn.cc.cwnd < before[0]
        return conn, originals, before

    @staticmethod
    def _ack(conn: TcpConnection, t: float, ack: int, sack: list[tuple[int, int]], ts: tuple[int, int] | None = None):
        blocks = [(L1 + a, L1 + b) for a, b in sack]
        send(conn, t=t, seg=replace(SEND, seq=R1, ack=L1 + ack, window=60_000, sack=blocks or None, ts=ts))
        return recv(conn, t=t)

    def test_an_ack_echoing_the_original_undoes_the_recovery(self) -> None:
        """RFC 3522 §2 (Eifel detection): the ACK that covers the retransmitted segment echoes the TSval of
        the original (sent at t=0), older than the retransmission's (t=0.1): the original arrived (it
        was only reordered), so the recovery is undone at once."""
        conn, originals, before = self._recovering(ts=True)
        self._ack(conn, 0.102, 1000, [], ts=(5002, originals[0].ts[0]))
        assert not conn.in_recovery
        assert conn.cc.cwnd >= before[0] and conn.cc.ssthresh == before[1]
        assert conn.spurious_recoveries == 1

    def test_an_ack_echoing_the_retransmission_keeps_the_reduction(self) -> None:
        """RFC 3522 §2: echoing the retransmission's own TSval means the original was lost: no undo."""
        conn, _, before = self._recovering(ts=True)
        retransmission_tsval = conn.tsval_at(0.1)
        self._ack(conn, 0.2, 1000, [], ts=(5002, retransmission_tsval))
        assert conn.cc.cwnd < before[0] and conn.spurious_recoveries == 0

    def test_after_an_undo_a_loss_in_the_same_window_starts_a_recovery(self) -> None:
        """RFC 4015 §3.2 restores the state from before the spurious recovery, its RecoveryPoint too (RFC
        6675 §5 (a), as Linux returns to the Open state): segment 4 of the same window, lost, then
        starts a recovery on its three duplicate ACKs and is retransmitted at once, instead of being
        left to the retransmission timer."""
        conn, originals, _ = self._recovering(ts=True)
        self._ack(conn, 0.102, 4 * SEG, [], ts=(5002, originals[0].ts[0]))  # Eifel: the recovery undone
        assert not conn.in_recovery and conn.spurious_recoveries == 1
        out: list[TcpRepr] = []
        for right in (6, 7, 8):
            out += self._ack(conn, 0.103, 4 * SEG, [(5 * SEG, right * SEG)], ts=(5003, originals[5].ts[0]))
        assert conn.in_recovery and conn.recoveries == 2
        assert (4 * SEG, SEG) in _data(out)

    def test_dsack_of_every_retransmission_undoes_the_recovery(self) -> None:
        """RFC 3708 §3: when the peer reports every retransmission of the recovery as a duplicate (D-SACK),
        none was needed: the reduction is undone (without timestamps, too)."""
        conn, _, before = self._recovering(ts=False)
        assert conn.retransmits == 1
        self._ack(conn, 0.2, 1000, [(0, SEG)])  # the cumulative ACK with a D-SACK for segment 0
        assert conn.cc.cwnd >= before[0] and conn.cc.ssthresh == before[1]
        assert conn.spurious_recoveries == 1

    def test_a_recovery_that_retransmitted_nothing_is_undone_when_it_ends(self) -> None:
        """RFC 4015 §3.2 (Linux's tcp_try_undo_recovery with no retransmission): three SACKs and then, in
        the same batch, the cumulative ACK that fills the hole: the recovery ends before anything was
        retransmitted, so its reduction is undone."""
        conn = established(send_buffer=100_000, peer_mss=SEG, peer_window=60_000)
        conn.scoreboard = Scoreboard(conn.snd_mss)
        conn.cc.cwnd = 10 * SEG
        conn.send(bytes(10 * SEG), 0.0)
        recv(conn, t=0.0)
        before = (conn.cc.cwnd, conn.cc.ssthresh)
        acks = [replace(SEND, seq=R1, ack=L1, window=60_000, sack=[(L1 + 100, L1 + r)]) for r in (200, 300, 400)]
        acks.append(replace(SEND, seq=R1, ack=L1 + 1000, window=60_000))
        send(conn, t=0.1, seg=acks)
        out = recv(conn, t=0.1)
        assert not conn.in_recovery and conn.recoveries == 1
        assert not [d for d in _data(out) if d[0] < 1000]  # nothing was retransmitted
        assert (conn.cc.cwnd, conn.cc.ssthresh) == before


class TestDuplicateAcks:
    def test_repeated_acks_without_new_sack_information_start_no_recovery(self) -> None:
        """RFC 6675 §2: with SACK a duplicate ACK is one that SACKs new data. Three copies of the same ACK
        (the network duplicating it, or window updates) carry no news of a loss and must not start a
        recovery that halves cwnd."""
        conn, _ = _sender(segments=10)
        for _ in range(4):
            _ack(conn, 0.01, 0)
        assert not conn.in_recovery and conn.recoveries == 0
        assert conn.cc.cwnd == 10 * SEG
