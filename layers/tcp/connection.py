"""One TCP connection as a sans-IO state machine (RFC 9293 §3.10 event processing).

Theory of operation
-------------------
Inputs:

- the user: :meth:`send`, :meth:`read`, :meth:`shutdown` (half-close), :meth:`close`,
  :meth:`abort`;
- the network: :meth:`segment_received` (and :meth:`icmp_error`);
- time: :meth:`handle_timer`.

Outputs, drained by the TCP layer after every batch of inputs:

- :meth:`segments_to_send` (everything to transmit now: data, retransmissions, ACKs, RSTs);
- :meth:`next_event` (what the user should hear about);
- :meth:`get_timer` (the earliest of the retransmission, persist, delayed-ACK, SWS-override,
  TIME-WAIT and FIN-WAIT-2 timers).

Nothing reads a clock: ``now`` is passed in. Segment processing follows the order of RFC 9293
§3.10.7.4 (sequence check, RST, SYN, ACK, text, FIN), each step citing its section. ACKs are
never sent from inside processing; processing sets ``_ack_now`` and the layer calls
:meth:`segments_to_send` after the whole batch, so a burst of in-order segments gets one ACK
(MUST-58/59); each out-of-order segment queues its own duplicate ACK (RFC 5681 §4.2), so a
sender without SACK still sees three of them. Sending uses go-back-N after a timeout:
``snd_nxt`` returns to ``snd_una`` and ``snd_max`` remembers the highest sequence ever sent, so
late ACKs up to it remain acceptable, and pure ACKs carry it as their SEQ (:meth:`_ack_seq`).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import structlog

from framework.errors import InvalidStateError
from framework.netlayer import NetError
from layers.tcp.buffers import REFUSED, ReceiveBuffer, SendBuffer
from layers.tcp.congestion import CongestionControl
from layers.tcp.events import (
    Connected,
    ConnectionClosed,
    ConnectionFailed,
    DataReceived,
    EofReceived,
    SendSpaceAvailable,
    SoftError,
    TcpEvent,
)
from layers.tcp.policy import TcpSetup, decision_log, overrides
from layers.tcp.rtt import RttEstimator
from layers.tcp.scoreboard import Scoreboard
from layers.tcp.seq import MASK, seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt
from layers.tcp.state import TcpState, Trigger, next_state
from layers.tcp.wire import ACK, FIN, PSH, RST, SYN, TcpRepr

S = TcpState
DEFAULT_MSS = 536  # RFC 9293 §3.7.1, MUST-15: assume 536 when the peer sent no MSS option
MAX_WINDOW = 0xFFFF
DUPACK_THRESHOLD = 3  # RFC 5681 §3.2
# R2 for data (RFC 9293 §3.8.3) is time *and* attempts: with the RTO backed off to its 60 s cap,
# 100 s alone may allow only two retransmissions, so a lossy but live path would be given up.
# RFC 1122 §4.2.3.5 lets R2 be a count or a time; Linux uses a count (tcp_retries2 = 15).
MIN_DATA_RETRIES = 8
_SEND_STATES = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK})
_RECV_STATES = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})


class TcpConnection:
    """One connection (a TCB, RFC 9293 §3.3.1)."""

    def __init__(self, setup: TcpSetup, *, iss: int, now: float, passive: bool, local_mss: int) -> None:
        opts = setup.options
        self.setup = setup
        self.options = opts
        self.info = setup.info
        self.local = setup.info.local
        self.remote = setup.info.remote
        self.passive = passive  # MUST-11: remember how SYN-RECEIVED was reached
        self.state = S.CLOSED
        self.created_at = now
        # A fresh lazy logger per connection (see layers.tcp.policy.decision_log).
        self._log: Any = structlog.get_logger("tcpstack.tcp").bind(conn=setup.info.label)

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

        self.sndbuf = SendBuffer(opts.send_buffer)
        self.rcvbuf = ReceiveBuffer(opts.recv_buffer, opts.ooo_budget)  # the layer sets its pool
        self._syn_acked = False
        self._fin_queued = False  # user asked to close the send side
        self._fin_sent = False
        self._fin_seq = 0
        self._fin_seq_known = False  # our FIN went out once, so _fin_seq is its sequence number
        self._peer_fin_offset: int | None = None  # stream offset of a FIN that arrived early
        self.eof_received = False
        self.user_closed = False  # close() (both directions) rather than shutdown()

        self.rtt = RttEstimator(min_rto=opts.min_rto, max_rto=opts.max_rto)
        self.cc: CongestionControl = setup.congestion or CongestionControl(self.snd_mss)
        self.cc.set_initial_window_rule(opts.initial_window)  # RFC 5681 §3.1 or RFC 6928 §2
        self.ack_policy = setup.ack_policy
        self.send_policy = setup.send_policy
        self.features = setup.features
        self.congestion_name = setup.congestion_name
        # Option extensions (window scaling, timestamps, SACK): all installed ones take part in
        # the SYN exchange; only those both sides agreed on run per segment afterwards.
        self.extensions = sorted(setup.extensions, key=lambda e: e.order)
        self._check_ext: list[Any] = []
        self._accept_ext: list[Any] = []
        self._out_ext: list[Any] = []
        self.ts_rtt = False  # an extension (timestamps) takes RTT samples instead of Karn timing
        # Keep-alive (RFC 1122 §4.2.3.6), when a plugin installed a policy: idle/interval/count.
        self.keepalive: Any = setup.keepalive
        self.slow_start: Any = setup.slow_start  # HyStart++ (RFC 9406) when a plugin installed it
        self._ka_at: float | None = None
        self._ka_probes = 0
        self.last_ack_sent = 0  # RFC 7323 §4.3: Last.ACK.sent
        self._rtt_seq: int | None = None  # Karn: timing one segment at a time
        self._rtt_time = 0.0
        self.dup_acks = 0
        self._lt_credits = 0
        # Congestion window validation (RFC 9438 §5.8, RFC 7661 §4.2, as Linux does): cwnd grows
        # only while it limits the sender: in slow start while the largest flight of the last
        # window reached half of cwnd, in congestion avoidance while cwnd held data back.
        self._cwnd_limited = False
        self._max_flight = 0
        self._cwnd_usage_seq = self.iss
        # TUN segmentation offload: the largest datagram the link takes as one super-segment
        # (0: none); set by the TCP layer.
        self.tso_max = 0
        self.option_bytes = 0  # set when the peer's SYN is taken
        self.in_recovery = False
        self.recover = self.iss  # RFC 6582 "recover"
        self._rto_count = 0  # consecutive retransmission timeouts without progress
        # RFC 6675 SACK-based loss recovery: a scoreboard once SACK was negotiated (the sack
        # plugin installs it), and whether the current recovery is driven by it.
        self.scoreboard: Scoreboard | None = None
        self.sack_recovery = False
        # After a retransmission timeout, until SND.UNA passes the RecoveryPoint it set (RFC 6675
        # §5.1; Linux's Loss state): the go-back-N resend, during which RACK still judges each
        # retransmission by its own send time (RFC 8985 §6.3).
        self._after_rto = False
        # RFC 8985 RACK-TLP, installed by the rack_tlp plugin once SACK is in use.
        self.rack: Any = None
        self.tlp_enabled = False
        self._rack_at: float | None = None
        self._pto_at: float | None = None
        self._tlp_due = False

        # Timers (absolute times or None)
        self._rto_at: float | None = None
        self._persist_at: float | None = None
        self._persist_backoff = 0
        self._ack_at: float | None = None
        self._sws_at: float | None = None
        self._close_at: float | None = None  # TIME-WAIT 2MSL or FIN-WAIT-2 timeout
        self._stall_since: float | None = None  # oldest unacknowledged transmission
        self._last_send = now
        self._syn_retransmitted = False

        # Output flags and queues
        self._ack_now = False
        self._send_syn = False
        self._rst_out: list[TcpRepr] = []
        self._dup_acks_out: list[TcpRepr] = []  # one per out-of-order segment (RFC 5681 §4.2)
        self._challenge_window_start = -1.0
        self._challenge_count = 0
        self.events: deque[TcpEvent] = deque()
        self.listener: Any = None  # object with handle_event(conn, event), e.g. the stream adapter
        self.listener_ref: Any = None  # the Listener this passive connection belongs to
        self.failure: str | None = None
        self.drop_reason: str | None = None  # set when a segment's text was dropped on purpose
        self.soft_error: NetError | None = None

        # Statistics
        self.bytes_sent = 0  # user bytes acknowledged by the peer
        self.bytes_received = 0  # user bytes delivered in order
        self.segs_in = 0
        self.segs_out = 0
        self.retransmits = 0
        self.retransmitted_bytes = 0
        self.rst_ignored = 0  # RSTs ignored in TIME-WAIT (RFC 1337)
        self.timeouts = 0  # retransmission timeouts of data (RFC 6298 (5.4)-(5.6))
        self.recoveries = 0  # fast recoveries entered (RFC 6582 §3.2, RFC 6675 §5)
        self.closed_at: float | None = None

    # ================================================================== identity

    @property
    def label(self) -> str:
        return self.info.label

    def __repr__(self) -> str:
        return f"<TcpConnection {self.label} {self.state.value}>"

    def _set_state(self, trigger: Trigger, now: float) -> None:
        old = self.state
        new = next_state(old, trigger)
        self.state = new
        self._log.debug("tcp.state", old=old.value, new=new.value, trigger=trigger.value)
        if new is S.TIME_WAIT:
            # For the user the connection is over; the TCB only guards the 4-tuple now.
            self.events.append(ConnectionClosed())
            self._log_summary(now, "TIME-WAIT")
        if new is S.CLOSED and old is not S.CLOSED:
            self.closed_at = now
            self._clear_timers()
            self.rcvbuf.release_ooo()  # nobody will fill the gaps now: free the memory budget
            if any(isinstance(e, SendSpaceAvailable) for e in self.events):
                # Events reach the user after the batch: by then a CLOSED TCB has no send
                # space (a reset flushes the queues, RFC 9293 §3.10.7.4 "Second"), so an
                # earlier SendSpaceAvailable would invite a send() that must fail.
                self.events = deque(e for e in self.events if not isinstance(e, SendSpaceAvailable))
            if old is not S.TIME_WAIT:
                self.events.append(ConnectionClosed())
                self._log_summary(now, "CLOSED")

    def _log_summary(self, now: float, state: str) -> None:
        """The one info line per connection, when it ends for the user: at CLOSED, or on
        entering TIME-WAIT (the 2 MSL that follow only guard the 4-tuple, RFC 9293 §3.6)."""
        self._log.info(
            "tcp.closed",
            reason=self.failure or "normal",
            state=state,
            duration=round(now - self.created_at, 6),
            bytes_in=self.bytes_received,
            bytes_out=self.bytes_sent,
            retransmits=self.retransmits,
            timeouts=self.timeouts,
            srtt=self.rtt.srtt,
            cwnd=self.cc.cwnd,
            congestion=self.congestion_name,
            features=sorted(self.features),
        )

    def _clear_timers(self) -> None:
        """CLOSED: no timer of any kind is left (every deadline :meth:`get_timer` looks at)."""
        self._rto_at = self._persist_at = self._ack_at = self._sws_at = self._close_at = None
        self._ka_at = self._rack_at = self._pto_at = None

    # ================================================================== opening

    def open_active(self, now: float) -> None:
        """User OPEN, active (RFC 9293 §3.10.1): send ``<SEQ=ISS><CTL=SYN>``."""
        self._set_state(Trigger.CONNECT, now)
        self.snd_nxt = seq_add(self.iss, 1)
        self.snd_max = self.snd_nxt
        self._send_syn = True

    def open_passive(self, syn: TcpRepr, now: float, *, synack_sent: bool = False) -> None:
        """A SYN arrived at a listener (RFC 9293 §3.10.7.2): enter SYN-RECEIVED and answer
        ``<SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>``. Data on the SYN is not accepted (it is not
        acknowledged, so the peer sends it again after the handshake, RFC 9293 §3.10.7.2).

        With *synack_sent* the SYN-ACK already went out as a SYN cookie (RFC 4987 §3.6) and
        *syn* is rebuilt from it: the connection only waits for the ACK it is given next."""
        self.state = S.LISTEN
        self._set_state(Trigger.RECV_SYN, now)
        self._take_syn(syn, now)
        self.snd_nxt = seq_add(self.iss, 1)
        self.snd_max = self.snd_nxt
        self._send_syn = not synack_sent
        if synack_sent:
            self.last_ack_sent = self.rcv_nxt  # RFC 7323 §4.3: what the cookie SYN-ACK acknowledged

    def _take_syn(self, syn: TcpRepr, now: float) -> None:
        """Record what the peer's SYN says (RFC 9293 §3.10.7.2-3)."""
        self.irs = syn.seq
        self.rcv_nxt = seq_add(syn.seq, 1)
        self.rcv_adv = seq_add(self.rcv_nxt, min(self.rcvbuf.window, MAX_WINDOW))
        # MUST-14/15 and RFC 6691: Eff.snd.MSS from the peer's MSS option, 536 without one.
        peer_mss = syn.mss if syn.mss else DEFAULT_MSS
        # Linux's tcp_min_snd_mss floor (CVE-2019-11479), never above our own MSS.
        self.snd_mss = max(min(self.options.min_snd_mss, self.local_mss), min(peer_mss, self.local_mss))
        self.info.mss = self.snd_mss
        self.cc.set_mss(self.snd_mss)
        # RFC 7323 §2.2: the window in a SYN is never scaled.
        self.snd_wnd = syn.window
        self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
        self.snd_wl1 = syn.seq
        if self.extensions:
            for ext in self.extensions:
                ext.on_peer_syn(self, syn, now)
            active = [e for e in self.extensions if e.active]
            self._check_ext = [e for e in active if overrides(e, "check")]
            self._accept_ext = [e for e in active if overrides(e, "accepted")]
            self._out_ext = [e for e in active if overrides(e, "decorate")]
        # Option bytes every segment carries (timestamps), which PMTU discovery must leave room for.
        self.option_bytes = max(0, min(peer_mss, self.local_mss) - self.snd_mss)

    # ================================================================== user calls

    def send(self, data: bytes | bytearray | memoryview, now: float) -> int:
        """Queue *data*; return how many bytes fit in the send buffer (0 when full).

        :raises InvalidStateError: after :meth:`shutdown`/:meth:`close` or when not connected.
        """
        if self._fin_queued:
            raise InvalidStateError("send after the connection was closed for sending")
        if self.state not in (S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED, S.CLOSE_WAIT):
            raise InvalidStateError(f"send in state {self.state.value}")
        return self.sndbuf.write(data)

    def read(self, max_bytes: int = -1) -> bytes:
        """Take readable bytes; reading may open the window (RFC 9293 §3.8.6.2.2)."""
        before = self._window_to_advertise()
        data = self.rcvbuf.read(max_bytes)
        if data and self.state in _RECV_STATES:
            after = self._window_to_advertise()
            if after > before or before == 0:
                self._maybe_window_update()
        return data

    @property
    def readable(self) -> int:
        return len(self.rcvbuf)

    def shutdown(self, now: float) -> None:
        """Half-close: send FIN after the queued data; keep receiving (RFC 9293 §3.6.1)."""
        if self._fin_queued:
            return
        st = self.state
        if st in (S.SYN_SENT,):
            self._set_state(Trigger.CLOSE, now)
            return
        if st is S.SYN_RECEIVED:
            self._fin_queued = True  # §3.10.4: the FIN follows once ESTABLISHED is reached
            return
        if st in (S.ESTABLISHED, S.CLOSE_WAIT):
            self._fin_queued = True
            self._set_state(Trigger.CLOSE, now)
            return
        if st is S.CLOSED:
            raise InvalidStateError("connection does not exist")

    def close(self, now: float) -> None:
        """Close both directions (RFC 9293 §3.10.4). With unread data pending this resets the
        connection instead (RFC 2525 §2.17), as Linux does."""
        self.user_closed = True
        if self.state is S.CLOSED:
            return
        if len(self.rcvbuf) and self.state in (S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.FIN_WAIT_2):
            self.abort(now, reason="aborted")
            return
        self.shutdown(now)
        if self.state is S.FIN_WAIT_2:
            self._arm_fin_wait_2(now)

    def abort(self, now: float, reason: str = "aborted") -> None:
        """RFC 9293 §3.10.5: send ``<SEQ=SND.NXT><CTL=RST>`` in synchronized states and
        SYN-RECEIVED, flush the queues, and enter CLOSED."""
        if self.state is S.CLOSED:
            return
        if self.state in (S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT):
            self._rst_out.append(self._segment(self.snd_max, 0, RST))
        self.failure = self.failure or reason
        self.sndbuf.clear()
        self.rcvbuf.clear()
        self._set_state(Trigger.ABORT, now)

    # ================================================================== segment arrival

    def segment_received(self, seg: TcpRepr, now: float) -> None:
        """Process one arriving segment (RFC 9293 §3.10.7.3-4). Afterwards the caller drains
        :meth:`segments_to_send` and :meth:`next_event`, and counts ``drop_reason`` if set (the
        segment's text was dropped on purpose: out-of-order data over a memory budget)."""
        self.segs_in += 1
        if self.keepalive is not None:
            # Anything from the peer shows it is alive (MUST-29: a lost probe ACK is tolerated
            # because only `count` unanswered probes in a row end the connection).
            self._ka_probes = 0
            self._ka_at = now + self.keepalive.idle
        st = self.state
        if st is S.SYN_SENT:
            self._receive_syn_sent(seg, now)
            return
        if st is S.CLOSED or st is S.LISTEN:
            return
        flags = seg.flags

        # --- First: check the sequence number (§3.10.7.4, Table 6) -----------------------
        seq = seg.seq
        payload = seg.payload
        plen = len(payload)
        seg_len = seg.seg_len
        rcv_nxt = self.rcv_nxt
        wnd = seq_diff(self.rcv_adv, rcv_nxt)
        if wnd < 0:
            wnd = 0
        if st is S.SYN_RECEIVED and flags & SYN and not flags & ACK and seq == self.irs:
            # A retransmitted SYN: our SYN-ACK was lost. Answer it again now (as Linux does).
            # The SYN-ACK is now a retransmission: RFC 6298 §3 (Karn, MUST-18), no RTT sample.
            self._send_syn = True
            self._rtt_seq = None
            self._synack_lost = True  # RFC 5681 §3.1: the IW becomes one segment
            self.retransmits += 1
            return
        if self._check_ext:
            for ext in self._check_ext:
                if not ext.check(self, seg, now):  # e.g. RFC 7323 §5.3 PAWS
                    return
        offset = seq_diff(seq, rcv_nxt)
        if seg_len == 0:
            acceptable = offset == 0 if wnd == 0 else 0 <= offset < wnd
        elif wnd == 0:
            # MUST-66: with a zero window still process ACK, URG and RST at RCV.NXT.
            acceptable = offset == 0
        else:
            end = offset + seg_len - 1
            acceptable = (0 <= offset < wnd) or (0 <= end < wnd)
        if not acceptable:
            if not flags & RST:
                # §3.10.7.4: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, then drop. In TIME-WAIT this
                # also answers a retransmitted FIN (RFC 9293 §3.10.7.4 "Eighth"), and restarts the 2MSL timer.
                self._ack_now = True
                if st is S.TIME_WAIT and flags & FIN:
                    self._close_at = now + 2 * self.options.msl
            return
        if self._accept_ext:
            for ext in self._accept_ext:
                ext.accepted(self, seg, now)

        # --- Second: the RST bit (§3.10.7.4; RFC 5961 §3.2) ------------------------------
        if flags & RST:
            if offset != 0:
                self._challenge_ack(now)  # in window but not exact: RFC 5961 §3.2
                return
            self._receive_rst(now)
            return

        # --- Fourth: the SYN bit (§3.10.7.4 "Fourth"; RFC 5961 §4.2) --------------------
        if flags & SYN:
            if st is S.SYN_RECEIVED and self.passive:
                # A new SYN in window while SYN-RECEIVED after a passive open: go back to
                # LISTEN (the listener still exists; this TCB is simply deleted).
                self.failure = "reset"
                self._set_state(Trigger.RETURN_TO_LISTEN, now)  # the layer deletes the TCB
                return
            self._challenge_ack(now)
            return

        # --- Fifth: the ACK field ----------------------------------------------------------
        if not flags & ACK:
            return  # §3.10.7.4: "if the ACK bit is off, drop the segment and return"
        ack = seg.ack
        if st is S.SYN_RECEIVED:
            if seq_lt(self.snd_una, ack) and seq_le(ack, self.snd_max):
                self._syn_acked = True
                self.snd_una = seq_add(self.snd_una, 1)
                self.snd_wnd = seg.window << self.snd_wscale
                self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
                self.snd_wl1 = seq
                self.snd_wl2 = ack
                self._our_syn_acked(now)
                self._become_established(now)
            else:
                # §3.10.7.4: an unacceptable ACK in SYN-RECEIVED gets <SEQ=SEG.ACK><CTL=RST>.
                self._rst_out.append(self._segment(ack, 0, RST))
                return
        if not self._process_ack(seg, now):
            return
        st = self.state
        if st is S.CLOSED:
            return
        if st is S.TIME_WAIT:
            if flags & FIN:  # §3.10.7.4: a retransmitted FIN: acknowledge, restart 2MSL
                self._ack_now = True
                self._close_at = now + 2 * self.options.msl
            return

        # --- Sixth: URG (not acted on: urgent data is delivered inline; docs/compliance.md) ---

        # --- Seventh: the segment text (§3.10.7.4 "Seventh") -------------------------------
        base = self.rcvbuf.nxt
        dup_acks = len(self._dup_acks_out)
        if plen:
            if st in _RECV_STATES:
                if self.user_closed and not self.eof_received:
                    # RFC 2525 §2.17: data for an application that closed: reset.
                    self.abort(now, reason="aborted")
                    return
                if not self._receive_text(seg, offset, wnd, now):
                    # Out-of-order data over its memory budget: holding it is a SHOULD (RFC 9293
                    # §3.10.7.4, SHLD-31); dropped unacknowledged, so never SACKed (RFC 2018 §8).
                    self.drop_reason = self.rcvbuf.refusal
                    return
            # In CLOSE-WAIT, CLOSING, LAST-ACK the peer already sent FIN: ignore the text.

        # --- Eighth: the FIN bit ---------------------------------------------------------
        if flags & FIN and st in (S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2):
            if offset + plen <= wnd:  # a FIN beyond the window was trimmed away
                self._peer_fin_offset = base + offset + plen
            if len(self._dup_acks_out) == dup_acks:  # (an out-of-order FIN was just answered)
                self._ack_now = True
        self._check_peer_fin(now)

    def _receive_syn_sent(self, seg: TcpRepr, now: float) -> None:
        """RFC 9293 §3.10.7.3, SYN-SENT."""
        flags = seg.flags
        ack_ok = False
        if flags & ACK:
            # First: SEG.ACK =< ISS or SEG.ACK > SND.NXT is unacceptable (RFC 9293 §3.10.7.3).
            if seq_le(seg.ack, self.iss) or seq_gt(seg.ack, self.snd_max):
                if not flags & RST:
                    self._rst_out.append(self._segment(seg.ack, 0, RST))
                return
            ack_ok = seq_lt(self.snd_una, seg.ack) and seq_le(seg.ack, self.snd_max)
        if flags & RST:
            # Second: a RST is valid only if it acknowledges our SYN (RFC 9293 §3.10.7.3).
            if ack_ok:
                self.failure = "refused"
                self.events.append(ConnectionFailed("refused", "connection refused by peer"))
                self._set_state(Trigger.RECV_RST, now)
            return
        if not flags & SYN:
            return  # Fifth: neither SYN nor RST
        if flags & FIN and not ack_ok:
            # A bare SYN+FIN is malformed (Linux drops it in LISTEN too). A SYN-ACK carrying a
            # FIN is legal: RFC 9293 §3.10.7.3 continues at the sixth step, so the FIN below
            # is processed once ESTABLISHED.
            return
        self._take_syn(seg, now)
        if ack_ok:
            self._syn_acked = True
            self.snd_una = seg.ack
            self.snd_wl2 = seg.ack
            self._our_syn_acked(now)
            self._set_state(Trigger.RECV_SYN_ACK, now)
            self._on_established(now)
            self._ack_now = True  # <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>
            # Data or FIN on the SYN-ACK continue at the sixth step.
            if len(seg.payload):
                self._receive_text(seg, 1, seq_diff(self.rcv_adv, self.rcv_nxt), now, syn_offset=1)
            if seg.flags & FIN and len(seg.payload) <= seq_diff(self.rcv_adv, seq_add(seg.seq, 1)):
                self._peer_fin_offset = len(seg.payload)
                self._check_peer_fin(now)
        else:
            # Simultaneous open (MUST-10): SYN-RECEIVED, send <SEQ=ISS><ACK=RCV.NXT><SYN,ACK>.
            self._set_state(Trigger.RECV_SYN, now)
            self._send_syn = True

    def _our_syn_acked(self, now: float) -> None:
        """Our SYN (or SYN-ACK) was acknowledged: stop its timer, take the RTT sample unless it
        was retransmitted (Karn, RFC 6298 §3), and after a lost SYN apply RFC 6298 (5.7) and
        RFC 5681 §3.1 (the initial window is one segment)."""
        self._rto_at = None
        self._stall_since = None
        if self._rtt_seq is not None and not self._syn_retransmitted:
            self.rtt.sample(now - self._rtt_time)
        self._rtt_seq = None
        if self._syn_retransmitted:
            self.rtt.reset_after_syn_timeout()  # RFC 6298 (5.7): only after a timeout
        if self._syn_retransmitted or self._synack_lost:
            self.cc.cwnd = self.snd_mss

    def _become_established(self, now: float) -> None:
        self._set_state(Trigger.RECV_ACK_OF_SYN, now)
        self._on_established(now)

    def _on_established(self, now: float) -> None:
        self.events.append(Connected())
        self._last_send = now
        if self._fin_queued and self.state is S.ESTABLISHED:
            self._set_state(Trigger.CLOSE, now)

    def _receive_rst(self, now: float) -> None:
        """§3.10.7.4 "Second", for a RST exactly at RCV.NXT."""
        st = self.state
        if st is S.SYN_RECEIVED:
            if self.passive:
                # Back to LISTEN: the listener is untouched; this embryonic TCB goes away.
                self.failure = "reset"
                self._set_state(Trigger.RECV_RST, now)
                return
            self.failure = "refused"
            self.events.append(ConnectionFailed("refused", "connection refused by peer"))
        elif st in (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT):
            self.failure = "reset"
            self.events.append(ConnectionFailed("reset", "connection reset by peer"))
        elif st is S.TIME_WAIT and self.options.rfc1337:
            # RFC 1337 §3 (fix F1): ignore a RST in TIME-WAIT, so the 2*MSL guard of the
            # 4-tuple is not cut short ("TIME-WAIT assassination").
            self.rst_ignored += 1
            self._log.debug("tcp.decision", decision="RST ignored", state="TIME-WAIT", rfc="RFC 1337 §3", t=now)
            return
        else:  # CLOSING, LAST-ACK, TIME-WAIT: delete the TCB (RFC 9293 §3.10.7.4)
            self.failure = self.failure or "reset"
        self.sndbuf.clear()
        self.rcvbuf.clear()
        self._set_state(Trigger.RECV_RST, now)

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 §3.2/§4.2: answer with <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, at most
        ``challenge_acks_per_second`` per connection (§7; per connection, not global, to avoid
        the CVE-2016-5696 side channel)."""
        if now - self._challenge_window_start >= 1.0:
            self._challenge_window_start = now
            self._challenge_count = 0
        if self._challenge_count < self.options.challenge_acks_per_second:
            self._challenge_count += 1
            self._ack_now = True

    # ------------------------------------------------------------------ ACK processing

    def _process_ack(self, seg: TcpRepr, now: float) -> bool:
        """The fifth step for synchronized states; returns False if the segment is dropped."""
        ack = seg.ack
        una = self.snd_una
        # RFC 5961 §5.2 (MAY-12): acceptable ACKs lie in [SND.UNA - MAX.SND.WND, SND.NXT].
        if seq_gt(ack, self.snd_max):
            self._ack_now = True  # §3.10.7.4: ACK of something not yet sent: ACK and drop
            return False
        if seq_lt(ack, seq_add(una, -max(self.max_snd_wnd, 1))):
            self._ack_now = True
            return False
        acked = seq_diff(ack, una)
        seq = seg.seq
        window = seg.window << self.snd_wscale
        newly_sacked = 0
        blocks: list[tuple[int, int]] = []
        sb = self.scoreboard
        if sb is not None and seg.sack:
            # RFC 6675 §5: every ACK carrying SACK information updates the scoreboard first.
            base = sb.una
            blocks = [(base + seq_diff(left, una), base + seq_diff(right, una)) for left, right in seg.sack]
            newly_sacked = sb.update(blocks, max(acked, 0), base + seq_diff(self.snd_max, una))
        if acked > 0:
            if self._undo is not None and self.in_recovery and self._undo_rexmit_at is not None and seg.ts:
                self._eifel(seg.ts[1], ack, now)
            self._ack_advanced(ack, acked, now)
            if self.rack is not None:
                self._arm_pto(now)  # RFC 8985 §7.2: an ACK of new data restarts the probe timer
        elif acked == 0:
            if newly_sacked and self.snd_una != self.snd_max:
                # RFC 6675 §2/§5: an ACK that SACKs new data counts as a duplicate, even when
                # it carries data (a bidirectional transfer) or a new window.
                self.dup_acks += 1
                self._lt_credits += 1  # RFC 3042 §2: with SACK, only ACKs with new SACK info
                self._sack_loss_check(now)
            elif not len(seg.payload) and not seg.flags & (SYN | FIN):
                self._maybe_dupack(window, now)
        if sb is not None and seg.sack and seq_le(seg.sack[0][1], ack):
            self._dsack(seg.sack[0], now)
        if self.rack is not None and sb is not None and (acked > 0 or newly_sacked or seg.sack):
            self.rack.on_ack(sb.una, blocks if seg.sack else [], now, self.rtt.min_rtt)
            self._rack_detect(now)
        # RFC 9293 §3.10.7.4 (S6): update the send window only from a newer segment.
        if seq_lt(self.snd_wl1, seq) or (self.snd_wl1 == seq and seq_le(self.snd_wl2, ack)):
            if window != self.snd_wnd:
                opened = window > self.snd_wnd
                self.snd_wnd = window
                if opened:
                    self._persist_backoff = 0
            self.max_snd_wnd = max(self.max_snd_wnd, window)
            self.snd_wl1 = seq
            self.snd_wl2 = ack
        return True

    def _ack_advanced(self, ack: int, acked: int, now: float) -> None:
        """New data acknowledged: move SND.UNA, free the buffer, sample RTT, grow cwnd."""
        self.dup_acks = 0
        self._lt_credits = 0
        in_flight_before = seq_diff(self.snd_max, self.snd_una)
        data_acked = acked
        if not self._syn_acked:  # the SYN's sequence number (simultaneous open)
            self._syn_acked = True
            data_acked -= 1
        fin_acked = False
        # RFC 9293 §3.10.7.4 "Fifth": an ACK beyond our FIN acknowledges it, even while a
        # go-back-N resend after an RTO has not re-sent it yet (_fin_sent is then False).
        if self._fin_seq_known and seq_gt(ack, self._fin_seq):
            fin_acked = True
            self._fin_sent = True
            data_acked -= 1
        if data_acked > 0:
            self.sndbuf.consume(data_acked)
            self.bytes_sent += data_acked
            self.events.append(SendSpaceAvailable())
        self.snd_una = ack
        if self.scoreboard is not None:
            self.scoreboard.advance(acked)
        if seq_lt(self.snd_nxt, ack):
            self.snd_nxt = ack  # go-back-N resend overtaken by an ACK of earlier data
        # RFC 6298 §3 (Karn): sample only a segment that was not retransmitted.
        if self._rtt_seq is not None and seq_ge(ack, self._rtt_seq):
            self.rtt.sample(now - self._rtt_time)
            self._rtt_seq = None
        if self._after_rto and seq_gt(ack, self.recover):
            self._after_rto = False  # RFC 6675 §5.1: HighACK reached the RecoveryPoint of the RTO
        # Congestion control (RFC 5681 §3, RFC 6582 §3.2).
        if self.in_recovery:
            if seq_gt(ack, self.recover):
                self.in_recovery = False
                # RFC 6582 §3.2 step 3 option (1), also after SACK recovery: cwnd = min(ssthresh,
                # FlightSize + SMSS); below ssthresh, slow start brings it back within a round.
                # (Keeping cwnd = ssthresh, as RFC 6937 §3 does, measured slower here: bench/netsim
                # and the simulator at 1-10% loss, with more timeouts.)
                self.cc.on_recovery_end(seq_diff(self.snd_max, ack))
                if self.sack_recovery:
                    self.sack_recovery = False
                    if self._undo is not None and not self._undo_retrans:
                        # RFC 4015 §3.2 (Linux's tcp_try_undo_recovery): a recovery that ends
                        # without having retransmitted anything found no loss (the hole filled
                        # by itself, the segment was only reordered).
                        self._undo_recovery(now, "no retransmission was needed", "RFC 4015 §3.2")
            elif not self.sack_recovery:
                self.cc.on_partial_ack(acked)
                self._retransmit_head(now)  # RFC 6582 §3.2 step 5: the next hole
            # (in SACK recovery the pipe and NextSeg() decide what goes next, RFC 6675 §5)
        else:
            if self._cwnd_in_use():
                cc = self.cc
                # With segmentation offload the kernel ACKs a whole super-segment at once: count it
                # as the ACK every two segments the wire would have carried (RFC 3465's L = 2), so
                # slow start still doubles per round (one stretch ACK would grow cwnd by 2 SMSS).
                step = 2 * self.snd_mss if self.tso_max else acked
                left = acked
                while left > 0:
                    part = min(left, step)
                    left -= part
                    credit = part
                    if self.slow_start is not None and cc.cwnd < cc.ssthresh:
                        # RFC 9406 §4.2: HyStart++ decides how much slow start may grow, and when it ends.
                        credit = self.slow_start.credit(cc, self.rtt, part, ack, self.snd_max, now)
                    if credit:
                        cc.on_ack(credit, in_flight_before, now, self.rtt.srtt)
            if seq_gt(ack, self.recover):
                # Keep "recover" just behind SND.UNA so half-space comparisons stay valid
                # over any amount of data (RFC 6582 §3.2 step 2 compares against it).
                self.recover = seq_add(ack, -1)
        # RFC 6298 (5.2)/(5.3): stop the timer when all is acked, else restart it.
        self._rto_count = 0
        if self.snd_una == self.snd_max:
            self._rto_at = None
            self._stall_since = None
        else:
            self._rto_at = now + self.rtt.current()
            self._stall_since = now
        self._persist_at = None
        if fin_acked:
            self._our_fin_acked(now)

    def _our_fin_acked(self, now: float) -> None:
        st = self.state
        if st is S.FIN_WAIT_1:
            self._set_state(Trigger.RECV_ACK_OF_FIN, now)
            if self.user_closed:
                self._arm_fin_wait_2(now)
        elif st is S.CLOSING:
            self._set_state(Trigger.RECV_ACK_OF_FIN, now)
            self._enter_time_wait(now)
        elif st is S.LAST_ACK:
            self._set_state(Trigger.RECV_ACK_OF_FIN, now)

    def _arm_fin_wait_2(self, now: float) -> None:
        t = self.options.fin_wait_2_timeout
        if t is not None:
            self._close_at = now + t

    def _enter_time_wait(self, now: float) -> None:
        # MUST-13: remain in TIME-WAIT for 2*MSL.
        self._clear_timers()
        self._close_at = now + 2 * self.options.msl

    def _maybe_dupack(self, window: int, now: float) -> None:
        """RFC 5681 §2: a duplicate ACK acks nothing new, carries no data or SYN/FIN,
        leaves the window unchanged, and arrives while data is outstanding."""
        if self.snd_una == self.snd_max or window != self.snd_wnd or self.snd_wnd == 0:
            return  # (answers to zero-window probes are not duplicate ACKs)
        if self.scoreboard is not None:
            # RFC 6675 §2: with SACK, a duplicate ACK is one that SACKs new data (counted in
            # _process_ack). An ACK repeating the last one says nothing about loss: the network
            # may have duplicated it, and three of them must not start a recovery (and cut cwnd).
            return
        self.dup_acks += 1
        self._lt_credits += 1
        if self.in_recovery:
            self.cc.on_dup_ack_in_recovery()  # RFC 5681 §3.2 step 4
            return
        if self.dup_acks == DUPACK_THRESHOLD and seq_gt(self.snd_una, self.recover):
            # RFC 5681 §3.2 steps 2-3, RFC 6582 §3.2 step 2: enter fast recovery.
            self.in_recovery = True
            self.recoveries += 1
            # RFC 6582 §3.2 step 2: recover = the highest sequence number transmitted (SND.MAX
            # - 1), so that the ACK of everything sent (SND.MAX) is a full ACK (step 3).
            self.recover = seq_add(self.snd_max, -1)
            self.cc.on_loss(seq_diff(self.snd_max, self.snd_una), now)
            self._log.debug("tcp.fast_retransmit", una=self.snd_una, cwnd=self.cc.cwnd, ssthresh=self.cc.ssthresh)
            self._retransmit_head(now)

    def _sack_loss_check(self, now: float) -> None:
        """RFC 6675 §5 steps (a)-(b): enter loss recovery on the DupThresh-th duplicate ACK, or
        as soon as IsLost(HighACK + 1) holds, if the cumulative ACK is past ``recover``."""
        sb = self.scoreboard
        if sb is None or self.in_recovery or not seq_gt(self.snd_una, self.recover):
            return
        if self.dup_acks < DUPACK_THRESHOLD and not sb.is_lost(sb.una):
            return
        self._enter_sack_recovery(now)

    def _enter_sack_recovery(self, now: float) -> None:
        sb = self.scoreboard
        if sb is None:
            return
        # RFC 6675 §5 (4.1)-(4.2): RecoveryPoint = HighData; ssthresh = cwnd = FlightSize / 2
        # (through the congestion controller, so CUBIC's beta applies); no window inflation:
        # the pipe estimate does the accounting.
        self.in_recovery = True
        self.sack_recovery = True
        self.recoveries += 1
        self._rescue_done = False
        self._recovery_head_due = True
        if self.rack is not None:
            self.rack.on_recovery()
        self.recover = seq_add(self.snd_max, -1)
        # Remembered for undoing a spurious recovery (RFC 3522 §2, RFC 3708 §3; RFC 4015 §3.2
        # restores the window): what cwnd and ssthresh were, and the retransmissions to come.
        self._undo = (self.cc.cwnd, self.cc.ssthresh)
        self._undo_from, self._undo_to = self.snd_una, self.snd_max
        self._undo_rexmit_at = None
        self._undo_retrans = 0
        self.cc.on_loss(seq_diff(self.snd_max, self.snd_una), now)
        self.cc.cwnd = max(self.cc.ssthresh, self.snd_mss)
        sb.high_rxt = sb.una
        self._pto_at = None  # RFC 8985 §7.2: no probes during recovery
        self._rtt_seq = None  # Karn: what follows includes retransmissions
        self._log.debug("tcp.sack_recovery", una=self.snd_una, cwnd=self.cc.cwnd, sacked=sb.sacked_bytes)

    def _dsack(self, block: tuple[int, int], now: float) -> None:
        """A D-SACK block (RFC 2883 §4) below the cumulative ACK. RFC 3708 §2: it shows a spurious
        retransmission only if we retransmitted that much; a network duplicate of an original
        (RFC 2883 §4.1.2) says nothing about reordering (Linux ignores dsack_dups > total_retrans)."""
        left, right = block
        dups = max(1, -(-seq_diff(right, left) // self.snd_mss))
        self._dsack_segs += dups
        if self._dsack_segs > self.retransmits:
            return
        if self.rack is not None:
            self.rack.on_dsack()  # RFC 8985 §6.2 step 4: widen the reordering window
        in_recovery_range = seq_ge(left, self._undo_from) and seq_le(right, self._undo_to)
        if self._undo is not None and self._undo_retrans and in_recovery_range:
            # RFC 3708 §3: every retransmission of the recovery reported as a duplicate means
            # none was needed: undo it.
            self._undo_retrans = max(0, self._undo_retrans - dups)
            if not self._undo_retrans:
                self._undo_recovery(now, "D-SACK", "RFC 3708 §3")

    def _eifel(self, tsecr: int, ack: int, now: float) -> None:
        """RFC 3522 §2 (Eifel detection): an ACK that covers every retransmission of this recovery
        but echoes a timestamp older than the first of them was sent for the originals: the
        recovery was spurious (reordering taken for loss)."""
        sb, tsval_at = self.scoreboard, self.tsval_at
        if sb is None or tsval_at is None or self._undo_rexmit_at is None:
            return
        if sb.una + seq_diff(ack, self.snd_una) < sb.high_rxt:
            return  # a retransmission above this ACK may still have been needed
        age = (tsval_at(self._undo_rexmit_at) - tsecr) & MASK
        if 0 < age < 1 << 31:
            self._undo_recovery(now, "timestamp echo older than the retransmission", "RFC 3522 §2")

    def _undo_recovery(self, now: float, reason: str, rfc: str) -> None:
        """Undo a spurious fast recovery (RFC 4015 §3.2, as Linux's tcp_undo_cwnd_reduction):
        cwnd and ssthresh return to what they were before it; the recovery ends."""
        if self._undo is None:
            return
        cwnd, ssthresh = self._undo
        self._undo = None
        cc = self.cc
        cc.cwnd = max(cc.cwnd, cwnd)
        cc.ssthresh = max(cc.ssthresh, ssthresh)
        self.spurious_recoveries += 1
        if self.in_recovery:
            self.in_recovery = self.sack_recovery = False
            self._recovery_head_due = False
        # RFC 4015 §3.2 restores the state from before the spurious recovery, and with it RFC 6675
        # §5 (a)'s "recover" (as Linux, whose undo returns to the Open state): a loss in the same
        # window is then a first loss and starts a recovery, instead of waiting for the RTO.
        if seq_lt(self.snd_una, self.recover):
            self.recover = seq_add(self.snd_una, -1)
        cc.log.debug("tcp.decision", decision="recovery undone", reason=reason, rfc=rfc, cwnd=cc.cwnd, t=now)

    def _rack_detect(self, now: float) -> None:
        """RFC 8985 §6.2 step 5: mark what RACK deems lost in the scoreboard; enter recovery if
        needed (§6.3), and arm the reorder timer for the rest."""
        rack, sb = self.rack, self.scoreboard
        if rack is None or sb is None:
            return
        lost, again = rack.detect_loss(now, self.rtt.min_rtt, self.rtt.srtt, in_recovery=self.in_recovery)
        self._rack_at = again
        if not lost:
            return
        for seg in lost:
            sb.mark_lost(seg.start, seg.end)
        rack.log.debug(
            "tcp.decision", decision="marked lost", segments=len(lost), una=self.snd_una, rfc="RFC 8985 §6.2", t=now
        )
        if not self.in_recovery and seq_gt(self.snd_una, self.recover):
            self._enter_sack_recovery(now)

    def _arm_pto(self, now: float) -> None:
        """RFC 8985 §7.2: with data in flight, outside recovery, arm the probe timeout
        PTO = 2 * SRTT (+ WCDelAckT with a single segment in flight), unless the RTO is earlier."""
        if not self.tlp_enabled or self.in_recovery:
            self._pto_at = None
            return
        flight = seq_diff(self.snd_max, self.snd_una)
        if flight <= 0:
            self._pto_at = None
            return
        srtt = self.rtt.srtt if self.rtt.srtt is not None else 1.0
        pto = 2 * srtt
        if flight <= self.snd_mss:
            pto += 0.2  # WCDelAckT: the peer may be delaying its ACK of a lone segment
        rto = self._rto_at if self._rto_at is not None else now + self.rtt.current()
        self._pto_at = min(now + pto, rto)  # RFC 8985 §7.2: never later than the RTO

    def _retransmit_head(self, now: float) -> None:
        """Queue one segment at SND.UNA for retransmission without rewinding SND.NXT."""
        self._fast_rexmit = True

    # ------------------------------------------------------------------ receiving text

    def _receive_text(self, seg: TcpRepr, offset: int, wnd: int, now: float, syn_offset: int = 0) -> bool:
        """Store the acceptable part of the payload (trimmed to the window, §3.10.7.4); False
        when out-of-order text was refused over a memory budget (nothing was stored, and
        nothing acknowledges or SACKs it: the peer sends it again)."""
        payload = seg.payload
        if syn_offset:
            offset = 0  # the SYN's sequence number is already accounted for
        start = self.rcvbuf.nxt + offset
        # Trim to the right edge of the window (the left edge is trimmed by the buffer).
        room = wnd - offset
        if room <= 0:
            self._ack_now = True
            return True
        if len(payload) > room:
            payload = payload[:room]
        was_ooo = self.rcvbuf.has_gaps
        gained = self.rcvbuf.insert(start, payload)
        if gained == REFUSED:
            return False
        if gained:
            self.rcv_nxt = seq_add(self.rcv_nxt, gained)
            self.bytes_received += gained
            self.events.append(DataReceived())
            if was_ooo:
                self._ack_now = True  # RFC 5681 §4.2: ACK at once when a gap fills
            else:
                deadline = self.ack_policy.on_data(gained, now)
                if deadline is None:
                    self._ack_now = True
                elif self._ack_at is None or deadline < self._ack_at:
                    self._ack_at = deadline
        elif offset > 0:
            # Out of order: RFC 5681 §4.2, an immediate duplicate ACK for *each* such segment,
            # even within one batch (MUST-58's aggregation is for in-order data): a sender
            # without SACK needs three of them to fast-retransmit (RFC 5681 §3.2). With SACK,
            # beyond DupThresh of them in one batch the rest are one ACK at the batch's end
            # (MUST-58): its SACK blocks carry what they would have (RFC 6675 §5 counts SACKed
            # bytes, IsLost), so a flood of tiny segments read in one batch costs one ACK.
            if self.scoreboard is not None and len(self._dup_acks_out) >= DUPACK_THRESHOLD:
                self._ack_now = True
                return True
            ack = self._segment(self._ack_seq(), 0, ACK)
            self._fill_ack(ack)
            # Options describe the state when *this* segment arrived (RFC 2018 §4: the first
            # SACK block is the one holding the segment that triggered the ACK).
            for ext in self._out_ext:
                ext.decorate(self, ack, now)
            self._dup_acks_out.append(ack)
        else:
            self._ack_now = True  # a duplicate of data we hold: ACK (RFC 9293 §3.10.7.4)
        return True

    def _check_peer_fin(self, now: float) -> None:
        """Process the peer's FIN once every byte before it has arrived (RFC 9293 §3.10.7.4 "Eighth")."""
        fin = self._peer_fin_offset
        if fin is None or self.eof_received or self.rcvbuf.nxt != fin:
            return
        self.eof_received = True
        self.rcv_nxt = seq_add(self.rcv_nxt, 1)  # the FIN occupies one sequence number
        if seq_lt(self.rcv_adv, self.rcv_nxt):
            self.rcv_adv = self.rcv_nxt
        self._ack_now = True
        self.events.append(EofReceived())
        st = self.state
        if st in (S.SYN_RECEIVED, S.ESTABLISHED):
            self._set_state(Trigger.RECV_FIN, now)
        elif st is S.FIN_WAIT_1:
            if self._fin_sent and self.snd_una == self.snd_max:
                self._set_state(Trigger.RECV_FIN_ACK_OF_FIN, now)
                self._enter_time_wait(now)
            else:
                self._set_state(Trigger.RECV_FIN, now)
        elif st is S.FIN_WAIT_2:
            self._set_state(Trigger.RECV_FIN, now)
            self._enter_time_wait(now)

    # ================================================================== ICMP

    def icmp_error(self, err: NetError, quoted_seq: int, now: float) -> None:
        """An ICMP error quoting one of our segments (RFC 9293 §3.9.2.2; RFC 5927)."""
        # RFC 5927 §4.1: accept only if the quoted sequence number is in flight.
        if not (seq_le(self.snd_una, quoted_seq) and seq_lt(quoted_seq, self.snd_max)):
            return
        if err.is_hard and not err.too_big and self.state in (S.SYN_SENT, S.SYN_RECEIVED):
            # SHLD-26: hard errors abort a connection that is still opening (as Linux does).
            self.failure = "unreachable"
            self.events.append(ConnectionFailed("unreachable", err.name))
            self._set_state(Trigger.TIMEOUT, now)
            return
        if err.too_big and err.next_hop_mtu >= 68:
            # RFC 1191 §6.3: lower the send MSS to fit the path (less the options every segment
            # carries, RFC 9293 MUST-16), and resend at that size, as a retransmission.
            new_mss = max(err.next_hop_mtu - 40 - self.option_bytes, 48)
            if new_mss < self.snd_mss:
                self.snd_mss = new_mss
                self.info.mss = new_mss
                self.cc.set_mss(new_mss)
                self.snd_nxt = self.snd_una
                if seq_lt(self.snd_una, self.snd_max):
                    self._rexmit_until = self.snd_max
            return
        # MUST-56: soft errors are reported, never fatal.
        self.soft_error = err
        self.events.append(SoftError(err))

    # ================================================================== timers

    def _rto_deadline(self) -> float | None:
        """The retransmission timer, pulled in to the moment the user timeout expires (RFC 9293
        §3.10.8: the abort happens when the user timeout expires, not at the next backed-off RTO)."""
        t = self._rto_at
        ut = self.options.user_timeout
        if t is not None and ut is not None and self._stall_since is not None:
            t = min(t, self._stall_since + ut)
        return t

    def get_timer(self) -> float | None:
        best: float | None = None
        for t in (
            self._rto_deadline(),
            self._persist_at,
            self._ack_at,
            self._sws_at,
            self._close_at,
            self._ka_at,
            self._rack_at,
            self._pto_at,
        ):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timer(self, now: float) -> None:
        """Run every timer that expired by *now*; afterwards drain :meth:`segments_to_send`."""
        if self._close_at is not None and now >= self._close_at:
            self._close_at = None
            if self.state is S.TIME_WAIT:
                self._set_state(Trigger.TIMEOUT_2MSL, now)
            elif self.state is S.FIN_WAIT_2:
                self.failure = "fin_wait_2_timeout"
                self._set_state(Trigger.TIMEOUT, now)
            return
        if self._ack_at is not None and now >= self._ack_at:
            self._ack_at = None
            self._ack_now = True
        if self._sws_at is not None and now >= self._sws_at:
            self._sws_at = None
            self._sws_override = True
        if self._pto_at is not None and now >= self._pto_at:
            # RFC 8985 §7.3: the probe goes first and the RTO restarts behind it.
            self._pto_at = None
            self._tlp_due = True
            self._rto_at = now + self.rtt.current()
        rto = self._rto_deadline()
        if rto is not None and now >= rto:
            self._on_rto(now)
        if self._persist_at is not None and now >= self._persist_at:
            self._persist_at = None
            self._probe_due = True
        if self._ka_at is not None and now >= self._ka_at:
            self._on_keepalive(now)
        if self._rack_at is not None and now >= self._rack_at:
            self._rack_at = None
            self._rack_detect(now)  # RFC 8985 §6.2: the reorder timer

    def _on_keepalive(self, now: float) -> None:
        """RFC 1122 §4.2.3.6 / RFC 9293 §3.8.4: after ``idle`` seconds without traffic, probe
        with ``<SEQ=SND.UNA-1>`` and no data (SHLD-12), which the peer must answer with an ACK;
        ``count`` unanswered probes ``interval`` apart mean the peer is gone."""
        ka = self.keepalive
        self._ka_at = None
        if self.state not in (S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_2):
            return
        if self.snd_una != self.snd_max or len(self.sndbuf):
            self._ka_at = now + ka.idle  # MUST-26: only when idle; retransmission covers the rest
            return
        log = decision_log(self.label, "keepalive")  # rare: once per idle period
        if self._ka_probes >= ka.count:
            log.debug("tcp.decision", decision="peer dead", probes=self._ka_probes, rfc="RFC 1122 §4.2.3.6", t=now)
            self.failure = "timeout"
            self.events.append(ConnectionFailed("timeout", "keep-alive: the peer stopped answering"))
            self._set_state(Trigger.TIMEOUT, now)
            return
        self._ka_probes += 1
        seg = self._segment(seq_add(self.snd_una, -1), 0, ACK, b"\0" if ka.garbage_octet else b"")
        seg.rexmit = True  # a probe, not new data
        self._fill_ack(seg)
        self._ka_out = seg
        self._ka_at = now + ka.interval
        self.keepalive_probes_sent += 1
        log.debug("tcp.decision", decision="probe sent", probe=self._ka_probes, rfc="RFC 1122 §4.2.3.6", t=now)

    def _on_rto(self, now: float) -> None:
        """RFC 6298 (5.4)-(5.6), RFC 5681 §3.1: retransmit the earliest unacked segment."""
        self._rto_at = None
        syn_phase = self.state in (S.SYN_SENT, S.SYN_RECEIVED)
        limit = self.options.syn_retries_timeout if syn_phase else self.options.retries_timeout
        ut = self.options.user_timeout
        if ut is not None:
            limit = min(limit, ut)
        started = self._stall_since if self._stall_since is not None else now
        user_expired = ut is not None and now >= started + ut
        r2_expired = now >= started + limit and (syn_phase or self._rto_count >= MIN_DATA_RETRIES)
        if user_expired or r2_expired:  # the same sum as _rto_deadline(), so it fires exactly then
            # MUST-20/21 (R2): give up and tell the user.
            self.failure = "timeout"
            self.events.append(ConnectionFailed("timeout", "retransmission timeout"))
            if self.state is not S.SYN_SENT:
                self._rst_out.append(self._segment(self.snd_max, 0, RST))
            self._set_state(Trigger.TIMEOUT, now)
            return
        self.rtt.back_off()
        self._rto_count += 1
        self._log.debug("tcp.rto", una=self.snd_una, rto=self.rtt.current(), count=self._rto_count)
        self._rtt_seq = None  # Karn
        if syn_phase:
            self._syn_retransmitted = True
            self._send_syn = True
            self.retransmits += 1
            return
        flight = seq_diff(self.snd_max, self.snd_una)
        self.timeouts += 1
        self._undo = None  # a timeout is not undone (no F-RTO, RFC 5682)
        self._pto_at = self._rack_at = None
        self._tlp_due = False
        self.cc.on_timeout(flight, now)
        self.in_recovery = False
        self.sack_recovery = False
        self._recovery_head_due = False
        if self.scoreboard is not None:
            # RFC 6675 §5.1 lets the sender keep SACK information after a timeout (RFC 2018 §8
            # "SHOULD" clear it, against reneging receivers; Linux keeps it, and so do we: the
            # go-back-N resend below skips what the receiver holds, instead of sending it all).
            self.scoreboard.after_timeout()
        self.recover = seq_add(self.snd_max, -1)  # RFC 6582 §4: the highest sequence number sent
        self.dup_acks = 0
        self._lt_credits = 0
        self.snd_nxt = self.snd_una  # go back N; cwnd = 1 SMSS sends one segment (RFC 5681 §3.1)
        self._after_rto = True
        if self._fin_sent and seq_le(self.snd_una, self._fin_seq):
            self._fin_sent = False  # the FIN is resent with the data path
        self._rexmit_until = self.snd_max

    # ================================================================== output

    def _segment(self, seq: int, ack: int, flags: int, payload: bytes = b"") -> TcpRepr:
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
        self._ack_at = None

    def segments_to_send(self, now: float) -> list[TcpRepr]:
        """Everything to transmit now, in order. Clears the pending-ACK state it satisfies."""
        out: list[TcpRepr] = []
        if self._rst_out:
            out.extend(self._rst_out)
            self._rst_out.clear()
        st = self.state
        if st is S.CLOSED:
            self._dup_acks_out.clear()
            return out
        if self._dup_acks_out:
            out.extend(self._dup_acks_out)  # already decorated when they were built
            self._dup_acks_out.clear()
        first_new = len(out)
        if self._ka_out is not None:
            out.append(self._ka_out)
            self._ka_out = None
        if self._send_syn:
            self._send_syn = False
            out.append(self._syn_segment(now))
            self.segs_out += 1
            return out
        if st in _SEND_STATES:
            self._send_data(out, now)
        if self._ack_now and st is not S.SYN_SENT:
            seg = self._segment(self._ack_seq(), 0, ACK)
            self._fill_ack(seg)
            out.append(seg)
        if out:
            if self._out_ext:
                for seg in out[first_new:]:
                    if not seg.flags & (SYN | RST):
                        for ext in self._out_ext:
                            ext.decorate(self, seg, now)
            self.segs_out += len(out)
            self.ack_policy.on_ack_sent()
        return out

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

    def _syn_segment(self, now: float) -> TcpRepr:
        seg = self._segment(self.iss, 0, SYN)
        seg.mss = self.local_mss  # MUST-14: MSS option on SYN
        # RFC 7323 §2.2: the window field of a SYN or SYN-ACK is never scaled.
        seg.window = min(self.rcvbuf.window, MAX_WINDOW)
        if self.state is S.SYN_RECEIVED:
            seg.flags |= ACK
            seg.ack = self.rcv_nxt
            self.last_ack_sent = self.rcv_nxt
            edge = seq_add(self.rcv_nxt, seg.window)
            if seq_gt(edge, self.rcv_adv):
                self.rcv_adv = edge
            self._ack_now = False
        for ext in self.extensions:
            ext.syn_options(self, seg, now)
        if self._rto_at is None:
            self._rto_at = now + self.rtt.current()
        if self._stall_since is None:
            self._stall_since = now
        if self.retransmits == 0 and self._rtt_seq is None:  # Karn: time only a first transmission
            self._rtt_seq = seq_add(self.iss, 1)
            self._rtt_time = now
        return seg

    # ------------------------------------------------------------------ data path

    _fast_rexmit = False
    _rescue_done = False
    _recovery_head_due = False
    _dsack_segs = 0  # segments the peer reported as duplicates (D-SACK, RFC 2883)
    _undo: tuple[int, int] | None = None  # (cwnd, ssthresh) before the current recovery
    _undo_rexmit_at: float | None = None  # when its first retransmission went out
    _undo_retrans = 0  # its retransmissions not yet reported as duplicates
    _undo_from = 0  # SND.UNA and SND.MAX when it began: its retransmissions lie between them
    _undo_to = 0
    spurious_recoveries = 0
    #: TSval our timestamps would carry at a time (installed by the timestamps plugin).
    tsval_at: Any = None
    _synack_lost = False
    _ka_out: TcpRepr | None = None
    keepalive_probes_sent = 0
    _sws_override = False
    _probe_due = False
    _rexmit_until: int | None = None

    def _send_data(self, out: list[TcpRepr], now: float) -> None:
        una = self.snd_una
        buffered = len(self.sndbuf)
        mss = self.snd_mss
        # Offset in the send buffer of a sequence number (the SYN is not in the buffer).
        base = una if self._syn_acked else seq_add(una, 1)

        if self._fast_rexmit:
            self._fast_rexmit = False
            size = min(mss, buffered)
            if size > 0:
                out.append(self._data_segment(una, self.sndbuf.peek(0, size), now, retransmit=True))
            elif self._fin_sent:
                out.append(self._fin_segment(self._fin_seq, now, retransmit=True))

        # RFC 5681 §4.1: restart from IW after an idle period longer than the RTO.
        if buffered and una == self.snd_max and now - self._last_send > self.rtt.current():
            before = self.cc.cwnd
            self.cc.on_idle_restart()
            if self.slow_start is not None:
                self.slow_start.on_idle_restart(self.cc, before)

        sb = self.scoreboard
        if self._after_rto and sb is not None and sb.lost and not self.sack_recovery:
            self._resend_lost_after_rto(out, now, una, base, buffered)
        pipe = self._sack_retransmit(out, now, una, base, buffered) if self.sack_recovery else -1
        # RFC 3042 (limited transmit): on each of the first two duplicate ACKs one new segment
        # may go beyond cwnd (cwnd itself unchanged), so a small window still gets the three
        # duplicate ACKs fast retransmit needs.
        tlp_extra = 0
        if self._tlp_due:
            # RFC 8985 §7.3: the probe is one new segment if any may go (beyond cwnd), else
            # the last segment sent again.
            self._tlp_due = False
            if self.rack is not None:
                self.rack.probes += 1
                self.rack.log.debug(
                    "tcp.decision", decision="tail loss probe", una=una, nxt=self.snd_nxt, rfc="RFC 8985 §7.3", t=now
                )
            unsent_now = buffered - seq_diff(self.snd_nxt, base)
            if unsent_now > 0 and seq_diff(seq_add(una, self.snd_wnd), self.snd_nxt) > 0:
                tlp_extra = mss
            else:
                self._tlp_retransmit_last(out, now, una, base, buffered)
        credits = self._lt_credits
        limited = min(credits, 2) * mss if credits and not self.in_recovery and self._rexmit_until is None else 0
        cwnd_blocked = False
        # With segmentation offload, one segment may carry up to tso_max less the headers (in
        # whole MSS units); the kernel cuts it into MSS-sized segments with copies of our header.
        # (Not for a tiny MSS: one write would become thousands of segments on the wire.)
        cap = max(mss, (self.tso_max - 100) // mss * mss) if self.tso_max and mss >= DEFAULT_MSS else mss

        while True:
            nxt = self.snd_nxt
            off = seq_diff(nxt, base)
            unsent = buffered - off
            in_flight = seq_diff(nxt, una)
            wnd_room = seq_diff(seq_add(una, self.snd_wnd), nxt)
            # RFC 6675 §5: in SACK recovery the pipe, not SND.NXT - SND.UNA, is what cwnd limits.
            room = min(wnd_room, self.cc.cwnd + limited + tlp_extra - (pipe if pipe >= 0 else in_flight))
            if unsent <= 0:
                self._maybe_send_fin(out, now, wnd_room)
                break
            if room <= 0:
                if self.snd_wnd == 0 or wnd_room <= 0:
                    self._zero_window(out, now, off, in_flight)
                else:
                    cwnd_blocked = True  # data waits for cwnd, not for the peer's window
                break
            size = min(cap, unsent, room)
            until = self._rexmit_until
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
                    size == unsent and self.send_policy.may_send_small(tail, in_flight + size - tail, now)
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
                    self.snd_nxt = seq_add(una, held[1] - sb.una)
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
                half_window = size >= self.max_snd_wnd // 2 and self.max_snd_wnd > 0
                if not (
                    (all_fits and self.send_policy.may_send_small(size, in_flight, now))
                    or half_window
                    or self._sws_override
                ):
                    if self._sws_at is None and in_flight == 0:
                        # Nothing in flight will wake us: the override timer will (RFC 1122 §4.2.3.4).
                        self._sws_at = now + self.options.sws_override
                    # Less than a segment of cwnd left while more data waits: cwnd limits us.
                    cwnd_blocked = room == size < min(mss, unsent) and room < wnd_room
                    break
            self._sws_override = False
            self._sws_at = None
            data = self.sndbuf.peek(off, size)
            seg = self._data_segment(nxt, data, now, retransmit=retransmit)
            if retransmit and sb is not None and sb.lost:
                pos = sb.una + seq_diff(nxt, una)
                sb.unmark_lost(pos, pos + size)  # sent again: RACK judges the new transmission
            if size > mss:
                seg.gso_size = mss  # a super-segment (TSO)
            if size == unsent:
                seg.flags |= PSH  # MUST-60/61: push the last segment of the queued data
            out.append(seg)
            self.snd_nxt = seq_add(nxt, size)
            if seq_gt(self.snd_nxt, self.snd_max):
                self.snd_max = self.snd_nxt
            if self._rexmit_until is not None and not seq_lt(self.snd_nxt, self._rexmit_until):
                self._rexmit_until = None
            if pipe >= 0:
                pipe += size
            tlp_extra = 0  # the probe was this one segment
        self._cwnd_validate(cwnd_blocked, pipe if pipe >= 0 else seq_diff(self.snd_max, una))

    def _cwnd_validate(self, blocked: bool, flight: int) -> None:
        """Remember, per window of data, whether cwnd limited the sender and the largest
        flight (RFC 7661 §4.2; Linux's tcp_cwnd_validate)."""
        if (
            blocked
            or not seq_lt(self.snd_una, self._cwnd_usage_seq)
            or (not self._cwnd_limited and flight > self._max_flight)
        ):
            self._cwnd_limited = blocked
            self._max_flight = flight
            self._cwnd_usage_seq = self.snd_max  # the end of what is out (go-back-N rewinds SND.NXT)

    def _cwnd_in_use(self) -> bool:
        """May this ACK grow cwnd? Not while the application or the peer's window, rather than
        cwnd, limits the flight (RFC 9438 §5.8; RFC 5681 §3.1 grows cwnd to use the path, an
        unused cwnd says nothing about it)."""
        cc = self.cc
        if self._cwnd_limited:
            return True
        # Slow start: also while the largest recent flight reached half of cwnd (Linux's rule).
        return cc.cwnd < cc.ssthresh and cc.cwnd < 2 * self._max_flight

    def _tlp_retransmit_last(self, out: list[TcpRepr], now: float, una: int, base: int, buffered: int) -> None:
        """RFC 8985 §7.3: send the highest-sequence segment again as the probe; when our FIN is the
        last thing sent and still unacknowledged, the probe carries it (alone, if all data is
        acknowledged), so a lost FIN is found by the probe's ACK, not by the RTO (as Linux)."""
        end_off = seq_diff(self.snd_max, base)
        fin_out = self._fin_sent and seq_ge(self._fin_seq, base)
        if fin_out:
            end_off = min(end_off, seq_diff(self._fin_seq, base))
        end_off = min(end_off, buffered)
        start_off = max(end_off - self.snd_mss, seq_diff(una, base), 0)
        if end_off <= start_off:
            if fin_out and seq_diff(self._fin_seq, base) == end_off:
                out.append(self._fin_segment(self._fin_seq, now, retransmit=True))
            return
        seq = seq_add(base, start_off)
        seg = self._data_segment(seq, self.sndbuf.peek(start_off, end_off - start_off), now, retransmit=True)
        if fin_out and seq_diff(self._fin_seq, base) == end_off:
            seg.flags |= FIN
        out.append(seg)

    def _sack_retransmit(self, out: list[TcpRepr], now: float, una: int, base: int, buffered: int) -> int:
        """RFC 6675 §5 (C): while cwnd - pipe >= 1 SMSS, send what NextSeg() names: rule (1)
        lost holes first; rule (2), new data, is the caller's loop; rule (3), holes not yet
        deemed lost, only when no new data can go. Returns the pipe for the caller's loop."""
        sb = self.scoreboard
        if sb is None:
            return -1
        mss = self.snd_mss
        max_pos = sb.una + seq_diff(self.snd_max, una)
        pipe = sb.pipe(max_pos)
        unsent = buffered - seq_diff(self.snd_nxt, base)
        window_closed = seq_diff(seq_add(una, self.snd_wnd), self.snd_nxt) <= 0
        if self._recovery_head_due:
            # RFC 6675 §5 (4.3): on entering recovery, retransmit the first segment presumed
            # lost (at HighACK + 1) at once, whatever the pipe says; with a small window the
            # pipe may stay above cwnd until the retransmission timer fires otherwise.
            self._recovery_head_due = False
            head = sb.next_hole(max_pos, lost_only=False) or (sb.una, sb.una + mss)
            pipe += self._sack_resend(out, now, head, una, base, buffered)
        for lost_only in (True, False):
            if not lost_only and unsent > 0 and not window_closed:
                return pipe  # rule (2) applies: new data goes before unproven holes
            while self.cc.cwnd - pipe >= mss:
                hole = sb.next_hole(max_pos, lost_only=lost_only)
                if hole is None:
                    break
                sent = self._sack_resend(out, now, hole, una, base, buffered)
                if not sent:
                    break  # a SYN or FIN position: the retransmission timer covers it
                pipe += sent
        # Rule (4), the rescue retransmission: once per recovery, when nothing else may go, the
        # segment holding the highest unSACKed byte, so a lost tail is not left to the RTO.
        if not self._rescue_done and self.cc.cwnd - pipe >= mss and self.snd_max != una:
            top = sb.una + seq_diff(self.snd_max, una)
            if sb.highest_sacked < top:
                self._rescue_done = True
                before = len(out)
                self._tlp_retransmit_last(out, now, una, base, buffered)
                if len(out) > before:
                    seg = out[-1]
                    pos = sb.una + seq_diff(seg.seq, una)
                    sb.mark_retransmitted(pos, pos + len(seg.payload))
                    pipe += len(seg.payload)
        return pipe

    def _resend_lost_after_rto(self, out: list[TcpRepr], now: float, una: int, base: int, buffered: int) -> None:
        """RFC 8985 §6.3 (and §6.2 step 5): after a retransmission timeout RACK keeps judging each
        segment by its latest send time, so a go-back-N retransmission that is lost again is found
        once a later one is delivered, and is sent again now (at most cwnd of them per call)
        instead of waiting for the next, backed-off RTO (as Linux leaves its Loss state on a lost
        retransmission, RFC 6675 §5.1 using the SACK information after the timeout)."""
        sb = self.scoreboard
        assert sb is not None
        mss = self.snd_mss
        top = sb.una + seq_diff(self.snd_nxt, una)  # what the go-back-N resend has reached
        budget = self.cc.cwnd
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
            out.append(self._data_segment(seq, self.sndbuf.peek(off, size), now, retransmit=True))
            sb.unmark_lost(start, start + size)
            budget -= size

    def _sack_resend(
        self, out: list[TcpRepr], now: float, hole: tuple[int, int], una: int, base: int, buffered: int
    ) -> int:
        """Retransmit (at most one SMSS of) the scoreboard range *hole*; return the bytes sent."""
        sb = self.scoreboard
        assert sb is not None
        start, end = hole
        seq = seq_add(una, start - sb.una)
        off = seq_diff(seq, base)
        if off < 0 or off >= buffered:
            return 0
        size = min(end - start, buffered - off, self.snd_mss)
        out.append(self._data_segment(seq, self.sndbuf.peek(off, size), now, retransmit=True))
        sb.mark_retransmitted(start, start + size)
        return size

    def _data_segment(self, seq: int, data: bytes, now: float, *, retransmit: bool) -> TcpRepr:
        seg = self._segment(seq, 0, ACK, data)
        seg.rexmit = retransmit
        self._fill_ack(seg)
        self._note_sent(seq, len(data), now, retransmit)
        return seg

    def _note_sent(self, seq: int, length: int, now: float, retransmit: bool) -> None:
        if retransmit:
            # Segments, also when a super-segment (TSO) carries several.
            self.retransmits += -(-length // self.snd_mss) if length > self.snd_mss else 1
            self.retransmitted_bytes += length
            self._rtt_seq = None  # Karn: no sample across a retransmission
            if self._undo is not None:
                self._undo_retrans += 1
                if self._undo_rexmit_at is None:
                    self._undo_rexmit_at = now
        elif self._rtt_seq is None and not self.ts_rtt:
            self._rtt_seq = seq_add(seq, length)
            self._rtt_time = now
        if self._rto_at is None:  # RFC 6298 (5.1)
            self._rto_at = now + self.rtt.current()
        if self._stall_since is None:
            self._stall_since = now
        self._last_send = now
        self._persist_at = None
        rack, sb = self.rack, self.scoreboard
        if rack is not None and sb is not None:
            pos = sb.una + seq_diff(seq, self.snd_una)
            rack.on_sent(pos, pos + length, now, retransmit)  # RFC 8985 §6.1: record xmit time
            if not retransmit:
                self._arm_pto(now)

    def _maybe_send_fin(self, out: list[TcpRepr], now: float, wnd_room: int) -> None:
        """Send our FIN once every queued byte is sent (RFC 9293 §3.6: it is retransmitted like data)."""
        if not self._fin_queued or self._fin_sent:
            return
        fin_seq = self.snd_nxt
        retransmit = self._rexmit_until is not None and seq_lt(fin_seq, self._rexmit_until)
        if out and out[-1].seq + len(out[-1].payload) & MASK == fin_seq and not out[-1].flags & (SYN | RST):
            # Piggy-back the FIN on the last data segment.
            out[-1].flags |= FIN
        else:
            out.append(self._fin_segment(fin_seq, now, retransmit=retransmit))
        self._fin_sent = True
        self._fin_seq = fin_seq
        self._fin_seq_known = True
        self.snd_nxt = seq_add(fin_seq, 1)
        if seq_gt(self.snd_nxt, self.snd_max):
            self.snd_max = self.snd_nxt
        self._rexmit_until = None
        if self._rto_at is None:
            self._rto_at = now + self.rtt.current()
        if self._stall_since is None:
            self._stall_since = now
        if not retransmit and self.rack is not None:
            self._arm_pto(now)  # RFC 8985 §7.2: the FIN is a new segment; a lost one is probed for

    def _fin_segment(self, seq: int, now: float, *, retransmit: bool) -> TcpRepr:
        seg = self._segment(seq, 0, ACK | FIN)
        self._fill_ack(seg)
        if retransmit:
            self.retransmits += 1
        return seg

    def _zero_window(self, out: list[TcpRepr], now: float, off: int, in_flight: int) -> None:
        """Zero-window probing (RFC 9293 §3.8.6.1, MUST-35/36, RFC 1122 §4.2.2.17): with data
        waiting, nothing in flight and a closed window, probe after the RTO, backing off."""
        if in_flight > 0 and not self._probe_due:
            return  # the retransmission timer covers outstanding data
        if self._probe_due:
            self._probe_due = False
            data = self.sndbuf.peek(off, 1)
            if data:
                seg = self._segment(self.snd_nxt, 0, ACK, data)
                seg.rexmit = True  # a window probe: never ECN-capable (RFC 3168 §6.1.6)
                self._fill_ack(seg)
                out.append(seg)
                end = seq_add(self.snd_nxt, 1)
                if seq_gt(end, self.snd_max):
                    self.snd_max = end  # an ACK covering the probe byte stays acceptable
            self._persist_backoff += 1
        if self._persist_at is None:
            interval = min(self.rtt.rto * (1 << min(self._persist_backoff, 16)), self.options.max_rto)
            self._persist_at = now + interval
            self._rto_at = None if self.snd_una == self.snd_max else self._rto_at
            if self._rto_at is None:
                # Probing replaces retransmission: R2 (MUST-20) counts again from the next
                # retransmission, so answered probes never add up to a give-up (MUST-37).
                self._stall_since = None
                self._rto_count = 0

    # ================================================================== events

    def next_event(self) -> TcpEvent | None:
        """The oldest undelivered event, or ``None``."""
        return self.events.popleft() if self.events else None

    @property
    def in_flight(self) -> int:
        return seq_diff(self.snd_max, self.snd_una)

    def status(self) -> dict[str, Any]:
        """A snapshot for ``ss``-style views and the connection summary."""
        return {
            "state": self.state.value,
            "local": self.local,
            "remote": self.remote,
            "snd_una": self.snd_una,
            "snd_nxt": self.snd_nxt,
            "snd_wnd": self.snd_wnd,
            "rcv_nxt": self.rcv_nxt,
            "rcv_wnd": max(0, seq_diff(self.rcv_adv, self.rcv_nxt)),
            "mss": self.snd_mss,
            "cwnd": self.cc.cwnd,
            "ssthresh": self.cc.ssthresh,
            "srtt": self.rtt.srtt,
            "rto": self.rtt.current(),
            "in_flight": self.in_flight,
            "send_queue": len(self.sndbuf),
            "recv_queue": len(self.rcvbuf),
            "retransmits": self.retransmits,
            "timeouts": self.timeouts,
            "recoveries": self.recoveries,
            "spurious_recoveries": self.spurious_recoveries,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
        }
