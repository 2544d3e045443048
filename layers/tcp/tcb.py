"""The transmission control block's variables (RFC 9293 §3.3.1): sequence numbers, windows,
the buffers, and what goes into the ACK fields of every outgoing segment (window advertising,
receiver SWS avoidance, RFC 1122 §4.2.3.3).

Mechanism: :class:`Tcb` is the base class of :class:`~layers.tcp.connection.TcpConnection`,
with ``__slots__``. The variables are read and written on every segment, so they stay plain
attributes of the connection object (no helper object, no property): the per-segment path
costs what it did when they were declared in the connection itself, and each slot saves the
per-instance dictionary entry (memory per idle connection).
"""

from __future__ import annotations

from framework.checksum import BytesLike
from layers.tcp.buffers import ReceiveBuffer, SendBuffer
from layers.tcp.seq import MASK, seq_add, seq_diff, seq_gt, seq_le
from layers.tcp.timers import Timers
from layers.tcp.wire import ACK, TcpRepr

DEFAULT_MSS = 536  # RFC 9293 §3.7.1, MUST-15: assume 536 when the peer sent no MSS option
MAX_WINDOW = 0xFFFF  # RFC 9293 §3.1: the 16-bit window field (RFC 7323 §2.3 scales it)


class Tcb:
    """Sequence variables, windows, buffers and ACK fields of one connection."""

    __slots__ = (
        "_ack_now",
        "_syn_acked",
        "irs",
        "iss",
        "last_ack_sent",
        "local",
        "local_mss",
        "max_snd_wnd",
        "rcv_adv",
        "rcv_nxt",
        "rcv_wscale",
        "rcvbuf",
        "remote",
        "snd_max",
        "snd_mss",
        "snd_nxt",
        "snd_una",
        "snd_wl1",
        "snd_wl2",
        "snd_wnd",
        "snd_wscale",
        "sndbuf",
        "timers",
    )

    def __init__(
        self,
        local: tuple[bytes, int],
        remote: tuple[bytes, int],
        *,
        iss: int,
        local_mss: int,
        send_buffer: int,
        recv_buffer: int,
        ooo_budget: int | None,
        user_timeout: float | None,
    ) -> None:
        self.local = local
        self.remote = remote
        # Send sequence variables (RFC 9293 §3.3.1)
        self.iss = iss & MASK
        self.snd_una = self.iss
        self.snd_nxt = self.iss
        self.snd_max = self.iss  # highest sequence number sent + 1
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_snd_wnd = 0
        self.snd_wscale = 0  # shift applied to the peer's window field (RFC 7323)
        # Receive sequence variables
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0  # right edge of the window we advertised last (never moves left)
        self.rcv_wscale = 0
        self.local_mss = local_mss  # what we advertise (MSS option on our SYN)
        self.snd_mss = min(DEFAULT_MSS, local_mss)  # effective send MSS once known
        self.sndbuf = SendBuffer(send_buffer)
        self.rcvbuf = ReceiveBuffer(recv_buffer, ooo_budget)  # the layer sets its pool
        self._syn_acked = False
        self.last_ack_sent = 0  # RFC 7323 §4.3: Last.ACK.sent
        self._ack_now = False  # an ACK is owed at the end of this batch (RFC 9293 MUST-58)
        self.timers = Timers(user_timeout)

    @property
    def in_flight(self) -> int:
        return seq_diff(self.snd_max, self.snd_una)

    def _segment(self, seq: int, ack: int, flags: int, payload: BytesLike = b"") -> TcpRepr:
        return TcpRepr(self.local[1], self.remote[1], seq, ack, flags, 0, payload)

    def _window_to_advertise(self) -> int:
        """Receiver SWS avoidance (RFC 1122 §4.2.3.3, MUST-39) without shrinking (SHLD-14):
        move the right edge only when it gains at least min(RCV.BUFF/2, MSS)."""
        free = self.rcvbuf.window
        current = seq_diff(self.rcv_adv, self.rcv_nxt)
        if current < 0:
            current = 0
        if free - current >= min(self.rcvbuf.capacity // 2, self.local_mss):
            return free
        return current

    def _maybe_window_update(self) -> None:
        """A read freed buffer space: send a window update at once only when it matters (RFC 9293
        §3.8.6.2.2): the peer sees less than a full segment, or the new window at least doubles
        what it sees (Linux's tcp_cleanup_rbuf rule). Smaller gains ride on the next ACK; an
        update per read would double the ACKs and defeat delayed ACKs (RFC 1122 §4.2.3.2). The
        window is what the 16-bit field can carry (RFC 7323 §2.3), so a buffer larger than that
        never triggers an update that repeats the last ACK."""
        wnd = min(self._window_to_advertise(), MAX_WINDOW << self.rcv_wscale)
        current = max(seq_diff(self.rcv_adv, self.rcv_nxt), 0)
        if wnd > current and (current < self.local_mss or wnd >= 2 * current):
            self._ack_now = True

    def _fill_ack(self, seg: TcpRepr) -> None:
        """Set ACK number and window on an outgoing segment, recording the advertised edge."""
        wnd = self._window_to_advertise()
        shift = self.rcv_wscale
        field_ = (wnd + (1 << shift) - 1) >> shift if shift else wnd
        if field_ > MAX_WINDOW:
            field_ = MAX_WINDOW
        edge = seq_add(self.rcv_nxt, field_ << shift)
        if seq_gt(edge, self.rcv_adv):
            self.rcv_adv = edge
        seg.ack = self.rcv_nxt
        seg.window = field_
        seg.flags |= ACK
        self.last_ack_sent = self.rcv_nxt
        self._ack_now = False
        self.timers.ack = None

    def _ack_seq(self) -> int:
        """SEQ of a segment without data, SYN or FIN: RFC 9293's SND.NXT, i.e. our ``snd_max``.

        Go-back-N rewinds ``snd_nxt`` after a timeout; a pure ACK at the rewound number lies
        below the peer's RCV.NXT when it already holds that data, so the peer finds it
        unacceptable (§3.10.7.4, Table 6) and never reads its ACK field: with both sides
        retransmitting that is a deadlock. Like BSD's tcp_output and Linux's
        tcp_acceptable_seq(), use the highest sequence sent, but never past the peer's window
        (a zero-window probe byte may lie beyond it)."""
        if not self._syn_acked:
            return self.snd_nxt  # SYN-RECEIVED: ISS + 1 (the window may not be known yet)
        edge = seq_add(self.snd_una, self.snd_wnd)
        return self.snd_max if seq_le(self.snd_max, edge) else edge
