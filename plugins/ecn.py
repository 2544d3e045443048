"""Explicit Congestion Notification (RFC 3168 §6.1; RFC 9293 SHLD-8), per connection.

- §6.1.1 negotiation: our SYN is an "ECN-setup SYN" (ECE and CWR set); a SYN-ACK is an
  "ECN-setup SYN-ACK" (ECE set, CWR clear) and is sent only in reply to an ECN-setup SYN. ECN
  is in use only when both happened. Neither SYN nor SYN-ACK is ECN-capable (ECT).
- §6.1.2/§6.1.5-6.1.6: once negotiated, our new data segments go out as ECT(0); pure ACKs,
  retransmissions and window probes never do.
- §6.1.3 receiver: after a data segment arrives marked CE, every ACK we send carries ECE until
  a segment with CWR arrives.
- §6.1.2 sender: an ACK with ECE reduces the congestion window as a loss would (without
  retransmitting anything), at most once per window of data; the next new data segment we
  send carries CWR.

Off by default (like Linux's ``tcp_ecn = 2`` it would at least answer; here the whole feature is
switched together). Enable per connection with ``features={"ecn": {}}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from framework.plugins import hookimpl
from framework.registry import Registry
from layers.tcp.extensions import add_feature
from layers.tcp.policy import Extension, TcpOptions, TcpSetup
from layers.tcp.seq import seq_add, seq_diff, seq_gt
from layers.tcp.state import TcpState
from layers.tcp.syncookies import SynCookieCodec
from layers.tcp.view import ConnectionView
from layers.tcp.wire import CWR, ECE, SYN, TcpRepr

NAME = "ecn"
ECT0 = 0b10  # RFC 3168 §5
CE = 0b11


@dataclass(slots=True)
class EcnSettings:
    """ECN has no settings yet; the table exists so it can be enabled by name."""


class Ecn(Extension):
    """ECN negotiation, marking, echo and response for one connection."""

    name = NAME
    order = 30
    __slots__ = ("ce_seen", "cwr_pending", "ece_pending", "peer_setup", "recover", "reductions")

    def __init__(self) -> None:
        self.peer_setup = False
        self.ece_pending = False  # receiver: echo ECE until CWR arrives
        self.cwr_pending = False  # sender: put CWR on the next new data segment
        self.recover: int | None = None  # end of the window in which we already reduced
        self.reductions = 0
        self.ce_seen = 0

    def syn_options(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None:
        if conn.state is TcpState.SYN_SENT:
            seg.flags |= ECE | CWR  # ECN-setup SYN
        elif self.peer_setup:
            seg.flags |= ECE  # ECN-setup SYN-ACK, only in reply to an ECN-setup SYN

    def on_peer_syn(self, conn: ConnectionView, syn: TcpRepr, now: float) -> None:
        flags = syn.flags
        if conn.state is TcpState.SYN_RECEIVED:  # the peer's SYN
            self.peer_setup = flags & (ECE | CWR) == (ECE | CWR)
            self.active = self.peer_setup
        else:  # the SYN-ACK to our ECN-setup SYN
            self.active = flags & (ECE | CWR) == ECE

    def accepted(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None:
        if seg.flags & SYN:
            return
        if seg.flags & CWR:
            self.ece_pending = False  # the sender reacted to our ECE
        if seg.ip_ecn == CE and len(seg.payload):
            self.ce_seen += 1
            self.ece_pending = True  # §6.1.3 (a CE on the CWR segment itself starts a new echo)
        if seg.flags & ECE and conn.snd_una != conn.snd_max:
            # §6.1.2: reduce at most once per window of data: ECE on ACKs up to the end of the
            # window that was in flight at the last reduction (our CWR segment starts right
            # after it) still reports the same congestion.
            if self.recover is None or seq_gt(seg.ack, seq_add(self.recover, 1)):
                flight = seq_diff(conn.snd_max, conn.snd_una)
                conn.cc.on_ecn(flight, now)  # through the algorithm: CUBIC reduces by its beta
                self.recover = seq_add(conn.snd_max, -1)
                self.cwr_pending = True
                self.reductions += 1

    def decorate(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None:
        if self.ece_pending:
            seg.flags |= ECE
        if len(seg.payload) and not seg.rexmit:
            seg.ip_ecn = ECT0  # §6.1.2: new data is ECN-capable
            if self.cwr_pending:
                seg.flags |= CWR
                self.cwr_pending = False


class EcnCookie(SynCookieCodec):
    """ECN negotiation in a SYN cookie (one bit, as Linux's ``ecn_ok``)."""

    bits = 1
    order = 30

    def encode(self, syn: TcpRepr, synack: TcpRepr, settings: EcnSettings, options: TcpOptions) -> int:
        if syn.flags & (ECE | CWR) != ECE | CWR:
            return 0
        synack.flags |= ECE  # RFC 3168 §6.1.1: an ECN-setup SYN-ACK answers an ECN-setup SYN
        return 1

    def decode(self, value: int, syn: TcpRepr, settings: EcnSettings) -> bool:
        if value:
            syn.flags |= ECE | CWR
        return True


@hookimpl
def stack_register(registry: Registry) -> None:
    add_feature(
        registry, NAME, EcnSettings, doc="Explicit Congestion Notification (RFC 3168 §6.1)", syncookie=EcnCookie()
    )


@hookimpl
def tcp_connection_setup(setup: TcpSetup) -> None:
    if setup.feature(NAME, EcnSettings) is None:
        return
    setup.claim(NAME, by=NAME)
    setup.extensions.append(Ecn())
