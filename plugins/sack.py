"""Selective acknowledgment: RFC 2018 receiver with D-SACK (RFC 2883), RFC 6675 sender.

- RFC 2018 §2: SACK-permitted (kind 4) is sent only on a SYN, or on a SYN-ACK answering a
  SYN that had it; SACK blocks are sent only when both SYNs carried it.
- RFC 2018 §4: while out-of-order data is held, every ACK carries SACK blocks; the first block
  is the one that holds the segment which triggered the ACK, the others repeat the most
  recently reported blocks; as many blocks as fit the option space (4, or 3 with timestamps)
  and the segment.
- Per segment the receiver side looks up at most a dozen blocks, each in O(log n) of the blocks
  held (:class:`~layers.tcp.buffers.ReceiveBuffer`), so a peer that makes us hold 100,000
  one-byte blocks gets ACKs at the cost of ten (docs/tcp.md, "Out-of-order data").
- RFC 2883 §4: when a segment duplicates data already received (below RCV.NXT, or inside a
  block we hold), the first block of the next ACK reports that duplicate range (D-SACK).

The sender side follows RFC 6675: the peer's SACK blocks feed a scoreboard
(:mod:`layers.tcp.scoreboard`); loss recovery starts on the third duplicate ACK or as soon as
IsLost() says the first unacknowledged segment is lost, sets cwnd to ssthresh without
inflation, limits the flight by the pipe estimate and retransmits only the holes (NextSeg()
rules 1-3); after a retransmission timeout the SACK state is discarded (RFC 2018 §8).

The receiver side's per-connection object, :class:`Sack` (``check``, ``decorate``), lives in
:mod:`layers.tcp.builtin_hooks`, compiled with the rest of the per-segment path; this plugin
registers the feature and its SYN-cookie codec and installs it.

Enable per connection with ``features={"sack": {}}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from framework.plugins import hookimpl
from framework.registry import Registry
from layers.tcp.builtin_hooks import MAX_BLOCKS, Sack
from layers.tcp.extensions import add_feature
from layers.tcp.policy import TcpOptions, TcpSetup, decision_log
from layers.tcp.syncookies import SynCookieCodec
from layers.tcp.wire import TcpRepr

NAME = "sack"


@dataclass(slots=True)
class SackSettings:
    dsack: bool = True
    """Report duplicate segments with D-SACK blocks (RFC 2883)."""


class SackCookie(SynCookieCodec):
    """SACK-permitted in a SYN cookie (one bit)."""

    bits = 1
    order = 20

    def encode(self, syn: TcpRepr, synack: TcpRepr, settings: SackSettings, options: TcpOptions) -> int:
        synack.sack_perm = syn.sack_perm  # RFC 2018 §2: only in reply to a SYN that had it
        return 1 if syn.sack_perm else 0

    def decode(self, value: int, syn: TcpRepr, settings: SackSettings) -> bool:
        syn.sack_perm = bool(value)
        return True


@hookimpl
def stack_register(registry: Registry) -> None:
    add_feature(
        registry,
        NAME,
        SackSettings,
        doc="selective acknowledgments (RFC 2018, RFC 2883, RFC 6675)",
        syncookie=SackCookie(),
    )


@hookimpl
def tcp_connection_setup(setup: TcpSetup) -> None:
    settings = setup.feature(NAME, SackSettings)
    if settings is None:
        return
    setup.claim(NAME, by=NAME)
    setup.extensions.append(Sack(dsack=settings.dsack, log=decision_log(setup.info.label, NAME)))


__all__ = ["MAX_BLOCKS", "NAME", "Sack", "SackCookie", "SackSettings"]
