"""Per-connection settings and the policy objects a connection calls on its hot path.

A connection is built from a :class:`TcpSetup`: the addresses, the validated
:class:`TcpOptions`, and plain policy objects (ACK timing, small-segment sending, option
extensions, congestion control, slow start). Plugins install policies once, when the connection
opens, through the ``tcp_connection_setup`` hook; after that the per-segment path calls these
objects directly, never pluggy (docs/architecture.md).

Each slot has a :class:`~typing.Protocol` type (:class:`AckPolicyProtocol`,
:class:`SendPolicyProtocol`, :class:`ExtensionProtocol`, :class:`SlowStartProtocol`,
:class:`KeepAlivePolicy`, and :class:`~layers.tcp.congestion.CongestionControlProtocol`; a
plugin that owns an algorithm on a timer of its own implements :class:`TimerPolicy`, and
RACK-TLP the :class:`LossDetector`): a policy need not subclass anything. The base classes
here are the defaults and convenient parents: ACK at once, no Nagle, an extension that does
nothing, and RFC 5681 congestion control
(:class:`~layers.tcp.congestion.CongestionControl`). Extensions see the connection through
:class:`~layers.tcp.view.ConnectionView`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from socket import inet_ntoa
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from framework.errors import PluginError
from framework.lazylog import LazyLog

if TYPE_CHECKING:
    from layers.tcp.congestion import CongestionControlProtocol
    from layers.tcp.view import ConnectionView, RttView
    from layers.tcp.wire import TcpRepr

T = TypeVar("T")


class DecisionLog(Protocol):
    """A logger for decisions: ``log.debug("tcp.decision", decision=..., rfc=..., t=now)``."""

    def debug(self, event: str, /, **kw: object) -> object: ...


def decision_log(label: str, plugin: str) -> DecisionLog:
    """A logger for a policy's decisions on one connection: debug-level ``tcp.decision``
    events that name the connection and the plugin.

    A :class:`~framework.lazylog.LazyLog`: it binds nothing until a line is emitted at an
    enabled level (a filtered-out call costs one identity check and one flag test beyond the
    call), and it follows the structlog configuration of the moment it emits."""
    return LazyLog("tcpstack.decision", label, plugin)


@dataclass(slots=True)
class TcpOptions:
    """Per-connection settings (stack-wide defaults in ``[[layers]] type = "tcp"``, overridden
    per listener and per connection in the API)."""

    send_buffer: int = field(default=1 << 20, metadata={"min": 1, "max": 1 << 30})
    """Bytes the send buffer holds (written but not yet acknowledged)."""

    recv_buffer: int = field(default=1 << 19, metadata={"min": 1, "max": 1 << 30})
    """Bytes the receive buffer holds; the advertised window is its free space. Without window
    scaling, windows above 65535 cannot be advertised."""

    mss: int | None = field(default=None, metadata={"min": 88, "max": 65495})
    """MSS to advertise; default: the link MTU minus 40 (RFC 9293 §3.7.1, RFC 6691)."""

    min_rto: float = field(default=0.2, metadata={"min": 0.001, "max": 60.0})
    """Lower bound of the retransmission timeout. RFC 6298 (2.4) says 1 s; like Linux we
    default to 200 ms, which RFC 6298 permits as a deployment choice."""

    max_rto: float = field(default=60.0, metadata={"min": 1.0, "max": 600.0})
    """Upper bound of the retransmission timeout (RFC 6298 (2.5): at least 60 s)."""

    retries_timeout: float = field(default=100.0, metadata={"min": 1.0, "max": 86400.0})
    """R2 for data (RFC 9293 §3.8.3, MUST-20): give up and abort after retransmitting for
    this long without progress (at least 100 s, SHLD-11) and at least 8 times."""

    syn_retries_timeout: float = field(default=180.0, metadata={"min": 1.0, "max": 86400.0})
    """R2 for SYN and SYN-ACK (MUST-23: at least 3 minutes)."""

    user_timeout: float | None = field(default=None, metadata={"min": 0.1, "max": 86400.0})
    """Abort when sent data stays unacknowledged this long (RFC 9293 §3.10.8); ``None``: off."""

    msl: float = field(default=30.0, metadata={"min": 0.0, "max": 240.0})
    """Maximum segment lifetime; TIME-WAIT lasts 2*MSL (MUST-13). RFC 9293 §3.4.2 suggests
    2 minutes as an engineering choice; we default to 30 s (TIME-WAIT 60 s, as Linux)."""

    fin_wait_2_timeout: float | None = field(default=60.0, metadata={"min": 0.1, "max": 86400.0})
    """Close a connection left in FIN-WAIT-2 after the user closed it (RFC 9293 §3.8.6.1 allows
    reclaiming it); ``None`` waits forever."""

    challenge_acks_per_second: int = field(default=10, metadata={"min": 1, "max": 100000})
    """Per-connection rate limit of RFC 5961 challenge ACKs (RFC 5961 §7)."""

    sws_override: float = field(default=0.2, metadata={"min": 0.1, "max": 1.0})
    """Sender SWS override timeout (RFC 1122 §4.2.3.4: 0.1-1 s)."""

    features: dict[str, Any] = field(default_factory=dict)
    """Per-connection feature overrides: ``{name: settings table, True or None}``; ``None`` or
    ``False`` turns off a feature the stack enables by default. Validated against the
    features plugins register (docs/plugins.md)."""

    congestion_control: str | None = None
    """Congestion-control algorithm for this connection; default: the stack's."""

    initial_window: Literal["rfc5681", "rfc6928"] = "rfc6928"
    """Initial congestion window: RFC 5681 §3.1 (2-4 segments) or RFC 6928 (10 segments,
    Experimental, what Linux and most modern stacks use)."""

    syncookies: Literal["auto", "always", "never"] = "auto"
    """SYN cookies on a listener (RFC 4987 §3.6): ``auto`` answers with a cookie, keeping no
    state, only while the listener's SYN queue is full; ``always`` for every SYN; ``never``
    drops SYNs once the SYN queue is full."""

    min_snd_mss: int = field(default=48, metadata={"min": 1, "max": 536})
    """Floor of the send MSS whatever the peer's MSS option says, as Linux's tcp_min_snd_mss
    (CVE-2019-11479): a peer announcing MSS 1 cannot make us send a segment per byte. ``1``
    follows RFC 9293 §3.7.1 (MUST-15) to the letter."""

    rfc1337: bool = True
    """Ignore a RST in TIME-WAIT (RFC 1337 §3, "TIME-WAIT assassination"), so the 2*MSL guard
    is never cut short; ``false`` restores RFC 9293 §3.10.7.4 (a RST ends TIME-WAIT)."""

    ooo_budget: int | None = field(default=None, metadata={"min": 4096, "max": 1 << 32})
    """Memory budget (bytes) for out-of-order data held on this connection, each piece counted
    at its payload plus a fixed overhead (``PIECE_OVERHEAD`` in layers/tcp/buffers.py, 224
    bytes, measured); a segment that would exceed it is dropped before it is acknowledged or SACKed.
    Default: twice ``recv_buffer`` (at least 64 KiB), room for a full window of MSS-sized
    segments with their overhead."""


