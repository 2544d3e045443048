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
- :meth:`get_timer` (the earliest deadline of layers/tcp/timers.py, plugins' timers included).

Nothing reads a clock: ``now`` is passed in. Segment processing follows the order of RFC 9293
§3.10.7.4 (sequence check, RST, SYN, ACK, text, FIN), each step citing its section. ACKs are
never sent from inside processing; processing sets ``_ack_now`` and the layer calls
:meth:`segments_to_send` after the whole batch, so a burst of in-order segments gets one ACK
(MUST-58/59); each out-of-order segment queues its own duplicate ACK (RFC 5681 §4.2), so a
sender without SACK still sees three of them. Sending uses go-back-N after a timeout:
``snd_nxt`` returns to ``snd_una`` and ``snd_max`` remembers the highest sequence ever sent, so
late ACKs up to it remain acceptable, and pure ACKs carry it as their SEQ (:meth:`_ack_seq`).

The parts
---------
This module keeps the user calls, the segment-arrival dispatch (RFC 9293 §3.10.7) and the
state changes. The rest lives beside it: the TCB's variables, window advertising and ACK
fields in layers/tcp/tcb.py (the base class), the named timers in layers/tcp/timers.py,
ACK processing and loss recovery in layers/tcp/recovery.py, the sender in
layers/tcp/sender.py, the receiver in layers/tcp/receiver.py. Those modules are functions
taking the connection, so the per-segment path keeps plain attribute access and one call per
step (docs/architecture.md, "TCP in its parts"). Plugins that own an algorithm with a timer
(keep-alive, RACK-TLP) use only the verbs of the section "plugin-facing verbs" below.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from framework.errors import InvalidStateError
from framework.lazylog import LazyLog, debug_enabled
from framework.netlayer import NetError
from layers.tcp import receiver, recovery, sender
from layers.tcp.congestion import NO_LOG, CongestionControl, CongestionControlProtocol
from layers.tcp.events import Connected, ConnectionClosed, ConnectionFailed, SendSpaceAvailable, SoftError, TcpEvent
from layers.tcp.policy import ConnectionProbe, ConnInfo, LossDetector, TcpSetup, decision_log
from layers.tcp.rtt import RttEstimator
from layers.tcp.scoreboard import Scoreboard
from layers.tcp.seq import seq_add, seq_diff, seq_gt, seq_le, seq_lt
from layers.tcp.state import TcpState, Trigger, next_state
from layers.tcp.tcb import DEFAULT_MSS, MAX_WINDOW, Tcb
from layers.tcp.view import ConnectionVerbs
from layers.tcp.wire import ACK, FIN, RST, SYN, TcpRepr

S = TcpState
_SEND_STATES = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK})
_RECV_STATES = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})
__all__ = ["DEFAULT_MSS", "MAX_WINDOW", "TcpConnection"]


