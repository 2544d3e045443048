"""What a plugin sees of a TCP connection: :class:`ConnectionView`.

A per-connection plugin (an :class:`~layers.tcp.policy.Extension`) is handed the connection on
every call, typed as :class:`ConnectionView`: read-only fields (state, sequence variables, MSS,
window shifts, the congestion controller and the RTT estimator) and a handful of verbs, the
only ways a plugin changes the connection:

- :meth:`~ConnectionView.request_ack`: send an ACK at the next output (RFC 7323 §5.3: PAWS
  answers a rejected segment with one);
- :meth:`~ConnectionView.set_send_mss`: the effective send MSS changed (RFC 9293 §3.7.1,
  MUST-16: options that every segment carries take room from the payload);
- :meth:`~ConnectionView.sample_rtt`: one RTT measurement for the RFC 6298 estimator
  (RFC 7323 §4: timestamps give one per ACK);
- :meth:`~ConnectionView.time_rtt_by_timestamps`: stop Karn timing, the plugin samples instead;
- :meth:`~ConnectionView.set_window_scale`: the shifts both sides agreed on (RFC 7323 §2.2);
- :meth:`~ConnectionView.start_sack_scoreboard`: SACK was negotiated, keep a scoreboard for
  RFC 6675 loss recovery;
- for plugins that own an algorithm on a timer of their own (keep-alive probing, RACK-TLP):
  :meth:`~ConnectionView.send_keepalive_probe`, :meth:`~ConnectionView.give_up`,
  :meth:`~ConnectionView.install_loss_detector`, :meth:`~ConnectionView.request_tail_probe`,
  :meth:`~ConnectionView.mark_lost`, :meth:`~ConnectionView.start_loss_recovery`.

The view is a :class:`typing.Protocol` that :class:`~layers.tcp.connection.TcpConnection`
satisfies structurally: the fields are the connection's own attributes (no copies, no
properties on the segment path), and the verbs are small methods of :class:`ConnectionVerbs`,
a base class of the connection. Passing the connection to a plugin costs nothing more than
before; the type checker (``mypy``, which covers ``plugins/`` without ``Any``) and ruff's
private-member rule (SLF001) keep plugins to this surface.

``now`` is not a field: every call a plugin gets carries it as an argument (sans-IO: the
connection never reads a clock).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from layers.tcp.scoreboard import Scoreboard

if TYPE_CHECKING:
    from layers.tcp.congestion import CongestionControlProtocol
    from layers.tcp.connection import TcpConnection
    from layers.tcp.policy import ConnInfo, LossDetector, TcpOptions
    from layers.tcp.rtt import RttEstimator
    from layers.tcp.state import TcpState

__all__ = ["ConnectionVerbs", "ConnectionView", "ReceiveQueueView", "RttView"]


class RttView(Protocol):
    """The connection's RTT estimator (RFC 6298), read-only. Times in seconds."""

    @property
    def srtt(self) -> float | None:
        """SRTT; ``None`` before the first sample."""

    @property
    def rttvar(self) -> float:
        """RTTVAR."""

    @property
    def rto(self) -> float:
        """The RTO without backoff (RFC 6298 (2.2)-(2.5))."""

    @property
    def min_rtt(self) -> float | None:
        """The smallest sample so far (RFC 8985 §6.2: min_RTT)."""

    @property
    def latest(self) -> float | None:
        """The most recent sample."""

    @property
    def samples(self) -> int:
        """How many samples were taken (it changes when a new one arrives)."""

    def current(self) -> float:
        """The RTO to arm now, with the exponential backoff applied (RFC 6298 (5.5))."""


class ReceiveQueueView(Protocol):
    """The receive buffer, read-only, in *stream offsets*: offset 0 is the first byte after the
    peer's SYN; ``nxt`` is the offset of RCV.NXT. Blocks are ``(start, end)`` offsets of
    out-of-order data held above ``nxt``; each lookup costs O(log n) in the blocks held."""

    @property
    def nxt(self) -> int:
        """The stream offset of RCV.NXT."""

    @property
    def has_gaps(self) -> bool:
        """Out-of-order data is held."""

    def holds(self, start: int, end: int) -> bool:
        """``[start, end)`` lies inside one block held."""

    def block_at(self, offset: int) -> tuple[int, int] | None:
        """The block that holds *offset*, if any."""

    def top_blocks(self, k: int) -> list[tuple[int, int]]:
        """The *k* highest blocks, highest first."""