@dataclass(slots=True)
class ConnInfo:
    """What a policy may know about its connection."""

    local: tuple[bytes, int]
    remote: tuple[bytes, int]
    mss: int
    """Effective send MSS (RFC 9293 §3.7.1) once known; before the handshake the local MSS."""
    number: int = 0
    """The connection's number, unique within a stack run (the TCP layer counts them from 1;
    ``up --workers`` interleaves its workers' counts): the ID ``tcpstack ss``, ``probe`` and
    ``plot`` show and take. 0: not numbered (a connection built outside a TCP layer)."""
    label: str = field(init=False, repr=False, compare=False)
    """``local>remote`` for logs: formatted once per connection, not once per logger."""

    def __post_init__(self) -> None:
        la, lp = self.local
        ra, rp = self.remote
        self.label = f"{_dotted(la)}:{lp}>{_dotted(ra)}:{rp}"


def _dotted(addr: bytes) -> str:
    """An IPv4 address as ``a.b.c.d`` (socket.inet_ntoa, in C); other lengths byte by byte."""
    return inet_ntoa(addr) if len(addr) == 4 else ".".join(map(str, addr))


class AckPolicyProtocol(Protocol):
    """The ``setup.ack_policy`` slot: when to acknowledge received data."""

    def on_data(self, seg_len: int, now: float) -> float | None:
        """*seg_len* bytes of in-order data arrived: return the latest time the ACK may be
        sent, or ``None`` to ACK immediately."""

    def on_ack_sent(self) -> None:
        """An ACK (pure or piggy-backed) just left."""


