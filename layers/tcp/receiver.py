"""The receiving side of one connection: the segment text (RFC 9293 §3.10.7.4 "Seventh"),
out-of-order data and its duplicate ACKs (RFC 5681 §4.2), and the peer's FIN once every byte
before it arrived ("Eighth").

Mechanism: functions taking the connection (``receive_text(conn, seg, ...)``), as in
layers/tcp/recovery.py: the receive state is the connection's, read on every segment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from layers.tcp.buffers import REFUSED
from layers.tcp.events import DataReceived, EofReceived
from layers.tcp.policy import per_segment_hooks
from layers.tcp.recovery import DUPACK_THRESHOLD
from layers.tcp.seq import seq_add, seq_lt
from layers.tcp.state import TcpState, Trigger
from layers.tcp.tcb import DEFAULT_MSS, MAX_WINDOW
from layers.tcp.wire import ACK, TcpRepr

if TYPE_CHECKING:
    from layers.tcp.connection import TcpConnection

S = TcpState
_READ_STATES = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})  # connection._RECV_STATES


def receive_text(conn: TcpConnection, seg: TcpRepr, offset: int, wnd: int, now: float, syn_offset: int = 0) -> bool:
    """Store the acceptable part of the payload (trimmed to the window, §3.10.7.4); False
    when out-of-order text was refused over a memory budget (nothing was stored, and
    nothing acknowledges or SACKs it: the peer sends it again)."""
    payload = seg.payload
    if syn_offset:
        offset = 0  # the SYN's sequence number is already accounted for
    start = conn.rcvbuf.nxt + offset
    # Trim to the right edge of the window (the left edge is trimmed by the buffer).
    room = wnd - offset
    if room <= 0:
        conn._ack_now = True
        return True
    if len(payload) > room:
        payload = payload[:room]
    was_ooo = conn.rcvbuf.has_gaps
    gained = conn.rcvbuf.insert(start, payload)
    if gained == REFUSED:
        return False
    if gained:
        conn.rcv_nxt = seq_add(conn.rcv_nxt, gained)
        conn.bytes_received += gained
        conn._last_recv = now
        conn.events.append(DataReceived())
        if was_ooo:
            conn._ack_now = True  # RFC 5681 §4.2: ACK at once when a gap fills
        else:
            deadline = conn.ack_policy.on_data(gained, now)
            if deadline is None:
                conn._ack_now = True
            elif conn.timers.ack is None or deadline < conn.timers.ack:
                conn.timers.ack = deadline
    elif offset > 0:
        # Out of order: RFC 5681 §4.2, an immediate duplicate ACK for *each* such segment,
        # even within one batch (MUST-58's aggregation is for in-order data): a sender
        # without SACK needs three of them to fast-retransmit (RFC 5681 §3.2). With SACK,
        # beyond DupThresh of them in one batch the rest are one ACK at the batch's end
        # (MUST-58): its SACK blocks carry what they would have (RFC 6675 §5 counts SACKed
        # bytes, IsLost), so a flood of tiny segments read in one batch costs one ACK.
        if conn.scoreboard is not None and len(conn._dup_acks_out) >= DUPACK_THRESHOLD:
            conn._ack_now = True
            return True
        ack = conn._segment(conn._ack_seq(), 0, ACK)
        conn._fill_ack(ack)
        # Options describe the state when *this* segment arrived (RFC 2018 §4: the first
        # SACK block is the one holding the segment that triggered the ACK).
        for ext in conn._out_ext:
            ext.decorate(conn, ack, now)
        conn._dup_acks_out.append(ack)
    else:
        conn._ack_now = True  # a duplicate of data we hold: ACK (RFC 9293 §3.10.7.4)
    return True


def read_into(conn: TcpConnection, buf: bytearray | memoryview) -> int:
    """Copy readable bytes into *buf* (as many as fit) and take them: the one copy from the
    receive buffer to an application's own buffer (``asyncio.BufferedProtocol``)."""
    before = conn._window_to_advertise()
    n = conn.rcvbuf.readinto(buf)
    if n:
        _after_read(conn, before)
    return n


