"""RFC 6675's rescue retransmission (§4 NextSeg rule (4), §5 (C.1)) beside the other retransmissions
of the same output pass, sans-IO with explicit time: one segment of at most SMSS holding the highest
outstanding unSACKed sequence number, at most once per recovery, never data this pass already
retransmitted (the head retransmission of §5 (4.3), rules (1) and (3)) nor data the receiver SACKed,
and not moving HighRxt."""

from __future__ import annotations

from dataclasses import replace

from layers.tcp.connection import TcpConnection
from layers.tcp.scoreboard import Scoreboard
from layers.tcp.wire import FIN, TcpRepr
from tests.layers.tcp.helpers import LOCAL_SEQ, MASK, REMOTE_SEQ, SEND, established, recv, send

L1, R1 = LOCAL_SEQ + 1, REMOTE_SEQ + 1  # our first data byte, the peer's


def _sack_conn() -> TcpConnection:
    conn = established(send_buffer=10_000, peer_mss=100, peer_window=10_000)
    conn.scoreboard = Scoreboard(conn.snd_mss)  # as if SACK had been negotiated
    conn.cc.cwnd = 1000
    return conn


def _ranges(out: list[TcpRepr]) -> list[tuple[int, int, bool]]:
    """(offset, length, FIN) of every segment in *out* that occupies sequence space."""
    return [((s.seq - L1) & MASK, len(s.payload), bool(s.flags & FIN)) for s in out if s.payload or s.flags & FIN]


def _overlaps(ranges: list[tuple[int, int, bool]]) -> list[tuple[tuple[int, int, bool], tuple[int, int, bool]]]:
    spans = [(off, off + n + fin, (off, n, fin)) for off, n, fin in ranges]
    return [(a[2], b[2]) for i, a in enumerate(spans) for b in spans[i + 1 :] if a[0] < b[1] and b[0] < a[1]]


def test_the_rescue_does_not_resend_the_head_retransmission_of_the_same_pass() -> None:
    """A loss detector (RACK, RFC 8985 §6.3) declares the only outstanding segment lost while nothing
    is SACKed: recovery retransmits it at once (RFC 6675 §5 (4.3)). That segment also holds the highest
    unSACKed byte, but it was just retransmitted: the rescue (§4 NextSeg (4)) must not send it again in
    the same pass; one frame goes out, not two copies of it."""
    conn = _sack_conn()
    conn.send(bytes(300), 0.0)
    assert len(recv(conn, t=0.0)) == 3
    send(conn, t=0.1, seg=replace(SEND, seq=R1, ack=L1 + 200, window=10_000))  # two of three delivered
    assert recv(conn, t=0.1) == []
    sb = conn.scoreboard
    assert sb is not None
    conn.mark_lost(sb.una, sb.una + 100)  # what RACK does (plugin-facing verbs), §6.2 step 5 ...
    conn.start_loss_recovery(0.1)  # ... and §6.3
    assert conn.sack_recovery
    out = recv(conn, t=0.1)
    assert _ranges(out) == [(200, 100, False)], _ranges(out)
    assert not conn._rescue_done  # not spent: a later pass may still rescue, once


def test_the_rescue_holds_only_unsacked_data_above_this_passes_retransmissions() -> None:
    """Segments [0,100) [100,200) [200,250), then the FIN alone. [0,100) is delivered, [200,250) SACKed,
    [100,200) and the FIN are lost. Recovery retransmits the hole [100,200); the rescue's segment must
    include the highest outstanding unSACKed sequence number (the FIN's) and nothing SACKed or just
    retransmitted: the FIN alone, not [150,250)+FIN over the hole's second half and the SACKed tail."""
    conn = _sack_conn()
    conn.send(bytes(250), 0.0)
    assert len(recv(conn, t=0.0)) == 3
    conn.close(0.0)
    assert _ranges(recv(conn, t=0.0)) == [(250, 0, True)]
    ack = replace(SEND, seq=R1, ack=L1 + 100, window=10_000, sack=[(L1 + 200, L1 + 250)])
    send(conn, t=0.1, seg=ack)
    recv(conn, t=0.1)
    sb = conn.scoreboard
    assert sb is not None
    conn.mark_lost(sb.una, sb.una + 100)
    conn.start_loss_recovery(0.1)
    conn.cc.cwnd = 1000  # room for the rescue beside the hole (whatever the controller chose)
    out = recv(conn, t=0.1)
    ranges = _ranges(out)
    assert _overlaps(ranges) == [], ranges
    assert ranges == [(100, 100, False), (250, 0, True)], ranges
    assert conn._rescue_done
    assert sb.high_rxt == sb.una + 100  # RFC 6675 §4 NextSeg (4): "HighRxt MUST NOT be updated"