class SendPolicyProtocol(Protocol):
    """The ``setup.send_policy`` slot: whether to send a segment smaller than the MSS now."""

    def may_send_small(self, size: int, in_flight: int, now: float) -> bool:
        """*size* bytes (less than a full segment) are ready; *in_flight* bytes are unacked."""


class ExtensionProtocol(Protocol):
    """An entry of the ``setup.extensions`` list; :class:`Extension` documents the calls."""

    name: str
    active: bool
    order: int

    def syn_options(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None: ...
    def on_peer_syn(self, conn: ConnectionView, syn: TcpRepr, now: float) -> None: ...
    def check(self, conn: ConnectionView, seg: TcpRepr, now: float) -> bool: ...
    def accepted(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None: ...
    def decorate(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None: ...


class SlowStartProtocol(Protocol):
    """The ``setup.slow_start`` slot (HyStart++, RFC 9406): asked during slow start how much of
    each ACK the algorithm's slow start may grow cwnd by."""

    def credit(
        self, cc: CongestionControlProtocol, rtt: RttView, acked: int, una: int, snd_nxt: int, now: float
    ) -> int:
        """An ACK of *acked* new bytes arrived in slow start (``cc.cwnd < cc.ssthresh``); *una*
        is the new SND.UNA, *snd_nxt* the highest sequence number sent. Return how many of the
        bytes count for growth; may end slow start by setting ``cc.ssthresh``."""

    def on_idle_restart(self, cc: CongestionControlProtocol, cwnd_before: int) -> None:
        """RFC 5681 §4.1 restarted cwnd after an idle period; it was *cwnd_before*."""

    @property
    def css_active(self) -> bool:
        """Whether slow start is in HyStart++'s Conservative Slow Start now (RFC 9406 §4.2), read
        by ``tcpstack ss`` for its ``phase`` and by the probe for its ``css`` phase (never on the
        per-segment path of a connection without the probe)."""


class ConnectionProbe(Protocol):
    """The ``setup.probe`` slot (the ``probe`` feature, plugins/probe.py): records the
    connection's state after each event. A connection without a probe pays one ``is not None``
    test at each of the two points below, nothing else.

    - :meth:`on_segment` after an arriving segment was processed, by
      :meth:`~layers.tcp.connection.TcpConnection.segment_received` or by the receive fast path
      (layers/tcp/fastpath.py), so every ACK is seen;
    - :meth:`on_output` after each batch of output (:meth:`segments_to_send`), also an empty
      one: *segs* are the segments handed to the layer below, in order;
    - :meth:`on_delete` once, when the TCP layer deletes the connection (not per segment).

    It must not change the connection; it reads it through :class:`~layers.tcp.view.ConnectionView`."""

    def on_segment(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None: ...

    def on_output(self, conn: ConnectionView, segs: list[TcpRepr], now: float) -> None: ...

    def on_delete(self, conn: ConnectionView, now: float) -> None: ...


class AckPolicy:
    """When to acknowledge received data. The default acknowledges at once; ACKs are still
    aggregated over one batch of received frames (RFC 9293 MUST-58)."""

    __slots__ = ()

    def on_data(self, seg_len: int, now: float) -> float | None:
        """Return the latest time the ACK may be sent, or ``None`` to ACK immediately."""
        return None

    def on_ack_sent(self) -> None:
        """An ACK (pure or piggy-backed) just left."""


class SendPolicy:
    """Whether to send a segment smaller than the MSS now (Nagle lives here). Default: yes."""

    __slots__ = ()

    def may_send_small(self, size: int, in_flight: int, now: float) -> bool:
        """*size* bytes (less than a full segment) are ready; *in_flight* bytes are unacked."""
        return True


class Extension:
    """A per-connection participant in option negotiation and per-segment option processing
    (window scaling, timestamps, SACK). Plugins subclass it and append an instance to
    ``setup.extensions``. Only the methods an extension overrides are called, and only after
    the handshake showed both sides want it (``active``); a connection without extensions
    pays nothing.

    The connection calls, in this order:

    - :meth:`syn_options` for each SYN or SYN-ACK it sends (add options to *seg*);
    - :meth:`on_peer_syn` with the peer's SYN or SYN-ACK (negotiate; set ``active``);
    - :meth:`check` for every later arriving segment, before the sequence check (RFC 7323's
      PAWS goes here); returning ``False`` drops the segment;
    - :meth:`accepted` for every arriving segment that passed the sequence check;
    - :meth:`decorate` for every outgoing segment other than SYN and RST.
    """

    name: str = "extension"
    active: bool = False
    order: int = 50
    """Extensions run in ascending ``order`` (then installation order): fixed-size options
    first, an extension that fills the remaining option space (SACK) last."""

    def syn_options(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None:
        """Add this extension's options to an outgoing SYN (``conn.state`` is
        ``TcpState.SYN_SENT``) or SYN-ACK (``SYN_RECEIVED``: add them only if the peer offered)."""

    def on_peer_syn(self, conn: ConnectionView, syn: TcpRepr, now: float) -> None:
        """The peer's SYN (passive open: ``conn.state`` is ``SYN_RECEIVED``) or SYN-ACK
        (active open: ``SYN_SENT``) arrived."""

    def check(self, conn: ConnectionView, seg: TcpRepr, now: float) -> bool:
        """Vet an arriving segment before the sequence check; ``False`` drops it."""
        return True

    def accepted(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None:
        """An arriving segment passed the sequence check."""

    def decorate(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None:
        """Add options to an outgoing non-SYN, non-RST segment."""


class TimerPolicy(Protocol):
    """A plugin's own timer on one connection (keep-alive, RACK's reorder timer, TLP's probe).

    The connection's timers (layers/tcp/timers.py) ask it for its :meth:`deadline` whenever
    they look for the earliest one, and run :meth:`on_timer` once that time has come. Install
    it with ``conn.timers.add(policy)`` (``before_rto=True``: run before the retransmission
    timer, for a probe the RTO restarts behind)."""

    def deadline(self) -> float | None:
        """When :meth:`on_timer` should run next (absolute time), or ``None``."""
        ...

    def on_timer(self, conn: ConnectionView, now: float) -> None:
        """The deadline has come (run only while it is not ``None`` and ``now >= deadline()``)."""
        ...

    def cancel(self) -> None:
        """Forget the deadline: the connection closed or entered TIME-WAIT."""
        ...


class KeepAlivePolicy(TimerPolicy, Protocol):
    """Keep-alive probing (RFC 1122 §4.2.3.6), installed in ``TcpSetup.keepalive``."""

    def on_receive(self, now: float) -> None:
        """Anything arrived from the peer (called once per arriving segment, so keep it cheap)."""
        ...


class LossDetector(Protocol):
    """Time-based loss detection beside RFC 6675's DupThresh (RACK-TLP, RFC 8985), installed
    on a connection with :meth:`ConnectionView.install_loss_detector` once SACK is in use.

    Positions (*start*, *end*, *una*, *sacked*) are those of the SACK scoreboard
    (layers/tcp/scoreboard.py), not sequence numbers, so they never wrap. The connection
    calls, on its per-segment path:

    - :meth:`on_transmit` for every data segment sent or sent again (SND.MAX, so ``in_flight``,
      already counts it);
    - :meth:`on_progress` when new data or a FIN went out or new data was acknowledged;
    - :meth:`on_ack_received` for every ACK that acknowledged or SACKed something;
    - :meth:`on_recovery`, :meth:`on_dsack` and :meth:`on_rto` when recovery starts, a D-SACK
      arrives, or the retransmission timer fires.

    Its timers are the :class:`TimerPolicy` objects in ``timers`` (with ``before_rto``)."""

    @property
    def timers(self) -> tuple[tuple[TimerPolicy, bool], ...]:
        """Its timers, each with ``before_rto`` (run before the retransmission timer)."""
        ...

    def on_transmit(self, conn: ConnectionView, start: int, end: int, now: float, retransmit: bool) -> None: ...

    def on_progress(self, conn: ConnectionView, now: float) -> None: ...

    def on_ack_received(self, conn: ConnectionView, una: int, sacked: list[tuple[int, int]], now: float) -> None: ...

    def on_recovery(self) -> None: ...

    def on_dsack(self) -> None: ...

    def on_rto(self) -> None: ...


def overrides(ext: ExtensionProtocol, method: str) -> bool:
    """True if *ext* implements *method* itself (the connection skips inherited no-ops, and the
    methods a class that cannot inherit them, a compiled one, names in ``noop_hooks``)."""
    if method in getattr(type(ext), "noop_hooks", ()):
        return False
    return getattr(type(ext), method) is not getattr(Extension, method)


_PER_SEGMENT_HOOKS = ("check", "accepted", "decorate")
_hooks_of_class: dict[type, tuple[bool, bool, bool]] = {}


def per_segment_hooks(ext: ExtensionProtocol) -> tuple[bool, bool, bool]:
    """:func:`overrides` of ``check``, ``accepted`` and ``decorate``, worked out once per class
    (a connection asks for each active extension when the SYN exchange ends: a dozen lookups
    per connection otherwise; docs/architecture.md, "Connection cost"). A class changed after
    its first connection keeps its first answer."""
    cls = type(ext)
    hooks = _hooks_of_class.get(cls)
    if hooks is None:
        check, accepted, decorate = (overrides(ext, method) for method in _PER_SEGMENT_HOOKS)
        hooks = _hooks_of_class[cls] = (check, accepted, decorate)
    return hooks


@dataclass(slots=True)
class TcpSetup:
    """Everything a new connection is built from; plugins fill in the policy slots.

    ``features`` maps each feature enabled on this connection to its validated settings
    object. ``enabled`` lists, after setup, the features some plugin actually installed
    something for (what ``ss`` and the connection summary show).
    """

    info: ConnInfo
    options: TcpOptions
    features: dict[str, Any] = field(default_factory=dict)
    """Every feature enabled on this connection: its validated settings object (read it typed
    with :meth:`feature`); ``None`` for a feature turned off."""
    ack_policy: AckPolicyProtocol = field(default_factory=AckPolicy)
    send_policy: SendPolicyProtocol = field(default_factory=SendPolicy)
    congestion: CongestionControlProtocol | None = None
    """The congestion-control algorithm (the layer fills it from ``congestion_name``)."""
    congestion_name: str = "reno"
    extensions: list[ExtensionProtocol] = field(default_factory=list)
    keepalive: KeepAlivePolicy | None = None
    """Keep-alive probing (RFC 1122 §4.2.3.6): a per-connection timer policy."""
    slow_start: SlowStartProtocol | None = None
    """Asked in slow start how many newly acknowledged bytes the algorithm may grow cwnd by
    (HyStart++, RFC 9406)."""
    probe: ConnectionProbe | None = None
    """Records the connection's state after each ACK and each segment sent (the probe feature)."""
    shared: dict[str, Any] = field(default_factory=dict)
    """Stack-wide objects plugins keep for their connections, by plugin name (the TCP layer's
    ``shared`` table, filled in ``stack_configured``; the probe plugin's sink is one). Empty for
    a connection built outside a TCP layer (the sans-IO kit) and for a trial setup."""
    claims: dict[str, str] = field(default_factory=dict)
    trial: bool = False
    """A trial setup (no connection will follow): the configuration or an API call is being
    checked for plugins that clash. Plugins should install as usual and keep no state of their
    own for it."""

    def feature(self, name: str, settings: type[T]) -> T | None:
        """The settings of feature *name* on this connection, as the *settings* class it was
        registered with, or ``None`` when the feature is not enabled here."""
        value = self.features.get(name)
        if value is None:
            return None
        if not isinstance(value, settings):
            raise PluginError(f"feature {name!r} has settings {type(value).__name__}, not {settings.__name__}")
        return value

    def claim(self, slot: str, *, by: str) -> None:
        """Reserve a policy slot for plugin *by*; a second claimant is a :class:`PluginError`."""
        owner = self.claims.get(slot)
        if owner is not None and owner != by:
            raise PluginError(f"{by!r} and {owner!r} both want to set {slot} on {self.info.label}")
        self.claims[slot] = by