class ConnectionView(Protocol):
    """One TCP connection as a plugin sees it: read-only fields and the verbs that change it.

    Sequence numbers are 32-bit, modulo 2**32: compare them with ``layers.tcp.seq``
    (``seq_lt``, ``seq_diff``, ...), never with ``<``. ``TcpConnection`` satisfies this
    protocol; tests may pass any object that does.
    """

    # ------------------------------------------------------------------ identity and state

    @property
    def info(self) -> ConnInfo:
        """Addresses, ports, the MSS known so far and ``label`` (as in logs)."""

    @property
    def label(self) -> str:
        """``"10.0.0.2:80>10.0.0.1:41234"``: the connection as logs name it."""

    @property
    def options(self) -> TcpOptions:
        """The connection's validated options (buffers, RTO bounds, ...)."""

    @property
    def state(self) -> TcpState:
        """The RFC 9293 §3.3.2 state. In :meth:`Extension.syn_options
        <layers.tcp.policy.Extension.syn_options>`, ``SYN_SENT`` means our SYN (active open)
        and ``SYN_RECEIVED`` our SYN-ACK (passive open); in ``on_peer_syn`` the same two tell
        a SYN-ACK from a SYN."""

    @property
    def passive(self) -> bool:
        """Opened by a listener (MUST-11)."""

    # ------------------------------------------------------------------ sequence variables (RFC 9293 §3.3.1)

    @property
    def iss(self) -> int:
        """Our initial sequence number (RFC 6528: keyed, unpredictable)."""

    @property
    def irs(self) -> int:
        """The peer's initial sequence number."""

    @property
    def snd_una(self) -> int:
        """SND.UNA: the oldest unacknowledged sequence number."""

    @property
    def snd_nxt(self) -> int:
        """SND.NXT: the next sequence number to send (back at SND.UNA after a timeout)."""

    @property
    def snd_max(self) -> int:
        """The highest sequence number ever sent, plus one."""

    @property
    def snd_wnd(self) -> int:
        """SND.WND, in bytes (already scaled)."""

    @property
    def rcv_nxt(self) -> int:
        """RCV.NXT: the next sequence number expected from the peer."""

    @property
    def last_ack_sent(self) -> int:
        """RFC 7323 §4.3 Last.ACK.sent: the ACK field of the last segment we sent."""

    @property
    def in_flight(self) -> int:
        """Bytes sent and not yet acknowledged (SND.MAX - SND.UNA)."""

    @property
    def rcv_adv(self) -> int:
        """RCV.ADV: the right edge of the window we advertised (RCV.NXT + the window last sent)."""

    # ------------------------------------------------------------------ history

    @property
    def created_at(self) -> float:
        """When the connection was made (the ``now`` of its creation)."""

    @property
    def retransmits(self) -> int:
        """Segments retransmitted so far (a TSO super-segment counts its segments)."""

    # ------------------------------------------------------------------ sizes and windows

    @property
    def local_mss(self) -> int:
        """The MSS we advertise (the MSS option of our SYN): the receive MSS."""

    @property
    def snd_mss(self) -> int:
        """The effective send MSS (RFC 9293 §3.7.1), less the bytes of options every segment
        carries; change it with :meth:`set_send_mss`."""

    @property
    def snd_wscale(self) -> int:
        """The shift applied to the peer's window field (RFC 7323 §2); 0 without scaling."""

    @property
    def rcv_wscale(self) -> int:
        """The shift applied to the window we advertise."""

    # ------------------------------------------------------------------ algorithms and buffers

    @property
    def cc(self) -> CongestionControlProtocol:
        """The congestion controller (``cwnd``, ``ssthresh`` in bytes; ``on_ecn`` and the
        other events go through it, so the algorithm decides what they do)."""

    @property
    def rtt(self) -> RttView:
        """The RTT estimator (SRTT, RTO, min_RTT)."""

    @property
    def rcvbuf(self) -> ReceiveQueueView:
        """The receive buffer: in-order data and out-of-order blocks, in stream offsets."""

    @property
    def scoreboard(self) -> Scoreboard | None:
        """The RFC 6675 scoreboard, once SACK was negotiated (:meth:`start_sack_scoreboard`)."""

    # ------------------------------------------------------------------ verbs

    def request_ack(self) -> None:
        """Send an ACK at the next output, whatever the ACK policy says (segments are sent
        after the whole batch of input, so requests in one batch give one ACK, MUST-58)."""

    def set_send_mss(self, mss: int) -> None:
        """Make *mss* the effective send MSS: of the connection, of ``info`` and of the
        congestion controller (RFC 9293 §3.7.1)."""

    def sample_rtt(self, rtt: float) -> None:
        """Feed one RTT measurement, in seconds, to the RFC 6298 estimator."""

    def time_rtt_by_timestamps(self, tsval_at: Callable[[float], int]) -> None:
        """The plugin takes RTT samples from timestamps (RFC 7323 §4): the connection stops
        its own Karn timing, and RFC 3522 Eifel detection compares echoed TSvals with
        ``tsval_at(t)``, the TSval a segment sent at time *t* carried."""

    def set_window_scale(self, snd_shift: int, rcv_shift: int) -> None:
        """Window scaling is in force (RFC 7323 §2.2): the peer's window fields are shifted
        left by *snd_shift*, ours right by *rcv_shift*."""

    def start_sack_scoreboard(self) -> None:
        """SACK was negotiated: keep an RFC 6675 scoreboard of the peer's SACK blocks, which
        loss recovery then uses."""

    # ------------------------------------------------------------------ for plugins that own an algorithm
    # Keep-alive probing (plugins/keepalive.py) and RACK-TLP (plugins/rack_tlp.py) run on
    # timers of their own (layers/tcp/policy.py: TimerPolicy) and act through these.

    @property
    def in_recovery(self) -> bool:
        """Fast recovery or SACK recovery is in progress (RFC 6675 §5, RFC 6582)."""

    @property
    def phase(self) -> str:
        """The congestion-control phase: ``fast_recovery``, ``rto_recovery``, ``css``
        (HyStart++'s Conservative Slow Start), ``slow_start`` or ``congestion_avoidance``
        (what ``tcpstack ss`` and the probe show)."""

    @property
    def send_idle(self) -> bool:
        """Nothing of ours is unacknowledged or queued (RFC 1122 §4.2.3.6: keep-alive only then)."""

    @property
    def retransmit_at(self) -> float | None:
        """The retransmission timer's deadline (RFC 6298 §5), or ``None``."""

    def send_keepalive_probe(self, *, garbage_octet: bool = False) -> None:
        """Queue a keep-alive probe ``<SEQ=SND.UNA-1><CTL=ACK>`` (RFC 9293 §3.8.4)."""

    def give_up(self, reason: str, message: str, now: float) -> None:
        """The peer is gone: tell the user and enter CLOSED without a RST (RFC 1122 §4.2.3.6)."""

    def install_loss_detector(self, detector: LossDetector) -> None:
        """Install a loss detector (RACK-TLP) and its timers; it needs the SACK scoreboard."""

    def request_tail_probe(self, now: float) -> None:
        """Send a tail loss probe with the next output (RFC 8985 §7.3)."""

    def mark_lost(self, start: int, end: int) -> None:
        """Mark the scoreboard range [*start*, *end*) lost: recovery retransmits it (RFC 6675 §5)."""

    def start_loss_recovery(self, now: float) -> None:
        """Enter SACK recovery unless recovering already (RFC 6675 §5 (a), RFC 8985 §6.3)."""


