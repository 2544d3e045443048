"""The sending side of one connection: what goes out and when (RFC 9293 §3.8.6.2.1, §3.9.1.2):
the send loop with sender SWS avoidance (RFC 1122 §4.2.3.4) and the Nagle call (the send
policy, RFC 896), super-segments for segmentation offload (TSO), limited transmit (RFC 3042),
congestion-window validation (RFC 7661), zero-window probing (RFC 9293 §3.8.6.1), our SYN and
our FIN. Retransmission choices (go-back-N after a timeout, SACK's NextSeg) come from
layers/tcp/recovery.py.

Mechanism: functions taking the connection (``send_data(conn, out, now)``), called from
:meth:`TcpConnection.segments_to_send`; the send state stays attributes of the connection
(see layers/tcp/recovery.py for why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from framework.checksum import BytesLike
from layers.tcp import recovery
from layers.tcp.builtin_hooks import Sack, Timestamps
from layers.tcp.seq import MASK, seq_add, seq_diff, seq_gt, seq_lt
from layers.tcp.state import TcpState
from layers.tcp.tcb import DEFAULT_MSS, MAX_WINDOW
from layers.tcp.wire import ACK, FIN, PSH, RST, SYN, TcpRepr

if TYPE_CHECKING:
    from layers.tcp.connection import TcpConnection

S = TcpState
_SEND_STATES = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK})


def send_data(conn: TcpConnection, out: list[TcpRepr], now: float) -> None:
    una = conn.snd_una
    buffered = len(conn.sndbuf)
    mss = conn.snd_mss
    # Offset in the send buffer of a sequence number (the SYN is not in the buffer).
    base = una if conn._syn_acked else seq_add(una, 1)

    if conn._fast_rexmit:
        conn._fast_rexmit = False
        size = min(mss, buffered)
        if size > 0:
            out.append(data_segment(conn, una, conn.sndbuf.view(0, size), now, retransmit=True))
        elif conn._fin_sent:
            out.append(fin_segment(conn, conn._fin_seq, now, retransmit=True))

    if buffered and una == conn.snd_max:
        # Nothing in flight: a delivery-rate interval starts with this transmission (an idle
        # period is no part of it; recovery.rate_sample). The one before ends with the ACK of
        # everything sent in it: from its first transmission to that ACK is at least a round trip.
        if conn._last_ack > conn._rate_t0 and conn.bytes_sent > conn._rate_mark:
            recovery.rate_sample(conn)
        conn._rate_t0 = now
        conn._rate_mark = conn.bytes_sent
        # RFC 5681 §4.1: restart from IW after an idle period longer than the RTO.
        if now - conn._last_send > conn.rtt.current():
            before = conn.cc.cwnd
            conn.cc.on_idle_restart()
            if conn.slow_start is not None:
                conn.slow_start.on_idle_restart(conn.cc, before)

    sb = conn.scoreboard
    if conn._after_rto and sb is not None and sb.lost and not conn.sack_recovery:
        recovery.resend_lost_after_rto(conn, out, now, una, base, buffered)
    pipe = recovery.sack_retransmit(conn, out, now, una, base, buffered) if conn.sack_recovery else -1
    # RFC 3042 (limited transmit): on each of the first two duplicate ACKs one new segment
    # may go beyond cwnd (cwnd itself unchanged), so a small window still gets the three
    # duplicate ACKs fast retransmit needs.
    tlp_extra = 0
    if conn._tlp_due:
        # RFC 8985 §7.3 (the loss detector asked for a probe, conn.request_tail_probe): the probe
        # is one new segment if any may go (beyond cwnd), else the last segment sent again.
        conn._tlp_due = False
        unsent_now = buffered - seq_diff(conn.snd_nxt, base)
        if unsent_now > 0 and seq_diff(seq_add(una, conn.snd_wnd), conn.snd_nxt) > 0:
            tlp_extra = mss
        elif unsent_now <= 0 and conn._fin_queued and not conn._fin_sent:
            pass  # RFC 8985 §7.3: our FIN, not sent yet, is the previously unsent segment: it goes below, alone
        else:
            recovery.retransmit_last(conn, out, now, una, base, buffered)
    credits = conn._lt_credits
    limited = min(credits, 2) * mss if credits and not conn.in_recovery and conn._rexmit_until is None else 0
    cwnd_blocked = False
    # With segmentation offload, one segment may carry up to tso_max less the headers (in
    # whole MSS units); the kernel cuts it into MSS-sized segments with copies of our header.
    # (Not for a tiny MSS: one write would become thousands of segments on the wire.)
    cap = max(mss, (conn.tso_max - 100) // mss * mss) if conn.tso_max and mss >= DEFAULT_MSS else mss

    while True:
        nxt = conn.snd_nxt
        off = seq_diff(nxt, base)
        unsent = buffered - off
        in_flight = seq_diff(nxt, una)
        wnd_room = seq_diff(seq_add(una, conn.snd_wnd), nxt)
        # RFC 6675 §5: in SACK recovery the pipe, not SND.NXT - SND.UNA, is what cwnd limits.
        room = min(wnd_room, conn.cc.cwnd + limited + tlp_extra - (pipe if pipe >= 0 else in_flight))
        if unsent <= 0:
            maybe_send_fin(conn, out, now, wnd_room)
            break
        if room <= 0:
            if conn.snd_wnd == 0 or wnd_room <= 0:
                zero_window(conn, out, now, off, in_flight)
            else:
                cwnd_blocked = True  # data waits for cwnd, not for the peer's window
            break
        size = min(cap, unsent, room)
        until = conn._rexmit_until
        retransmit = until is not None and seq_lt(nxt, until)
        if until is not None and retransmit and size > mss:
            # A go-back-N resend stops where the data sent before ends: what follows is new data
            # (RTT samples, ECN, RACK and the retransmission counts tell the two apart).
            size = min(size, seq_diff(until, nxt))
        if size > mss and size % mss:
            # A super-segment's short tail is a segment of its own on the wire: send it only
            # when a lone short segment could go (SWS avoidance and Nagle, RFC 1122 §4.2.3.4).
            tail = size % mss
            if retransmit or not (
                size == unsent and conn.send_policy.may_send_small(tail, in_flight + size - tail, now)
            ):
                size -= tail
        if retransmit and sb is not None and sb.sacked:
            # Go-back-N after a timeout: skip data the receiver SACKed (RFC 6675 §5.1),
            # and do not run into the next SACKed range.
            pos = sb.una + seq_diff(nxt, una)
            held = sb.sacked_range_at(pos) if nxt != una else None
            # RFC 2018 §8: the segment at the left edge is always resent after a timeout,
            # SACKed or not: a receiver that SACKed it may have reneged.
            if held is not None:
                conn.snd_nxt = seq_add(una, held[1] - sb.una)
                continue
            upto = sb.next_sacked_start(pos)
            if upto is not None:
                size = min(size, upto - pos)
        if size < mss and not retransmit:
            # Sender SWS avoidance (RFC 1122 §4.2.3.4, MUST-38): send a short segment
            # only if it holds all queued data (and the send policy, i.e. Nagle, agrees),
            # or it is at least half the largest window the peer offered, or the
            # override timer fired.
            all_fits = size == unsent
            half_window = size >= conn.max_snd_wnd // 2 and conn.max_snd_wnd > 0
            if not (
                (all_fits and conn.send_policy.may_send_small(size, in_flight, now))
                or half_window
                or conn._sws_override
            ):
                if conn.timers.sws is None and in_flight == 0:
                    # Nothing in flight will wake us: the override timer will (RFC 1122 §4.2.3.4).
                    conn.timers.sws = now + conn.options.sws_override
                # Less than a segment of cwnd left while more data waits: cwnd limits us.
                cwnd_blocked = room == size < min(mss, unsent) and room < wnd_room
                break
        conn._sws_override = False
        conn.timers.sws = None
        data = conn.sndbuf.view(off, size)
        seg = data_segment(conn, nxt, data, now, retransmit=retransmit)
        if retransmit and sb is not None and sb.lost:
            pos = sb.una + seq_diff(nxt, una)
            sb.unmark_lost(pos, pos + size)  # sent again: RACK judges the new transmission
        if size > mss:
            seg.gso_size = mss  # a super-segment (TSO)
            conn.segs_out += (size - 1) // mss  # counted in segments on the wire (one more below)
        if size == unsent:
            seg.flags |= PSH  # MUST-60/61: push the last segment of the queued data
        out.append(seg)
        conn.snd_nxt = seq_add(nxt, size)
        if seq_gt(conn.snd_nxt, conn.snd_max):
            conn.snd_max = conn.snd_nxt
        if conn._rexmit_until is not None and not seq_lt(conn.snd_nxt, conn._rexmit_until):
            conn._rexmit_until = None
        if pipe >= 0:
            pipe += size
        tlp_extra = 0  # the probe was this one segment
    cwnd_validate(conn, cwnd_blocked, pipe if pipe >= 0 else seq_diff(conn.snd_max, una))
    conn._sent_all = unsent <= 0  # nothing left queued: the application limits (recovery.rate_sample)


def cwnd_validate(conn: TcpConnection, blocked: bool, flight: int) -> None:
    """Remember, per window of data, whether cwnd limited the sender and the largest
    flight (RFC 7661 §4.2; Linux's tcp_cwnd_validate)."""
    if (
        blocked
        or not seq_lt(conn.snd_una, conn._cwnd_usage_seq)
        or (not conn._cwnd_limited and flight > conn._max_flight)
    ):
        conn._cwnd_limited = blocked
        conn._max_flight = flight
        conn._cwnd_usage_seq = conn.snd_max  # the end of what is out (go-back-N rewinds SND.NXT)


def cwnd_in_use(conn: TcpConnection) -> bool:
    """May this ACK grow cwnd? Not while the application or the peer's window, rather than
    cwnd, limits the flight (RFC 9438 §5.8; RFC 5681 §3.1 grows cwnd to use the path, an
    unused cwnd says nothing about it)."""
    cc = conn.cc
    if conn._cwnd_limited:
        return True
    # Slow start: also while the largest recent flight reached half of cwnd (Linux's rule).
    return cc.cwnd < cc.ssthresh and cc.cwnd < 2 * conn._max_flight


def data_segment(conn: TcpConnection, seq: int, data: BytesLike, now: float, *, retransmit: bool) -> TcpRepr:
    seg = conn._segment(seq, 0, ACK, data)
    seg.rexmit = retransmit
    conn._fill_ack(seg)
    note_sent(conn, seq, len(data), now, retransmit)
    return seg


def note_sent(conn: TcpConnection, seq: int, length: int, now: float, retransmit: bool) -> None:
    if retransmit:
        # Segments, also when a super-segment (TSO) carries several.
        conn.retransmits += -(-length // conn.snd_mss) if length > conn.snd_mss else 1
        conn.retransmitted_bytes += length
        conn._rtt_seq = None  # Karn: no sample across a retransmission
        if conn._undo is not None:
            conn._undo_retrans += 1
            if conn._undo_rexmit_at is None:
                conn._undo_rexmit_at = now
    elif conn._rtt_seq is None and not conn.ts_rtt:
        conn._rtt_seq = seq_add(seq, length)
        conn._rtt_time = now
    timers = conn.timers
    if timers.rto is None:  # RFC 6298 (5.1)
        timers.rto = now + conn.rtt.current()
    if timers.stall_since is None:
        timers.stall_since = now
    conn._last_send = now
    timers.persist = None
    ld, sb = conn.loss_detector, conn.scoreboard
    if ld is not None and sb is not None:
        end = seq_add(seq, length)
        if seq_gt(end, conn.snd_max):
            # RFC 8985 §7.2: the PTO's FlightSize includes the segment just sent (one segment
            # from idle arms 2*SRTT + WCDelAckT, two or more 2*SRTT): SND.MAX moves first.
            conn.snd_max = end
        pos = sb.una + seq_diff(seq, conn.snd_una)
        ld.on_transmit(conn, pos, pos + length, now, retransmit)  # RFC 8985 §6.1: record xmit time


def maybe_send_fin(conn: TcpConnection, out: list[TcpRepr], now: float, wnd_room: int) -> None:
    """Send our FIN once every queued byte is sent (RFC 9293 §3.6: it is retransmitted like data)."""
    if not conn._fin_queued or conn._fin_sent:
        return
    fin_seq = conn.snd_nxt
    retransmit = conn._rexmit_until is not None and seq_lt(fin_seq, conn._rexmit_until)
    if out and out[-1].seq + len(out[-1].payload) & MASK == fin_seq and not out[-1].flags & (SYN | RST):
        # Piggy-back the FIN on the last data segment.
        out[-1].flags |= FIN
    else:
        out.append(fin_segment(conn, fin_seq, now, retransmit=retransmit))
    conn._fin_sent = True
    conn._fin_seq = fin_seq
    conn._fin_seq_known = True
    conn.snd_nxt = seq_add(fin_seq, 1)
    if seq_gt(conn.snd_nxt, conn.snd_max):
        conn.snd_max = conn.snd_nxt
    conn._rexmit_until = None
    if conn.timers.rto is None:
        conn.timers.rto = now + conn.rtt.current()
    if conn.timers.stall_since is None:
        conn.timers.stall_since = now
    if not retransmit and conn.loss_detector is not None:
        conn.loss_detector.on_progress(conn, now)  # RFC 8985 §7.2: the FIN is new; a lost one is probed for


def fin_segment(conn: TcpConnection, seq: int, now: float, *, retransmit: bool) -> TcpRepr:
    seg = conn._segment(seq, 0, ACK | FIN)
    conn._fill_ack(seg)
    if retransmit:
        conn.retransmits += 1
    return seg


def zero_window(conn: TcpConnection, out: list[TcpRepr], now: float, off: int, in_flight: int) -> None:
    """Zero-window probing (RFC 9293 §3.8.6.1, MUST-35/36, RFC 1122 §4.2.2.17): with data
    waiting, nothing in flight and a closed window, probe after the RTO, backing off."""
    if in_flight > 0 and not conn._probe_due:
        return  # the retransmission timer covers outstanding data
    if conn._probe_due:
        conn._probe_due = False
        data = conn.sndbuf.view(off, 1)
        if data:
            seg = conn._segment(conn.snd_nxt, 0, ACK, data)
            seg.rexmit = True  # a window probe: never ECN-capable (RFC 3168 §6.1.6)
            conn._fill_ack(seg)
            out.append(seg)
            end = seq_add(conn.snd_nxt, 1)
            if seq_gt(end, conn.snd_max):
                conn.snd_max = end  # an ACK covering the probe byte stays acceptable
        conn._persist_backoff += 1
    if conn.timers.persist is None:
        interval = min(conn.rtt.rto * (1 << min(conn._persist_backoff, 16)), conn.options.max_rto)
        conn.timers.persist = now + interval
        conn.timers.rto = None if conn.snd_una == conn.snd_max else conn.timers.rto
        if conn.timers.rto is None:
            # Probing replaces retransmission: R2 (MUST-20) counts again from the next
            # retransmission, so answered probes never add up to a give-up (MUST-37).
            conn.timers.stall_since = None
            conn._rto_count = 0


def syn_segment(conn: TcpConnection, now: float) -> TcpRepr:
    seg = conn._segment(conn.iss, 0, SYN)
    seg.mss = conn.local_mss  # MUST-14: MSS option on SYN
    # RFC 7323 §2.2: the window field of a SYN or SYN-ACK is never scaled.
    seg.window = min(conn.rcvbuf.window, MAX_WINDOW)
    if conn.state is S.SYN_RECEIVED:
        seg.flags |= ACK
        seg.ack = conn.rcv_nxt
        conn.last_ack_sent = conn.rcv_nxt
        edge = seq_add(conn.rcv_nxt, seg.window)
        if seq_gt(edge, conn.rcv_adv):
            conn.rcv_adv = edge
        conn._ack_now = False
    for ext in conn.extensions:
        ext.syn_options(conn, seg, now)
    if conn.timers.rto is None:
        conn.timers.rto = now + conn.rtt.current()
    if conn.timers.stall_since is None:
        conn.timers.stall_since = now
    if conn.retransmits == 0 and conn._rtt_seq is None:  # Karn: time only a first transmission
        conn._rtt_seq = seq_add(conn.iss, 1)
        conn._rtt_time = now
    return seg


def segments_to_send(conn: TcpConnection, now: float) -> list[TcpRepr]:
    """Everything to transmit now, in order. Clears the pending-ACK state it satisfies."""
    out: list[TcpRepr] = []
    if conn._rst_out:
        out.extend(conn._rst_out)
        conn._rst_out.clear()
    st = conn.state
    if st is S.CLOSED:
        conn._dup_acks_out.clear()
        return out
    if conn._dup_acks_out:
        out.extend(conn._dup_acks_out)  # already decorated when they were built
        conn._dup_acks_out.clear()
    first_new = len(out)
    if conn._probe_out is not None:
        out.append(conn._probe_out)
        conn._probe_out = None
    if conn._send_syn:
        conn._send_syn = False
        out.append(syn_segment(conn, now))
        conn.segs_out += 1
        return out
    if st in _SEND_STATES:
        send_data(conn, out, now)
    if conn._ack_now and st is not S.SYN_SENT:
        seg = conn._segment(conn._ack_seq(), 0, ACK)
        conn._fill_ack(seg)
        out.append(seg)
    if out:
        if conn._out_ext:
            for seg in out[first_new:]:
                if not seg.flags & (SYN | RST):
                    for ext in conn._out_ext:
                        if isinstance(ext, Timestamps):  # built-in: a native call
                            ext.decorate(conn, seg, now)  # RFC 7323 §3.2
                        elif isinstance(ext, Sack):
                            ext.decorate(conn, seg, now)  # RFC 2018 §4, RFC 2883 §4
                        else:
                            ext.decorate(conn, seg, now)
        conn.segs_out += len(out)
        conn.ack_policy.on_ack_sent()
    return out


def lower_mss(conn: TcpConnection, new_mss: int) -> None:
    """Path MTU discovery lowered the send MSS (RFC 1191 §6.3): resend what is in flight at the
    new size, as a retransmission."""
    if new_mss < conn.snd_mss:
        conn.snd_mss = new_mss
        conn.info.mss = new_mss
        conn.cc.set_mss(new_mss)
        conn.snd_nxt = conn.snd_una
        if seq_lt(conn.snd_una, conn.snd_max):
            conn._rexmit_until = conn.snd_max