def consume(conn: TcpConnection, n: int) -> None:
    """Take *n* readable bytes the application copied from :meth:`ReceiveBuffer.peek`."""
    if n > 0:
        before = conn._window_to_advertise()
        conn.rcvbuf.consume(n)
        _after_read(conn, before)


def _after_read(conn: TcpConnection, before: int) -> None:
    # Reading may open the window: tell the peer when it matters (RFC 9293 §3.8.6.2.2).
    if conn.state in _READ_STATES:
        after = conn._window_to_advertise()
        if after > before or before == 0:
            conn._maybe_window_update()


def check_peer_fin(conn: TcpConnection, now: float) -> None:
    """Process the peer's FIN once every byte before it has arrived (RFC 9293 §3.10.7.4 "Eighth")."""
    fin = conn._peer_fin_offset
    if fin is None or conn.eof_received or conn.rcvbuf.nxt != fin:
        return
    conn.eof_received = True
    conn.rcv_nxt = seq_add(conn.rcv_nxt, 1)  # the FIN occupies one sequence number
    if seq_lt(conn.rcv_adv, conn.rcv_nxt):
        conn.rcv_adv = conn.rcv_nxt
    conn._ack_now = True
    conn.events.append(EofReceived())
    st = conn.state
    if st in (S.SYN_RECEIVED, S.ESTABLISHED):
        conn._set_state(Trigger.RECV_FIN, now)
    elif st is S.FIN_WAIT_1:
        if conn._fin_sent and conn.snd_una == conn.snd_max:
            conn._set_state(Trigger.RECV_FIN_ACK_OF_FIN, now)
            conn._enter_time_wait(now)
        else:
            conn._set_state(Trigger.RECV_FIN, now)
    elif st is S.FIN_WAIT_2:
        conn._set_state(Trigger.RECV_FIN, now)
        conn._enter_time_wait(now)


def take_syn(conn: TcpConnection, syn: TcpRepr, now: float) -> None:
    """Record what the peer's SYN says (RFC 9293 §3.10.7.2-3)."""
    conn.irs = syn.seq
    conn.rcv_nxt = seq_add(syn.seq, 1)
    conn.rcv_adv = seq_add(conn.rcv_nxt, min(conn.rcvbuf.window, MAX_WINDOW))
    # MUST-14/15 and RFC 6691: Eff.snd.MSS from the peer's MSS option, 536 without one.
    peer_mss = syn.mss if syn.mss else DEFAULT_MSS
    # Linux's tcp_min_snd_mss floor (CVE-2019-11479), never above our own MSS.
    conn.snd_mss = max(min(conn.options.min_snd_mss, conn.local_mss), min(peer_mss, conn.local_mss))
    conn.info.mss = conn.snd_mss
    conn.cc.set_mss(conn.snd_mss)
    # RFC 7323 §2.2: the window in a SYN is never scaled.
    conn.snd_wnd = syn.window
    conn.max_snd_wnd = max(conn.max_snd_wnd, conn.snd_wnd)
    conn.snd_wl1 = syn.seq
    if conn.extensions:
        for ext in conn.extensions:
            ext.on_peer_syn(conn, syn, now)
        checks: list[Any] = []
        accepts: list[Any] = []
        outs: list[Any] = []
        for e in conn.extensions:
            if e.active:
                check, accepted, decorate = per_segment_hooks(e)
                if check:
                    checks.append(e)
                if accepted:
                    accepts.append(e)
                if decorate:
                    outs.append(e)
        conn._check_ext = checks
        conn._accept_ext = accepts
        conn._out_ext = outs
    # Option bytes every segment carries (timestamps), which PMTU discovery must leave room for.
    conn.option_bytes = max(0, min(peer_mss, conn.local_mss) - conn.snd_mss)