class ConnectionVerbs:
    """The verbs of :class:`ConnectionView`, a base class of
    :class:`~layers.tcp.connection.TcpConnection`. Each is called at most a few times per
    connection or per received segment, never on a path that pays for the extra call otherwise.

    The annotations name the connection attributes the verbs write; the connection sets them in
    its ``__init__``."""

    _ack_now: bool
    info: ConnInfo
    snd_mss: int
    cc: CongestionControlProtocol
    rtt: RttEstimator
    ts_rtt: bool
    tsval_at: Callable[[float], int] | None
    snd_wscale: int
    rcv_wscale: int
    scoreboard: Scoreboard | None

    def request_ack(self) -> None:
        """See :meth:`ConnectionView.request_ack`."""
        self._ack_now = True

    def set_send_mss(self, mss: int) -> None:
        """See :meth:`ConnectionView.set_send_mss`."""
        self.snd_mss = mss
        self.info.mss = mss
        self.cc.set_mss(mss)

    def sample_rtt(self, rtt: float) -> None:
        """See :meth:`ConnectionView.sample_rtt`."""
        self.rtt.sample(rtt)

    def time_rtt_by_timestamps(self, tsval_at: Callable[[float], int]) -> None:
        """See :meth:`ConnectionView.time_rtt_by_timestamps`."""
        self.ts_rtt = True
        self.tsval_at = tsval_at

    def set_window_scale(self, snd_shift: int, rcv_shift: int) -> None:
        """See :meth:`ConnectionView.set_window_scale`."""
        self.snd_wscale = snd_shift
        self.rcv_wscale = rcv_shift

    def start_sack_scoreboard(self) -> None:
        """See :meth:`ConnectionView.start_sack_scoreboard`."""
        self.scoreboard = Scoreboard(self.snd_mss)


if TYPE_CHECKING:

    def _connection_is_a_view(conn: TcpConnection) -> ConnectionView:
        """Checked by mypy only: TcpConnection satisfies the protocol."""
        return conn