class TcpConnection(Tcb, ConnectionVerbs):
    """One connection (a TCB, RFC 9293 §3.3.1)."""

    # Every attribute __init__ sets (no per-instance dictionary: memory per idle connection).
    __slots__ = tuple(
        """
        _accept_ext _after_rto _challenge_count _challenge_window_start _check_ext _cwnd_limited
        _cwnd_usage_seq _dsack_segs _dup_acks_out _fast_rexmit _fin_queued _fin_sent _fin_seq
        _fin_seq_known _last_ack _last_recv _last_send _log _lt_credits _max_flight _out_ext
        _peer_fin_offset _persist_backoff _probe_due _probe_out _rate_mark _rate_span _rate_t0
        _recovery_head_due _rescue_done _rexmit_until _rst_out _rto_count _rtt_seq _rtt_time _send_syn _sent_all
        _sws_override _syn_retransmitted _synack_lost _tlp_due _undo _undo_from _undo_retrans
        _undo_rexmit_at _undo_to ack_policy bytes_received bytes_sent cc closed_at congestion_name
        created_at delivery_rate drop_reason dup_acks eof_received events extensions failure fast_path
        features in_recovery info keepalive keepalive_probes_sent listener listener_ref loss_detector
        option_bytes options passive probe rate_app_limited recover recoveries retransmits retransmitted_bytes
        rst_ignored rtt sack_recovery scoreboard segs_in segs_out send_policy setup slow_start
        soft_error spurious_recoveries state timeouts ts_rtt tso_max tsval_at user_closed
        """.split()
    )

    def __init__(self, setup: TcpSetup, *, iss: int, now: float, passive: bool, local_mss: int) -> None:
        opts = setup.options
        info = setup.info
        super().__init__(
            info.local,
            info.remote,
            iss=iss,
            local_mss=local_mss,
            send_buffer=opts.send_buffer,
            recv_buffer=opts.recv_buffer,
            ooo_budget=opts.ooo_budget,
            user_timeout=opts.user_timeout,
        )
        self.setup = setup
        self.options = opts
        # info, rtt and ts_rtt are annotated here although ConnectionVerbs declares them: mypyc makes
        # a native field only of what the compiled class declares itself (an attribute declared only
        # on that interpreted base would live in __dict__, one generic getattr per read; docs/
        # architecture.md, "Native connection fields"; tests/layers/tcp/test_native_fields.py).
        self.info: ConnInfo = info
        self.passive = passive  # MUST-11: remember how SYN-RECEIVED was reached
        self.state = S.CLOSED
        self.created_at = now
        # Binds nothing until a line is emitted at an enabled level (framework/lazylog.py).
        self._log = LazyLog("tcpstack.tcp", info.label)
        self._fin_queued = False  # user asked to close the send side
        self._fin_sent = False
        self._fin_seq = 0
        self._fin_seq_known = False  # our FIN went out once, so _fin_seq is its sequence number
        self._peer_fin_offset: int | None = None  # stream offset of a FIN that arrived early
        self.eof_received = False
        self.user_closed = False  # close() (both directions) rather than shutdown()

        # Policies (layers/tcp/policy.py), installed by plugins when the connection was set up.
        self.rtt: RttEstimator = RttEstimator(min_rto=opts.min_rto, max_rto=opts.max_rto)
        cc: CongestionControlProtocol = setup.congestion or CongestionControl(self.snd_mss)
        if getattr(cc, "log", None) is NO_LOG:
            # A controller a plugin put in the slot itself (after setup gave the configured one its
            # log), or none: its window reductions are decisions like any other, seen by the log
            # and by its debug taps (the pcapng capture's comments).
            cc.log = decision_log(info.label, cc.name)
        self.cc: CongestionControlProtocol = cc
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
        self.ts_rtt: bool = False  # an extension (timestamps) takes RTT samples instead of Karn timing
        #: TSval our timestamps would carry at a time (installed by the timestamps plugin).
        self.tsval_at: Any = None
        self.keepalive = setup.keepalive  # RFC 1122 §4.2.3.6, a timer policy of the keepalive plugin
        if self.keepalive is not None:
            self.timers.add(self.keepalive)
        self.slow_start: Any = setup.slow_start  # HyStart++ (RFC 9406) when a plugin installed it
        # The probe feature (plugins/probe.py): told after each segment processed and each batch
        # sent; None (the default) costs one test at each of those two points.
        self.probe: ConnectionProbe | None = setup.probe
        # TUN segmentation offload: the largest datagram the link takes as one super-segment
        # (0: none); set by the TCP layer.
        self.tso_max = 0
        self.option_bytes = 0  # set when the peer's SYN is taken

        # Loss recovery (layers/tcp/recovery.py)
        self._rtt_seq: int | None = None  # Karn: timing one segment at a time
        self._rtt_time = 0.0
        self.dup_acks = 0
        self._lt_credits = 0
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
        self.loss_detector: LossDetector | None = None  # RACK-TLP (RFC 8985) from its plugin
        self._fast_rexmit = False
        self._rescue_done = False
        self._recovery_head_due = False
        self._dsack_segs = 0  # segments the peer reported as duplicates (D-SACK, RFC 2883)
        self._undo: tuple[int, int] | None = None  # (cwnd, ssthresh) before the current recovery
        self._undo_rexmit_at: float | None = None  # when its first retransmission went out
        self._undo_retrans = 0  # its retransmissions not yet reported as duplicates
        self._undo_from = 0  # SND.UNA and SND.MAX when it began: its retransmissions lie between them
        self._undo_to = 0
        self._synack_lost = False

        # The sender (layers/tcp/sender.py)
        # Congestion window validation (RFC 9438 §5.8, RFC 7661 §4.2, as Linux does): cwnd grows
        # only while it limits the sender: in slow start while the largest flight of the last
        # window reached half of cwnd, in congestion avoidance while cwnd held data back.
        self._cwnd_limited = False
        self._max_flight = 0
        self._cwnd_usage_seq = self.iss
        self._persist_backoff = 0
        self._last_send = now
        self._syn_retransmitted = False
        self._tlp_due = False  # a loss detector asked for a tail loss probe (RFC 8985 §7.3)
        self._sws_override = False
        self._probe_due = False
        self._rexmit_until: int | None = None

        # Output flags and queues
        self._send_syn = False
        self._rst_out: list[TcpRepr] = []
        self._dup_acks_out: list[TcpRepr] = []  # one per out-of-order segment (RFC 5681 §4.2)
        self._probe_out: TcpRepr | None = None  # a keep-alive probe (plugin-facing verbs)
        self._challenge_window_start = -1.0
        self._challenge_count = 0
        self.events: deque[TcpEvent] = deque()
        self.listener: Any = None  # object with handle_event(conn, event), e.g. the stream adapter
        self.listener_ref: Any = None  # the Listener this passive connection belongs to
        self.failure: str | None = None
        self.drop_reason: str | None = None  # set when a segment's text was dropped on purpose
        self.fast_path = True  # header prediction (layers/tcp/fastpath.py); the layer sets it
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
        self.spurious_recoveries = 0  # recoveries undone (RFC 4015 §3.2)
        self.keepalive_probes_sent = 0
        self.closed_at: float | None = None
        # For `tcpstack ss` (docs/cli.md, "ss"): when data last arrived in order and when an ACK
        # last acknowledged new data (the sender's counterpart is _last_send), and the delivery
        # rate: bytes acknowledged over at least one smoothed RTT (recovery.rate_sample), in bytes
        # per second, and whether the sender had nothing to send when it was taken.
        self._last_recv = now
        self._last_ack = now
        self._rate_t0 = now  # the current sampling interval began (at SND.UNA's _rate_mark bytes)
        self._rate_mark = 0
        self._rate_span = 0.0  # sample once the interval is this long: the SRTT of the last sample
        self.delivery_rate = 0.0
        self.rate_app_limited = False
        self._sent_all = True  # the last transmission sent everything queued (app-limited)

    # ================================================================== identity

    @property
    def label(self) -> str:
        return self.info.label

    @property
    def number(self) -> int:
        """The connection's number, unique within a stack run (:attr:`ConnInfo.number`)."""
        return self.info.number

    def __repr__(self) -> str:
        return f"<TcpConnection {self.label} {self.state.value}>"

    def _set_state(self, trigger: Trigger, now: float) -> None:
        old = self.state
        new = next_state(old, trigger)
        self.state = new
        if debug_enabled():  # the keywords cost three enum property reads per state change
            self._log.debug("tcp.state", old=old.value, new=new.value, trigger=trigger.value)
        if new is S.TIME_WAIT:
            # For the user the connection is over; the TCB only guards the 4-tuple now.
            self.events.append(ConnectionClosed())
            self._log_summary(now, "TIME-WAIT")
        if new is S.CLOSED and old is not S.CLOSED:
            self.closed_at = now
            self.timers.clear()
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
        entering TIME-WAIT (the 2 MSL that follow only guard the 4-tuple, RFC 9293 §3.6).
        Not even built when info lines are filtered out."""
        if not self._log.enabled("info"):
            return
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
        self.segs_in = 1  # the SYN (as Linux counts it for a child socket)
        receiver.take_syn(self, syn, now)
        self.snd_nxt = seq_add(self.iss, 1)
        self.snd_max = self.snd_nxt
        self._send_syn = not synack_sent
        if synack_sent:
            self.last_ack_sent = self.rcv_nxt  # RFC 7323 §4.3: what the cookie SYN-ACK acknowledged

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

    def readinto(self, buf: bytearray | memoryview) -> int:
        """Copy readable bytes into *buf*, as many as fit, and take them (like :meth:`read`)."""
        return receiver.read_into(self, buf)

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
        try:
            self.segs_in += 1
            if self.keepalive is not None:
                self.keepalive.on_receive(now)  # anything from the peer shows it is alive (MUST-29)
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
                        self.timers.close = now + 2 * self.options.msl
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
                    recovery.syn_acked(self, now)
                    self._become_established(now)
                else:
                    # §3.10.7.4: an unacceptable ACK in SYN-RECEIVED gets <SEQ=SEG.ACK><CTL=RST>.
                    self._rst_out.append(self._segment(ack, 0, RST))
                    return
            if not recovery.process_ack(self, seg, now):
                return
            st = self.state
            if st is S.CLOSED:
                return
            if st is S.TIME_WAIT:
                if flags & FIN:  # §3.10.7.4: a retransmitted FIN: acknowledge, restart 2MSL
                    self._ack_now = True
                    self.timers.close = now + 2 * self.options.msl
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
                    if not receiver.receive_text(self, seg, offset, wnd, now):
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
            receiver.check_peer_fin(self, now)
        finally:
            if self.probe is not None:  # the probe feature: after every segment (plugins/probe.py)
                self.probe.on_segment(self, seg, now)

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
        receiver.take_syn(self, seg, now)
        if ack_ok:
            self._syn_acked = True
            self.snd_una = seg.ack
            self.snd_wl2 = seg.ack
            recovery.syn_acked(self, now)
            self._set_state(Trigger.RECV_SYN_ACK, now)
            self._on_established(now)
            self._ack_now = True  # <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>
            # Data or FIN on the SYN-ACK continue at the sixth step.
            if len(seg.payload):
                receiver.receive_text(self, seg, 1, seq_diff(self.rcv_adv, self.rcv_nxt), now, syn_offset=1)
            if seg.flags & FIN and len(seg.payload) <= seq_diff(self.rcv_adv, seq_add(seg.seq, 1)):
                self._peer_fin_offset = len(seg.payload)
                receiver.check_peer_fin(self, now)
        else:
            # Simultaneous open (MUST-10): SYN-RECEIVED, send <SEQ=ISS><ACK=RCV.NXT><SYN,ACK>.
            self._set_state(Trigger.RECV_SYN, now)
            self._send_syn = True

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
            self.timers.close = now + t

    def _enter_time_wait(self, now: float) -> None:
        # MUST-13: remain in TIME-WAIT for 2*MSL.
        self.timers.clear()
        self.timers.close = now + 2 * self.options.msl

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
            sender.lower_mss(self, max(err.next_hop_mtu - 40 - self.option_bytes, 48))
            return
        # MUST-56: soft errors are reported, never fatal.
        self.soft_error = err
        self.events.append(SoftError(err))

    # ================================================================== timers

    def get_timer(self) -> float | None:
        """The earliest deadline (layers/tcp/timers.py), or ``None``."""
        return self.timers.earliest()

    def handle_timer(self, now: float) -> None:
        """Run every timer that expired by *now*; afterwards drain :meth:`segments_to_send`."""
        tm = self.timers
        if tm.close is not None and now >= tm.close:
            tm.close = None
            if self.state is S.TIME_WAIT:
                self._set_state(Trigger.TIMEOUT_2MSL, now)
            elif self.state is S.FIN_WAIT_2:
                self.failure = "fin_wait_2_timeout"
                self._set_state(Trigger.TIMEOUT, now)
            return
        if tm.ack is not None and now >= tm.ack:
            tm.ack = None
            self._ack_now = True
        if tm.sws is not None and now >= tm.sws:
            tm.sws = None
            self._sws_override = True
        for policy in tm.early:  # e.g. TLP's probe: it goes first, the RTO restarts behind it
            t = policy.deadline()
            if t is not None and now >= t:
                policy.on_timer(self, now)
        rto = tm.rto_deadline()
        if rto is not None and now >= rto:
            recovery.on_rto(self, now)
        if tm.persist is not None and now >= tm.persist:
            tm.persist = None
            self._probe_due = True
        for policy in tm.late:  # e.g. keep-alive, RACK's reorder timer
            t = policy.deadline()
            if t is not None and now >= t:
                policy.on_timer(self, now)

    # ================================================================== output

    def segments_to_send(self, now: float) -> list[TcpRepr]:
        """Everything to transmit now, in order (layers/tcp/sender.py). Clears the pending-ACK
        state it satisfies."""
        out = sender.segments_to_send(self, now)
        if self.probe is not None:  # the probe feature: after every batch sent (plugins/probe.py)
            self.probe.on_output(self, out, now)
        return out

    # ================================================================== plugin-facing verbs
    # What plugins that own an algorithm (plugins/keepalive.py, plugins/rack_tlp.py) may call,
    # beyond the verbs every plugin has (layers/tcp/view.py: ConnectionVerbs); listed in
    # layers/tcp/view.py's ConnectionView.

    @property
    def send_idle(self) -> bool:
        """Nothing of ours is unacknowledged or queued (RFC 1122 §4.2.3.6: keep-alive only then)."""
        return self.snd_una == self.snd_max and not len(self.sndbuf)

    @property
    def retransmit_at(self) -> float | None:
        """The retransmission timer's deadline (RFC 6298 §5), or ``None``."""
        return self.timers.rto

    def send_keepalive_probe(self, *, garbage_octet: bool = False) -> None:
        """Queue a keep-alive probe ``<SEQ=SND.UNA-1><CTL=ACK>`` with no data (one garbage octet
        with *garbage_octet*), which the peer must answer with an ACK (RFC 9293 §3.8.4, SHLD-12, MAY-6)."""
        seg = self._segment(seq_add(self.snd_una, -1), 0, ACK, b"\0" if garbage_octet else b"")
        seg.rexmit = True  # a probe, not new data
        self._fill_ack(seg)
        self._probe_out = seg
        self.keepalive_probes_sent += 1

    def give_up(self, reason: str, message: str, now: float) -> None:
        """The peer is gone: tell the user (:class:`ConnectionFailed`) and enter CLOSED without
        a RST (RFC 1122 §4.2.3.6; RFC 9293 §3.8.3 R2)."""
        self.failure = reason
        self.events.append(ConnectionFailed(reason, message))
        self._set_state(Trigger.TIMEOUT, now)

    def install_loss_detector(self, detector: LossDetector) -> None:
        """Install a loss detector (RACK-TLP) and its timers; it needs the SACK scoreboard."""
        self.loss_detector = detector
        for timer, before_rto in detector.timers:
            self.timers.add(timer, before_rto=before_rto)

    def request_tail_probe(self, now: float) -> None:
        """Send a tail loss probe with the next output: one new segment if the window allows,
        else the last segment again; the retransmission timer restarts behind it (RFC 8985 §7.3)."""
        self._tlp_due = True
        self.timers.rto = now + self.rtt.current()

    def mark_lost(self, start: int, end: int) -> None:
        """Mark the scoreboard range [*start*, *end*) lost: recovery retransmits it (RFC 6675 §5)."""
        if self.scoreboard is not None:
            self.scoreboard.mark_lost(start, end)

    def start_loss_recovery(self, now: float) -> None:
        """Enter SACK recovery unless recovering already or still inside the last recovery's
        window (RFC 6675 §5 (a), RFC 8985 §6.3)."""
        if not self.in_recovery and seq_gt(self.snd_una, self.recover):
            recovery.enter_sack_recovery(self, now)

    # ================================================================== events

    def next_event(self) -> TcpEvent | None:
        """The oldest undelivered event, or ``None``."""
        return self.events.popleft() if self.events else None

    @property
    def phase(self) -> str:
        """The congestion-control phase: ``fast_recovery`` (RFC 5681 §3.2, RFC 6582, RFC 6675 §5),
        ``rto_recovery`` (after a retransmission timeout until SND.UNA passes its recovery point,
        RFC 6675 §5.1), ``css`` (HyStart++'s Conservative Slow Start, RFC 9406 §4.2),
        ``slow_start`` (cwnd < ssthresh, RFC 5681 §3.1) or ``congestion_avoidance``."""
        if self.in_recovery:
            return "fast_recovery"
        if self._after_rto:
            return "rto_recovery"
        cc = self.cc
        if cc.cwnd < cc.ssthresh:
            ss = self.slow_start
            return "css" if ss is not None and getattr(ss, "css_active", False) else "slow_start"
        return "congestion_avoidance"

    def status(self) -> dict[str, Any]:
        """A snapshot for ``ss``-style views (tcpstack/control.py) and the connection summary:
        bytes, seconds (times on the stack's clock) and sequence numbers as the connection keeps
        them."""
        sb = self.scoreboard
        mss = self.snd_mss
        fin_acked = self._fin_seq_known and seq_gt(self.snd_una, self._fin_seq)
        # Data sent and not acknowledged: the flight less the SYN and FIN in it (bounded by the
        # window, so the 32-bit sequence difference never wraps).
        flight = seq_diff(self.snd_max, self.snd_una)
        data_out = max(0, flight - (0 if self._syn_acked else 1) - (1 if self._fin_seq_known and not fin_acked else 0))
        if sb is not None and self.sack_recovery:
            retrans_out = -(-sb.rexmit.total // mss)  # retransmitted, neither SACKed nor acked since
        elif self._rexmit_until is not None:  # a go-back-N resend (after a timeout or a lower MSS)
            retrans_out = -(-seq_diff(self.snd_nxt, self.snd_una) // mss)
        else:
            retrans_out = 1 if self.in_recovery else 0  # NewReno: the head retransmitted (RFC 6582 §3.2)
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
            # (from here on: for `tcpstack ss`)
            "number": self.info.number,
            "phase": self.phase,
            "rttvar": self.rtt.rttvar,
            "min_rtt": self.rtt.min_rtt,
            "rto_backoff": self.rtt.backoff,
            "snd_wscale": self.snd_wscale,
            "rcv_wscale": self.rcv_wscale,
            "local_mss": self.local_mss,
            "option_bytes": self.option_bytes,
            "syn_acked": self._syn_acked,
            "fin_acked": fin_acked,
            "fin_received": self.eof_received,
            "data_in_flight": data_out,
            "retransmitted_bytes": self.retransmitted_bytes,
            "segs_in": self.segs_in,
            "segs_out": self.segs_out,
            "retrans_out": retrans_out,
            "sacked_bytes": sb.sacked.total if sb is not None else 0,
            "lost_bytes": sb.lost.total if sb is not None else 0,
            "dsack_segs": self._dsack_segs,
            "unsent": max(0, len(self.sndbuf) - data_out),
            "created_at": self.created_at,
            "last_send_at": self._last_send,
            "last_recv_at": self._last_recv,
            "last_ack_at": self._last_ack,
            "delivery_rate": self.delivery_rate,
            "rate_app_limited": self.rate_app_limited,
        }