def test_the_rescue_is_sent_once_per_recovery() -> None:
    """RFC 6675 §4 NextSeg (4): one rescue per recovery episode, in the first pass with room for it."""
    conn = _sack_conn()
    conn.send(bytes(1000), 0.0)
    assert len(recv(conn, t=0.0)) == 10
    out = []
    for right in (L1 + 500, L1 + 600, L1 + 700):  # 2-7 SACKed, 8-10 not: three duplicate ACKs
        send(conn, t=0.1, seg=replace(SEND, seq=R1, ack=L1, window=10_000, sack=[(L1 + 100, right)]))
        out += recv(conn, t=0.1)
    ranges = _ranges(out)
    assert _overlaps(ranges) == [], ranges
    assert (0, 100, False) in ranges and (900, 100, False) in ranges
    send(conn, t=0.2, seg=replace(SEND, seq=R1, ack=L1, window=10_000, sack=[(L1 + 100, L1 + 800)]))
    assert all(off != 900 for off, _, _ in _ranges(recv(conn, t=0.2)))


def test_a_probe_asked_for_in_the_same_timer_run_as_recovery_is_not_sent_beside_it() -> None:
    """The probe timeout and RACK's reorder timer fire in one timer run (the probe first, RFC 8985
    §7.3), and the reorder timer starts recovery (§6.3). Recovery's retransmissions replace the probe
    (§7.2: no probe during recovery): the pass must not also send the last segment as the probe,
    a second copy of the rescue."""
    conn = _sack_conn()
    conn.send(bytes(1000), 0.0)
    assert len(recv(conn, t=0.0)) == 10
    ack = replace(SEND, seq=R1, ack=L1, window=10_000, sack=[(L1 + 100, L1 + 300)])  # 2-3 SACKed
    send(conn, t=0.1, seg=ack)
    recv(conn, t=0.1)
    sb = conn.scoreboard
    assert sb is not None and not conn.in_recovery
    conn.request_tail_probe(0.2)  # the probe timeout (plugin-facing verbs, as plugins/rack_tlp.py) ...
    conn.mark_lost(sb.una, sb.una + 100)  # ... then the reorder timer, RFC 8985 §6.2 step 5 ...
    conn.start_loss_recovery(0.2)  # ... and §6.3
    conn.cc.cwnd = 1000
    out = recv(conn, t=0.2)
    ranges = _ranges(out)
    assert _overlaps(ranges) == [], ranges
    assert ranges == [(0, 100, False), (900, 100, False)], ranges  # the head, the rescue


def test_the_head_retransmission_ends_at_what_was_sent() -> None:
    """With nothing SACKed the head retransmission (RFC 6675 §5 (4.3)) is the segment at SND.UNA; when
    what is outstanding there is shorter than an SMSS and new data waits behind it, it must stop at
    SND.MAX: the bytes after it were never sent (not a retransmission) and the send loop sends them
    as new data in the same pass, so they went out twice."""
    conn = _sack_conn()
    conn.send(bytes(250), 0.0)
    assert len(recv(conn, t=0.0)) == 3  # [0,100) [100,200) [200,250)
    send(conn, t=0.1, seg=replace(SEND, seq=R1, ack=L1 + 200, window=10_000))
    assert recv(conn, t=0.1) == []
    sb = conn.scoreboard
    assert sb is not None
    conn.send(bytes(300), 0.1)  # new data, queued behind the short segment
    conn.mark_lost(sb.una, sb.una + 50)  # RACK, RFC 8985 §6.2 step 5 and §6.3
    conn.start_loss_recovery(0.1)
    out = recv(conn, t=0.1)
    ranges = _ranges(out)
    assert _overlaps(ranges) == [], ranges
    assert ranges[0] == (200, 50, False)  # the retransmission: only what was sent
    assert [s.rexmit for s in out if s.payload] == [True] + [False] * (len(ranges) - 1)
