"""RFC 6675 SACK-based loss recovery: the scoreboard alone, then two stacks in a simulation."""

from __future__ import annotations

from framework.simulation import Simulation
from layers.tcp.scoreboard import Scoreboard
from tests.layers.tcp.helpers import data, make_stack, tcp_layer

MSS = 1000


class TestScoreboard:
    def test_update_merges_and_counts_new_bytes(self) -> None:
        """RFC 6675 §3: SACK blocks are merged into disjoint ranges; repeats add nothing."""
        sb = Scoreboard(MSS)
        assert sb.update([(2000, 3000)], 0, 10_000) == 1000
        assert sb.update([(2000, 3000), (3000, 5000)], 0, 10_000) == 2000
        assert sb.sacked == [(2000, 5000)]
        assert sb.sacked_bytes == 3000

    def test_dsack_and_bogus_blocks_are_ignored(self) -> None:
        """RFC 2883 §4 / RFC 6675 §3: blocks below the cumulative ACK (D-SACK) or beyond what was
        sent do not enter the scoreboard."""
        sb = Scoreboard(MSS)
        assert sb.update([(0, 500), (20_000, 21_000)], 1000, 10_000) == 0
        assert sb.sacked == []

    def test_is_lost_by_bytes_and_by_blocks(self) -> None:
        """RFC 6675 §4 IsLost: more than (DupThresh-1)*SMSS bytes, or DupThresh discontiguous
        ranges, SACKed above a sequence number."""
        sb = Scoreboard(MSS)
        sb.update([(1000, 3000)], 0, 10_000)
        assert not sb.is_lost(0)  # exactly 2 * SMSS above: not more than (3 - 1) * SMSS
        sb.update([(3000, 3001)], 0, 10_000)
        assert sb.is_lost(0)
        sb2 = Scoreboard(MSS)
        sb2.update([(1000, 1100), (2000, 2100), (3000, 3100)], 0, 10_000)
        assert sb2.is_lost(0)

    def test_next_hole_is_the_first_unsacked_range_below_the_highest_sacked(self) -> None:
        """RFC 6675 §4 NextSeg rule 1: retransmit from the first unSACKed byte above HighRxt,
        one SMSS at most, never above the highest SACKed byte."""
        sb = Scoreboard(MSS)
        sb.update([(3000, 6000), (7000, 8000)], 0, 10_000)
        assert sb.next_hole(10_000) == (0, 1000)
        sb.mark_retransmitted(0, 1000)
        assert sb.next_hole(10_000) == (1000, 2000)
        sb.mark_retransmitted(1000, 3000)
        # Only 1000 bytes are SACKed above 6000: not lost by rule (1), a candidate for rule (3).
        assert sb.next_hole(10_000) is None
        assert sb.next_hole(10_000, lost_only=False) == (6000, 7000)
        sb.mark_retransmitted(6000, 7000)
        assert sb.next_hole(10_000, lost_only=False) is None  # nothing unSACKed below 8000 is left

    def test_pipe_counts_only_what_is_still_in_the_network(self) -> None:
        """RFC 6675 §4 SetPipe: lost bytes leave the pipe, retransmissions re-enter it."""
        sb = Scoreboard(MSS)
        sb.update([(2000, 6000)], 0, 8000)
        # [0, 2000) is lost (4000 SACKed bytes above it), [6000, 8000) is still in flight.
        assert sb.pipe(8000) == 2000
        sb.mark_retransmitted(0, 1000)
        assert sb.pipe(8000) == 3000

    def test_cumulative_ack_and_clear(self) -> None:
        """RFC 6675 §5: a cumulative ACK prunes the scoreboard; clear() forgets everything."""
        sb = Scoreboard(MSS)
        sb.update([(2000, 4000)], 0, 8000)
        sb.advance(3000)
        assert sb.sacked == [(3000, 4000)] and sb.sacked_bytes == 1000
        sb.clear()
        assert sb.sacked == [] and sb.high_rxt == sb.una == 3000

    def test_after_timeout_only_retransmissions_are_forgotten(self) -> None:
        """RFC 6675 §5.1: after a timeout the SACKed ranges are kept (so go-back-N skips them);
        HighRxt and the retransmitted ranges start over."""
        sb = Scoreboard(MSS)
        sb.update([(2000, 4000)], 0, 8000)
        sb.mark_retransmitted(0, 1000)
        sb.after_timeout()
        assert sb.sacked == [(2000, 4000)] and sb.rexmit == [] and sb.high_rxt == 0
        assert sb.sacked_range_at(2500) == (2000, 4000)
        assert sb.sacked_range_at(1500) is None


