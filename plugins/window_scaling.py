"""Window scaling (RFC 7323 §2), as a per-connection extension.

- §2.2: the option (kind 3) is sent only in a SYN, or in a SYN-ACK answering a SYN that had it;
  scaling is in force only when both SYNs carried it. Windows in SYN segments are never
  scaled.
- §2.3: our shift is the smallest that lets the receive buffer be advertised in 16 bits,
  at most 14; a received shift above 14 is used as 14 (and logged at debug).
- The peer's scaled window is honoured everywhere the connection uses SND.WND (the core
  shifts every window field by ``snd_wscale``), and our advertised window is the free receive
  space shifted right, rounded up so the right edge never moves left (§2.4).

Enable per connection with ``features={"window_scaling": {}}``; ``shift`` forces a value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from framework.plugins import hookimpl
from framework.registry import Registry
from layers.tcp.extensions import add_feature
from layers.tcp.policy import DecisionLog, Extension, TcpOptions, TcpSetup, decision_log
from layers.tcp.state import TcpState
from layers.tcp.syncookies import SynCookieCodec
from layers.tcp.view import ConnectionView
from layers.tcp.wire import TcpRepr

NAME = "window_scaling"
MAX_SHIFT = 14  # RFC 7323 §2.3


@dataclass(slots=True)
class WindowScalingSettings:
    shift: int | None = field(default=None, metadata={"min": 0, "max": MAX_SHIFT})
    """Shift to offer; default: derived from the receive buffer (RFC 7323 §2.3)."""


def shift_for(buffer: int) -> int:
    """The smallest shift that fits *buffer* into the 16-bit window field, capped at 14."""
    shift = 0
    while (buffer >> shift) > 0xFFFF and shift < MAX_SHIFT:
        shift += 1
    return shift


class WindowScaling(Extension):
    """Negotiates and applies the window scale option on one connection."""

    name = NAME
    order = 10
    __slots__ = ("log", "offered", "peer_shift", "shift")

    def __init__(self, shift: int, log: DecisionLog | None = None) -> None:
        self.log = log if log is not None else decision_log("?", NAME)
        self.shift = shift
        self.peer_shift: int | None = None
        self.offered = False

    def syn_options(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None:
        if conn.state is TcpState.SYN_SENT or self.peer_shift is not None:
            seg.wscale = self.shift  # §2.2: on our SYN, or on a SYN-ACK to a SYN that offered it
            self.offered = True

    def on_peer_syn(self, conn: ConnectionView, syn: TcpRepr, now: float) -> None:
        if syn.wscale is None:
            # The peer did not offer: neither side scales (§2.2).
            self.log.debug("tcp.decision", decision="no scaling", reason="not offered", rfc="RFC 7323 §2.2", t=now)
            return
        self.peer_shift = min(syn.wscale, MAX_SHIFT)  # §2.3: treat a shift above 14 as 14
        passive = conn.state is TcpState.SYN_RECEIVED
        if passive or self.offered:
            self.active = True
            conn.set_window_scale(self.peer_shift, self.shift)
            self.log.debug(
                "tcp.decision",
                decision="windows scaled",
                snd_shift=self.peer_shift,
                rcv_shift=self.shift,
                rfc="RFC 7323 §2.2-§2.3",
                t=now,
            )


class WindowScalingCookie(SynCookieCodec):
    """The peer's shift in a SYN cookie (4 bits; 15: the peer did not offer scaling), as
    Linux's ``cookie_timestamp_decode`` keeps it."""

    bits = 4
    order = 10

    def encode(self, syn: TcpRepr, synack: TcpRepr, settings: WindowScalingSettings, options: TcpOptions) -> int:
        if syn.wscale is None:
            return 0xF
        synack.wscale = settings.shift if settings.shift is not None else shift_for(options.recv_buffer)
        return min(syn.wscale, MAX_SHIFT)  # §2.3: a shift above 14 is taken as 14

    def decode(self, value: int, syn: TcpRepr, settings: WindowScalingSettings) -> bool:
        if value == 0xF:
            return True
        if value > MAX_SHIFT:
            return False  # never encoded: the cookie is forged
        syn.wscale = value
        return True


@hookimpl
def stack_register(registry: Registry) -> None:
    add_feature(
        registry, NAME, WindowScalingSettings, doc="window scale option (RFC 7323 §2)", syncookie=WindowScalingCookie()
    )


@hookimpl
def tcp_connection_setup(setup: TcpSetup) -> None:
    settings = setup.feature(NAME, WindowScalingSettings)
    if settings is None:
        return
    setup.claim(NAME, by=NAME)
    shift = settings.shift if settings.shift is not None else shift_for(setup.options.recv_buffer)
    setup.extensions.append(WindowScaling(shift, decision_log(setup.info.label, NAME)))
