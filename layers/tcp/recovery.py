"""Loss recovery of one connection: the ACK's fifth step for synchronized states (RFC 9293
§3.10.7.4), RTT samples (RFC 6298 §3), the retransmission timer and its backoff (RFC 6298
§5), NewReno fast retransmit and recovery (RFC 5681 §3.2, RFC 6582), SACK-based recovery
(RFC 6675), undoing a spurious recovery (RFC 3522, RFC 3708, RFC 4015), and the hook for a
loss detector (``conn.loss_detector``, a :class:`~layers.tcp.policy.LossDetector`, e.g.
RACK-TLP from plugins/rack_tlp.py). aioquic's ``QuicPacketRecovery`` is the model: what was
sent, what the ACKs say about it, and what to send again.

Mechanism: functions taking the connection (``process_ack(conn, seg, now)``). The recovery
state (``in_recovery``, ``recover``, ``dup_acks``, ``scoreboard``, ...) stays attributes of the
connection, which the ACK path reads and writes on every segment: a helper object would add
an attribute load to each access, a function call costs what the method call did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from layers.tcp import sender
from layers.tcp.events import ConnectionFailed, SendSpaceAvailable
from layers.tcp.seq import MASK, seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt
from layers.tcp.state import TcpState, Trigger
from layers.tcp.wire import FIN, RST, SYN, TcpRepr

if TYPE_CHECKING:
    from layers.tcp.connection import TcpConnection

S = TcpState
DUPACK_THRESHOLD = 3  # RFC 5681 §3.2
# R2 for data (RFC 9293 §3.8.3) is time *and* attempts: with the RTO backed off to its 60 s cap,
# 100 s alone may allow only two retransmissions, so a lossy but live path would be given up.
# RFC 1122 §4.2.3.5 lets R2 be a count or a time; Linux uses a count (tcp_retries2 = 15).
MIN_DATA_RETRIES = 8


def process_ack(conn: TcpConnection, seg: TcpRepr, now: float) -> bool:
    """The fifth step for synchronized states; returns False if the segment is dropped."""
    ack = seg.ack
    una = conn.snd_una
    # RFC 5961 §5.2 (MAY-12): acceptable ACKs lie in [SND.UNA - MAX.SND.WND, SND.NXT].
    if seq_gt(ack, conn.snd_max):
        conn._ack_now = True  # §3.10.7.4: ACK of something not yet sent: ACK and drop
        return False
    if seq_lt(ack, seq_add(una, -max(conn.max_snd_wnd, 1))):
        conn._ack_now = True
        return False
    acked = seq_diff(ack, una)
    seq = seg.seq
    window = seg.window << conn.snd_wscale
    newly_sacked = 0
    blocks: list[tuple[int, int]] = []
    sb = conn.scoreboard
    if sb is not None and seg.sack:
        # RFC 6675 §5: every ACK carrying SACK information updates the scoreboard first.
        base = sb.una
        blocks = [(base + seq_diff(left, una), base + seq_diff(right, una)) for left, right in seg.sack]
        newly_sacked = sb.update(blocks, max(acked, 0), base + seq_diff(conn.snd_max, una))
    if acked > 0:
        if conn._undo is not None and conn.in_recovery and conn._undo_rexmit_at is not None and seg.ts:
            eifel(conn, seg.ts[1], ack, now)
        ack_advanced(conn, ack, acked, now)
        if conn.loss_detector is not None:
            conn.loss_detector.on_progress(conn, now)  # RFC 8985 §7.2: an ACK of new data restarts the PTO
    elif acked == 0:
        if newly_sacked and conn.snd_una != conn.snd_max:
            # RFC 6675 §2/§5: an ACK that SACKs new data counts as a duplicate, even when
            # it carries data (a bidirectional transfer) or a new window.
            conn.dup_acks += 1
            conn._lt_credits += 1  # RFC 3042 §2: with SACK, only ACKs with new SACK info
            sack_loss_check(conn, now)
        elif not len(seg.payload) and not seg.flags & (SYN | FIN):
            maybe_dupack(conn, window, now)
    if sb is not None and seg.sack and seq_le(seg.sack[0][1], ack):
        dsack(conn, seg.sack[0], now)
    ld = conn.loss_detector
    if ld is not None and sb is not None and (acked > 0 or newly_sacked or seg.sack):
        ld.on_ack_received(conn, sb.una, blocks if seg.sack else [], now)  # RFC 8985 §6.2
    update_window(conn, seq, ack, window)
    return True


def update_window(conn: TcpConnection, seq: int, ack: int, window: int) -> None:
    """RFC 9293 §3.10.7.4 (S6): update the send window only from a newer segment (*window*
    already scaled). Shared with the fast path (layers/tcp/fastpath.py)."""
    if seq_lt(conn.snd_wl1, seq) or (conn.snd_wl1 == seq and seq_le(conn.snd_wl2, ack)):
        if window != conn.snd_wnd:
            opened = window > conn.snd_wnd
            conn.snd_wnd = window
            if opened:
                conn._persist_backoff = 0
        if window > conn.max_snd_wnd:
            conn.max_snd_wnd = window
        conn.snd_wl1 = seq
        conn.snd_wl2 = ack


def ack_advanced(conn: TcpConnection, ack: int, acked: int, now: float) -> None:
    """New data acknowledged: move SND.UNA, free the buffer, sample RTT, grow cwnd."""
    conn.dup_acks = 0
    conn._lt_credits = 0
    in_flight_before = seq_diff(conn.snd_max, conn.snd_una)
    data_acked = acked
    if not conn._syn_acked:  # the SYN's sequence number (simultaneous open)
        conn._syn_acked = True
        data_acked -= 1
    fin_acked = False
    # RFC 9293 §3.10.7.4 "Fifth": an ACK beyond our FIN acknowledges it, even while a
    # go-back-N resend after an RTO has not re-sent it yet (_fin_sent is then False).
    if conn._fin_seq_known and seq_gt(ack, conn._fin_seq):
        fin_acked = True
        conn._fin_sent = True
        data_acked -= 1
    if data_acked > 0:
        last = conn._last_ack
        if now != last and last - conn._rate_t0 >= conn._rate_span:
            rate_sample(conn)  # the ACKs up to the last batch span an SRTT: at most once per SRTT
        conn.sndbuf.consume(data_acked)
        conn.bytes_sent += data_acked
        conn.events.append(SendSpaceAvailable())
    conn._last_ack = now
    conn.snd_una = ack
    if conn.scoreboard is not None:
        conn.scoreboard.advance(acked)
    if seq_lt(conn.snd_nxt, ack):
        conn.snd_nxt = ack  # go-back-N resend overtaken by an ACK of earlier data
    # RFC 6298 §3 (Karn): sample only a segment that was not retransmitted.
    if conn._rtt_seq is not None and seq_ge(ack, conn._rtt_seq):
        conn.rtt.sample(now - conn._rtt_time)
        conn._rtt_seq = None
    if conn._after_rto and seq_gt(ack, conn.recover):
        conn._after_rto = False  # RFC 6675 §5.1: HighACK reached the RecoveryPoint of the RTO
    # Congestion control (RFC 5681 §3, RFC 6582 §3.2).
    if conn.in_recovery:
        if seq_gt(ack, conn.recover):
            conn.in_recovery = False
            # RFC 6582 §3.2 step 3 option (1), also after SACK recovery: cwnd = min(ssthresh,
            # FlightSize + SMSS); below ssthresh, slow start brings it back within a round.
            # (Keeping cwnd = ssthresh, as RFC 6937 §3 does, measured slower here: bench/netsim
            # and the simulator at 1-10% loss, with more timeouts.)
            conn.cc.on_recovery_end(seq_diff(conn.snd_max, ack))
            if conn.sack_recovery:
                conn.sack_recovery = False
                if conn._undo is not None and not conn._undo_retrans:
                    # RFC 4015 §3.2 (Linux's tcp_try_undo_recovery): a recovery that ends
                    # without having retransmitted anything found no loss (the hole filled
                    # by itself, the segment was only reordered).
                    undo_recovery(conn, now, "no retransmission was needed", "RFC 4015 §3.2")
        elif not conn.sack_recovery:
            conn.cc.on_partial_ack(acked)
            retransmit_head(conn, now)  # RFC 6582 §3.2 step 5: the next hole
        # (in SACK recovery the pipe and NextSeg() decide what goes next, RFC 6675 §5)
    else:
        if sender.cwnd_in_use(conn):
            cc = conn.cc
            # With segmentation offload the kernel ACKs a whole super-segment at once: count it
            # as the ACK every two segments the wire would have carried (RFC 3465's L = 2), so
            # slow start still doubles per round (one stretch ACK would grow cwnd by 2 SMSS).
            step = 2 * conn.snd_mss if conn.tso_max else acked
            left = acked
            while left > 0:
                part = min(left, step)
                left -= part
                credit = part
                if conn.slow_start is not None and cc.cwnd < cc.ssthresh:
                    # RFC 9406 §4.2: HyStart++ decides how much slow start may grow, and when it ends.
                    credit = conn.slow_start.credit(cc, conn.rtt, part, ack, conn.snd_max, now)
                if credit:
                    cc.on_ack(credit, in_flight_before, now, conn.rtt.srtt)
        if seq_gt(ack, conn.recover):
            # Keep "recover" just behind SND.UNA so half-space comparisons stay valid
            # over any amount of data (RFC 6582 §3.2 step 2 compares against it).
            conn.recover = seq_add(ack, -1)
    # RFC 6298 (5.2)/(5.3): stop the timer when all is acked, else restart it.
    conn._rto_count = 0
    if conn.snd_una == conn.snd_max:
        conn.timers.rto = None
        conn.timers.stall_since = None
    else:
        conn.timers.rto = now + conn.rtt.current()
        conn.timers.stall_since = now
    conn.timers.persist = None
    if fin_acked:
        conn._our_fin_acked(now)


def rate_sample(conn: TcpConnection) -> None:
    """A delivery-rate sample for ``tcpstack ss`` (docs/cli.md, "ss"): the data acknowledged from the
    start of the interval (the last sample, or the first transmission with nothing in flight:
    :func:`layers.tcp.sender.send_data`) to the last batch of ACKs, over that time, once it spans a
    smoothed RTT. Taken when the next batch begins, so every ACK read at one time (a batch of
    frames) is in it, and none is left for an interval of zero length. A simpler estimate than
    draft-cheng-iccrg-delivery-rate-estimation-02 (Linux's tcp_rate.c), which times every packet
    from its transmission: here an ACK costs two comparisons, the rest runs once per round trip.
    As there (Linux's tcp_rate_gen and tcp_rate_check_app_limited), a sample taken while the
    application left cwnd unused (app-limited: the last transmission sent everything queued, and
    the flight is below cwnd) replaces the estimate only if it is higher."""
    end = conn._last_ack
    interval = end - conn._rate_t0
    if interval > 0:
        rate = (conn.bytes_sent - conn._rate_mark) / interval
        app_limited = conn._sent_all and seq_diff(conn.snd_max, conn.snd_una) < conn.cc.cwnd
        if not app_limited or rate >= conn.delivery_rate:
            conn.delivery_rate = rate
            conn.rate_app_limited = app_limited
    conn._rate_t0 = end
    conn._rate_mark = conn.bytes_sent
    srtt = conn.rtt.srtt
    conn._rate_span = srtt if srtt is not None else 0.0


def maybe_dupack(conn: TcpConnection, window: int, now: float) -> None:
    """RFC 5681 §2: a duplicate ACK acks nothing new, carries no data or SYN/FIN,
    leaves the window unchanged, and arrives while data is outstanding."""
    if conn.snd_una == conn.snd_max or window != conn.snd_wnd or conn.snd_wnd == 0:
        return  # (answers to zero-window probes are not duplicate ACKs)
    if conn.scoreboard is not None:
        # RFC 6675 §2: with SACK, a duplicate ACK is one that SACKs new data (counted in
        # _process_ack). An ACK repeating the last one says nothing about loss: the network
        # may have duplicated it, and three of them must not start a recovery (and cut cwnd).
        return
    conn.dup_acks += 1
    conn._lt_credits += 1
    if conn.in_recovery:
        conn.cc.on_dup_ack_in_recovery()  # RFC 5681 §3.2 step 4
        return
    if conn.dup_acks == DUPACK_THRESHOLD and seq_gt(conn.snd_una, conn.recover):
        # RFC 5681 §3.2 steps 2-3, RFC 6582 §3.2 step 2: enter fast recovery.
        conn.in_recovery = True
        conn.recoveries += 1
        # RFC 6582 §3.2 step 2: recover = the highest sequence number transmitted (SND.MAX
        # - 1), so that the ACK of everything sent (SND.MAX) is a full ACK (step 3).
        conn.recover = seq_add(conn.snd_max, -1)
        conn.cc.on_loss(seq_diff(conn.snd_max, conn.snd_una), now)
        conn._log.debug("tcp.fast_retransmit", una=conn.snd_una, cwnd=conn.cc.cwnd, ssthresh=conn.cc.ssthresh)
        retransmit_head(conn, now)


def sack_loss_check(conn: TcpConnection, now: float) -> None:
    """RFC 6675 §5 steps (a)-(b): enter loss recovery on the DupThresh-th duplicate ACK, or
    as soon as IsLost(HighACK + 1) holds, if the cumulative ACK is past ``recover``."""
    sb = conn.scoreboard
    if sb is None or conn.in_recovery or not seq_gt(conn.snd_una, conn.recover):
        return
    if conn.dup_acks < DUPACK_THRESHOLD and not sb.is_lost(sb.una):
        return
    enter_sack_recovery(conn, now)


def enter_sack_recovery(conn: TcpConnection, now: float) -> None:
    sb = conn.scoreboard
    if sb is None:
        return
    # RFC 6675 §5 (4.1)-(4.2): RecoveryPoint = HighData; ssthresh = cwnd = FlightSize / 2
    # (through the congestion controller, so CUBIC's beta applies); no window inflation:
    # the pipe estimate does the accounting.
    conn.in_recovery = True
    conn.sack_recovery = True
    conn.recoveries += 1
    conn._rescue_done = False
    conn._recovery_head_due = True
    if conn.loss_detector is not None:
        conn.loss_detector.on_recovery()  # RFC 8985 §6.2 step 4, and §7.2: no probes during recovery
    conn._tlp_due = False  # RFC 8985 §7.2: a probe asked for in this timer run yields to recovery's retransmissions
    conn.recover = seq_add(conn.snd_max, -1)
    # Remembered for undoing a spurious recovery (RFC 3522 §2, RFC 3708 §3; RFC 4015 §3.2
    # restores the window): what cwnd and ssthresh were, and the retransmissions to come.
    conn._undo = (conn.cc.cwnd, conn.cc.ssthresh)
    conn._undo_from, conn._undo_to = conn.snd_una, conn.snd_max
    conn._undo_rexmit_at = None
    conn._undo_retrans = 0
    conn.cc.on_loss(seq_diff(conn.snd_max, conn.snd_una), now)
    conn.cc.cwnd = max(conn.cc.ssthresh, conn.snd_mss)
    sb.high_rxt = sb.una
    conn._rtt_seq = None  # Karn: what follows includes retransmissions
    conn._log.debug("tcp.sack_recovery", una=conn.snd_una, cwnd=conn.cc.cwnd, sacked=sb.sacked_bytes)


def dsack(conn: TcpConnection, block: tuple[int, int], now: float) -> None:
    """A D-SACK block (RFC 2883 §4) below the cumulative ACK. RFC 3708 §2: it shows a spurious
    retransmission only if we retransmitted that much; a network duplicate of an original
    (RFC 2883 §4.1.2) says nothing about reordering (Linux ignores dsack_dups > total_retrans)."""
    left, right = block
    dups = max(1, -(-seq_diff(right, left) // conn.snd_mss))
    conn._dsack_segs += dups
    if conn._dsack_segs > conn.retransmits:
        return
    if conn.loss_detector is not None:
        conn.loss_detector.on_dsack()  # RFC 8985 §6.2 step 4: widen the reordering window
    in_recovery_range = seq_ge(left, conn._undo_from) and seq_le(right, conn._undo_to)
    if conn._undo is not None and conn._undo_retrans and in_recovery_range:
        # RFC 3708 §3: every retransmission of the recovery reported as a duplicate means
        # none was needed: undo it.
        conn._undo_retrans = max(0, conn._undo_retrans - dups)
        if not conn._undo_retrans:
            undo_recovery(conn, now, "D-SACK", "RFC 3708 §3")


def eifel(conn: TcpConnection, tsecr: int, ack: int, now: float) -> None:
    """RFC 3522 §2 (Eifel detection): an ACK that covers every retransmission of this recovery
    but echoes a timestamp older than the first of them was sent for the originals: the
    recovery was spurious (reordering taken for loss)."""
    sb, tsval_at = conn.scoreboard, conn.tsval_at
    if sb is None or tsval_at is None or conn._undo_rexmit_at is None:
        return
    if sb.una + seq_diff(ack, conn.snd_una) < sb.high_rxt:
        return  # a retransmission above this ACK may still have been needed
    age = (tsval_at(conn._undo_rexmit_at) - tsecr) & MASK
    if 0 < age < 1 << 31:
        undo_recovery(conn, now, "timestamp echo older than the retransmission", "RFC 3522 §2")


def undo_recovery(conn: TcpConnection, now: float, reason: str, rfc: str) -> None:
    """Undo a spurious fast recovery (RFC 4015 §3.2, as Linux's tcp_undo_cwnd_reduction):
    cwnd and ssthresh return to what they were before it; the recovery ends."""
    if conn._undo is None:
        return
    cwnd, ssthresh = conn._undo
    conn._undo = None
    cc = conn.cc
    cc.cwnd = max(cc.cwnd, cwnd)
    cc.ssthresh = max(cc.ssthresh, ssthresh)
    conn.spurious_recoveries += 1
    if conn.in_recovery:
        conn.in_recovery = conn.sack_recovery = False
        conn._recovery_head_due = False
    # RFC 4015 §3.2 restores the state from before the spurious recovery, and with it RFC 6675
    # §5 (a)'s "recover" (as Linux, whose undo returns to the Open state): a loss in the same
    # window is then a first loss and starts a recovery, instead of waiting for the RTO.
    if seq_lt(conn.snd_una, conn.recover):
        conn.recover = seq_add(conn.snd_una, -1)
    cc.log.debug("tcp.decision", decision="recovery undone", reason=reason, rfc=rfc, cwnd=cc.cwnd, t=now)


def on_rto(conn: TcpConnection, now: float) -> None:
    """RFC 6298 (5.4)-(5.6), RFC 5681 §3.1: retransmit the earliest unacked segment."""
    conn.timers.rto = None
    syn_phase = conn.state in (S.SYN_SENT, S.SYN_RECEIVED)
    limit = conn.options.syn_retries_timeout if syn_phase else conn.options.retries_timeout
    ut = conn.options.user_timeout
    if ut is not None:
        limit = min(limit, ut)
    started = conn.timers.stall_since if conn.timers.stall_since is not None else now
    user_expired = ut is not None and now >= started + ut
    r2_expired = now >= started + limit and (syn_phase or conn._rto_count >= MIN_DATA_RETRIES)
    if user_expired or r2_expired:  # the same sum as _rto_deadline(), so it fires exactly then
        # MUST-20/21 (R2): give up and tell the user.
        conn.failure = "timeout"
        conn.events.append(ConnectionFailed("timeout", "retransmission timeout"))
        if conn.state is not S.SYN_SENT:
            conn._rst_out.append(conn._segment(conn.snd_max, 0, RST))
        conn._set_state(Trigger.TIMEOUT, now)
        return
    conn.rtt.back_off()
    conn._rto_count += 1
    conn._log.debug("tcp.rto", una=conn.snd_una, rto=conn.rtt.current(), count=conn._rto_count)
    conn._rtt_seq = None  # Karn
    if syn_phase:
        conn._syn_retransmitted = True
        conn._send_syn = True
        conn.retransmits += 1
        return
    flight = seq_diff(conn.snd_max, conn.snd_una)
    conn.timeouts += 1
    conn._undo = None  # a timeout is not undone (no F-RTO, RFC 5682)
    if conn.loss_detector is not None:
        conn.loss_detector.on_rto()  # its reorder and probe timers stop
    conn._tlp_due = False
    conn.cc.on_timeout(flight, now)
    conn.in_recovery = False
    conn.sack_recovery = False
    conn._recovery_head_due = False
    if conn.scoreboard is not None:
        # RFC 6675 §5.1 lets the sender keep SACK information after a timeout (RFC 2018 §8
        # "SHOULD" clear it, against reneging receivers; Linux keeps it, and so do we: the
        # go-back-N resend below skips what the receiver holds, instead of sending it all).
        conn.scoreboard.after_timeout()
    conn.recover = seq_add(conn.snd_max, -1)  # RFC 6582 §4: the highest sequence number sent
    conn.dup_acks = 0
    conn._lt_credits = 0
    conn.snd_nxt = conn.snd_una  # go back N; cwnd = 1 SMSS sends one segment (RFC 5681 §3.1)
    conn._after_rto = True
    if conn._fin_sent and seq_le(conn.snd_una, conn._fin_seq):
        conn._fin_sent = False  # the FIN is resent with the data path
    conn._rexmit_until = conn.snd_max


def retransmit_last(
    conn: TcpConnection, out: list[TcpRepr], now: float, una: int, base: int, buffered: int, floor: int = 0
) -> None:
    """RFC 8985 §7.3: send the highest-sequence segment again as the probe; when our FIN is the
    last thing sent and still unacknowledged, the probe carries it (alone, if all data is
    acknowledged), so a lost FIN is found by the probe's ACK, not by the RTO (as Linux). The
    segment starts at offset *floor* at the lowest (RFC 6675's rescue: above SACKed data)."""
    end_off = seq_diff(conn.snd_max, base)
    fin_out = conn._fin_sent and seq_ge(conn._fin_seq, base)
    if fin_out:
        end_off = min(end_off, seq_diff(conn._fin_seq, base))
    end_off = min(end_off, buffered)
    start_off = max(end_off - conn.snd_mss, seq_diff(una, base), 0, floor)
    if end_off <= start_off:
        if fin_out and seq_diff(conn._fin_seq, base) == end_off:
            out.append(sender.fin_segment(conn, conn._fin_seq, now, retransmit=True))
        return
    seq = seq_add(base, start_off)
    seg = sender.data_segment(conn, seq, conn.sndbuf.view(start_off, end_off - start_off), now, retransmit=True)
    if fin_out and seq_diff(conn._fin_seq, base) == end_off:
        seg.flags |= FIN
    out.append(seg)


def sack_retransmit(conn: TcpConnection, out: list[TcpRepr], now: float, una: int, base: int, buffered: int) -> int:
    """RFC 6675 §5 (C): while cwnd - pipe >= 1 SMSS, send what NextSeg() names: rule (1)
    lost holes first; rule (2), new data, is the caller's loop; rule (3), holes not yet
    deemed lost, only when no new data can go. Returns the pipe for the caller's loop."""
    sb = conn.scoreboard
    if sb is None:
        return -1
    mss = conn.snd_mss
    max_pos = sb.una + seq_diff(conn.snd_max, una)
    pipe = sb.pipe(max_pos)
    unsent = buffered - seq_diff(conn.snd_nxt, base)
    window_closed = seq_diff(seq_add(una, conn.snd_wnd), conn.snd_nxt) <= 0
    passed = sb.una  # the end of the highest range this pass retransmitted (a position)
    if conn._recovery_head_due:
        # RFC 6675 §5 (4.3): on entering recovery, retransmit the first segment presumed
        # lost (at HighACK + 1) at once, whatever the pipe says; with a small window the
        # pipe may stay above cwnd until the retransmission timer fires otherwise.
        conn._recovery_head_due = False
        head = sb.next_hole(max_pos, lost_only=False) or (sb.una, sb.una + mss)
        sent = sack_resend(conn, out, now, head, una, base, buffered)
        pipe += sent
        if sent:
            passed = head[0] + sent
    for lost_only in (True, False):
        if not lost_only and unsent > 0 and not window_closed:
            return pipe  # rule (2) applies: new data goes before unproven holes
        while conn.cc.cwnd - pipe >= mss:
            hole = sb.next_hole(max_pos, lost_only=lost_only)
            if hole is None:
                break
            sent = sack_resend(conn, out, now, hole, una, base, buffered)
            if not sent:
                break  # a SYN or FIN position: the retransmission timer covers it
            pipe += sent
            if hole[0] + sent > passed:
                passed = hole[0] + sent
    # Rule (4), the rescue retransmission: once per recovery, when nothing else may go, the
    # segment holding the highest unSACKed byte, so a lost tail is not left to the RTO.
    if not conn._rescue_done and conn.cc.cwnd - pipe >= mss and conn.snd_max != una:
        top = sb.una + seq_diff(conn.snd_max, una)
        # RFC 6675 §4 NextSeg (4) / §5 (C.1): the segment includes the highest unSACKed sequence
        # number and starts above what the receiver SACKed and what this pass just retransmitted
        # (the (4.3) head, rules (1) and (3)): a segment goes at most once per pass.
        floor = max(sb.highest_sacked, passed)
        if floor < top:
            before = len(out)
            retransmit_last(conn, out, now, una, base, buffered, floor - sb.una + seq_diff(una, base))
            if len(out) > before:
                conn._rescue_done = True  # RFC 6675 §4 NextSeg (4): once per recovery (RescueRxt)
                seg = out[-1]
                pos = sb.una + seq_diff(seg.seq, una)
                # RFC 6675 §4 NextSeg (4): in the pipe, but "HighRxt MUST NOT be updated".
                sb.mark_retransmitted(pos, pos + len(seg.payload), False)
                pipe += len(seg.payload)
    return pipe


def resend_lost_after_rto(
    conn: TcpConnection, out: list[TcpRepr], now: float, una: int, base: int, buffered: int
) -> None:
    """RFC 8985 §6.3 (and §6.2 step 5): after a retransmission timeout RACK keeps judging each
    segment by its latest send time, so a go-back-N retransmission that is lost again is found
    once a later one is delivered, and is sent again now (at most cwnd of them per call)
    instead of waiting for the next, backed-off RTO (as Linux leaves its Loss state on a lost
    retransmission, RFC 6675 §5.1 using the SACK information after the timeout)."""
    sb = conn.scoreboard
    assert sb is not None
    mss = conn.snd_mss
    top = sb.una + seq_diff(conn.snd_nxt, una)  # what the go-back-N resend has reached
    budget = conn.cc.cwnd
    while sb.lost and budget > 0:
        start, end = sb.lost.first()
        if start >= top:
            break  # not resent yet: the go-back-N resend comes to it in order
        held = sb.sacked_range_at(start)
        if held is not None:
            sb.unmark_lost(start, held[1])  # the receiver has it after all
            continue
        stop = min(end, top, start + mss)
        upto = sb.next_sacked_start(start)
        if upto is not None:
            stop = min(stop, upto)
        seq = seq_add(una, start - sb.una)
        off = seq_diff(seq, base)
        if off < 0 or off >= buffered:
            break  # a SYN or FIN position: the retransmission timer covers it
        size = min(stop - start, buffered - off)
        out.append(sender.data_segment(conn, seq, conn.sndbuf.view(off, size), now, retransmit=True))
        sb.unmark_lost(start, start + size)
        budget -= size


def sack_resend(
    conn: TcpConnection, out: list[TcpRepr], now: float, hole: tuple[int, int], una: int, base: int, buffered: int
) -> int:
    """Retransmit (at most one SMSS of) the scoreboard range *hole*; return the bytes sent."""
    sb = conn.scoreboard
    assert sb is not None
    start, end = hole
    seq = seq_add(una, start - sb.una)
    off = seq_diff(seq, base)
    if off < 0 or off >= buffered:
        return 0
    # RFC 6675 §4 NextSeg (1)/(3): a retransmission holds only data sent before (below HighData,
    # SND.MAX); what follows is new data, which the send loop sends once, in its turn (rule (2)).
    size = min(end - start, buffered - off, conn.snd_mss, seq_diff(conn.snd_max, seq))
    if size <= 0:
        return 0
    out.append(sender.data_segment(conn, seq, conn.sndbuf.view(off, size), now, retransmit=True))
    sb.mark_retransmitted(start, start + size)
    return size


def retransmit_head(conn: TcpConnection, now: float) -> None:
    """Queue one segment at SND.UNA for retransmission without rewinding SND.NXT."""
    conn._fast_rexmit = True


def syn_acked(conn: TcpConnection, now: float) -> None:
    """Our SYN (or SYN-ACK) was acknowledged: stop its timer, take the RTT sample unless it
    was retransmitted (Karn, RFC 6298 §3), and after a lost SYN apply RFC 6298 (5.7) and
    RFC 5681 §3.1 (the initial window is one segment)."""
    conn.timers.rto = None
    conn.timers.stall_since = None
    if conn._rtt_seq is not None and not conn._syn_retransmitted:
        conn.rtt.sample(now - conn._rtt_time)
    conn._rtt_seq = None
    if conn._syn_retransmitted:
        conn.rtt.reset_after_syn_timeout()  # RFC 6298 (5.7): only after a timeout
    if conn._syn_retransmitted or conn._synack_lost:
        conn.cc.cwnd = conn.snd_mss