def _transfer(features: dict[str, object], *, drop: float, seed: int, size: int = 1_000_000) -> tuple[bool, int, int]:
    """Send *size* bytes from 10.0.0.1 to 10.0.0.2 with *drop* loss on the data direction;
    return (delivered intact, retransmitted bytes, SACK recoveries)."""
    sim = Simulation()
    fault = {"seed": seed, "drop": drop, "direction": "out"}
    a = make_stack("10.0.0.1/24", fault=fault, features=features, recv_buffer=1 << 20)
    b = make_stack("10.0.0.2/24", features=features, recv_buffer=1 << 20)
    sim.wire(a, b, delay=0.01, bandwidth=10e6)
    ta, tb = tcp_layer(a), tcp_layer(b)
    listener = tb.listen(80)
    conn = ta.connect(bytes([10, 0, 0, 2]), 80, now=0.0)
    sim.run(condition=lambda: bool(listener.accept_queue), until=10.0)
    server = listener.accept()
    assert server is not None
    payload = data(size)
    got = bytearray()
    sent = 0
    recoveries = 0

    def progress() -> bool:
        nonlocal sent, recoveries
        if sent < size:
            n = conn.send(payload[sent : sent + 200_000], sim.now)
            if n:
                sent += n
                ta.touch(conn)
        chunk = server.read()
        if chunk:
            got.extend(chunk)
            tb.touch(server)
        recoveries += conn.sack_recovery
        return len(got) == size

    sim.run(condition=progress, until=300.0)
    return bytes(got) == payload, conn.retransmitted_bytes, recoveries


class TestSackRecovery:
    def test_transfer_with_sack_is_intact(self) -> None:
        """RFC 6675 §5: with 3% loss every byte arrives once, in order, and SACK recovery ran."""
        ok, _, recoveries = _transfer({"sack": {}, "timestamps": {}, "window_scaling": {}}, drop=0.03, seed=7)
        assert ok
        assert recoveries > 0

    def test_sack_retransmits_fewer_bytes_than_newreno(self) -> None:
        """RFC 6675 §1: retransmitting only the holes costs fewer retransmitted bytes than NewReno's
        go-back-N after timeouts, for the same losses (5%, same seeds)."""
        with_sack = without = 0
        for seed in (1, 2, 3):
            ok1, r1, _ = _transfer({"sack": {}, "timestamps": {}, "window_scaling": {}}, drop=0.05, seed=seed)
            ok2, r2, _ = _transfer({"timestamps": {}, "window_scaling": {}}, drop=0.05, seed=seed)
            assert ok1 and ok2
            with_sack += r1
            without += r2
        assert with_sack < without


class TestRenegingAndLimitedTransmit:
    def test_left_edge_is_resent_after_a_timeout_even_if_sacked(self) -> None:
        """RFC 2018 §8: after a timeout the segment at the left edge is retransmitted whether or not it was
        SACKed (the receiver may have reneged), so a reneging receiver cannot stall the connection."""
        from dataclasses import replace

        from layers.tcp.wire import SYN
        from tests.layers.tcp.helpers import LOCAL_SEQ, REMOTE_SEQ, SEND, established, recv, run_until, send

        conn = established(send_buffer=10_000, peer_mss=100, peer_window=10_000)
        from layers.tcp.scoreboard import Scoreboard

        conn.scoreboard = Scoreboard(conn.snd_mss)  # as if SACK had been negotiated
        conn.send(bytes(300), 0.0)
        recv(conn, t=0.0)
        l1, r1 = LOCAL_SEQ + 1, REMOTE_SEQ + 1
        # The peer SACKs everything sent, but its cumulative ACK stays at the left edge (reneging).
        send(conn, t=0.1, seg=replace(SEND, seq=r1, ack=l1, window=10_000, sack=[(l1, l1 + 300)]))
        sent = run_until(conn, 5.0)
        assert any(seg.seq == l1 and seg.payload for _, seg in sent), [str(s) for _, s in sent]
        assert not any(seg.flags & SYN for _, seg in sent)


class TestRescueRetransmission:
    def test_tail_above_the_highest_sack_is_rescued_once_per_recovery(self) -> None:
        """RFC 6675 §4 NextSeg rule (4): when no hole and no new data may go, the segment with the highest
        unSACKed byte is retransmitted once per recovery, instead of waiting for the RTO."""
        from dataclasses import replace

        from layers.tcp.scoreboard import Scoreboard
        from tests.layers.tcp.helpers import LOCAL_SEQ, REMOTE_SEQ, SEND, established, recv, send

        conn = established(send_buffer=10_000, peer_mss=100, peer_window=10_000)
        conn.scoreboard = Scoreboard(conn.snd_mss)
        conn.cc.cwnd = 1000
        conn.send(bytes(1000), 0.0)
        assert len(recv(conn, t=0.0)) == 10
        l1, r1 = LOCAL_SEQ + 1, REMOTE_SEQ + 1
        out = []
        for right in (l1 + 500, l1 + 600, l1 + 700):  # segments 2-7 SACKed, 8-10 not; three duplicate ACKs
            send(conn, t=0.1, seg=replace(SEND, seq=r1, ack=l1, window=10_000, sack=[(l1 + 100, right)]))
            out += recv(conn, t=0.1)
        assert conn.sack_recovery
        resent = [(s.seq - l1, len(s.payload)) for s in out if s.payload]
        assert (0, 100) in resent  # the lost hole below the SACKed data
        assert (900, 100) in resent  # the rescue: the last segment, above the highest SACK
        send(conn, t=0.2, seg=replace(SEND, seq=r1, ack=l1, window=10_000, sack=[(l1 + 100, l1 + 800)]))
        assert all(s.seq - l1 != 900 for s in recv(conn, t=0.2) if s.payload)  # only once
