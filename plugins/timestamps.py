"""TCP timestamps (RFC 7323 §3-5), as a per-connection extension.

- §3.2: the option (kind 8) is sent on a SYN, on a SYN-ACK only if the peer's SYN had it,
  and then on every non-RST segment once both SYNs carried it; a non-RST segment without it
  is dropped (SHOULD) once negotiated.
- §5.4: TSval is a clock of 1 ms ticks with a per-connection offset (§7.1: do not expose
  uptime), monotonic because ``now`` is.
- §4.3: TS.Recent is updated from a segment that passed the sequence check when
  ``SEG.TSval >= TS.Recent`` and ``SEG.SEQ <= Last.ACK.sent``; TSecr echoes TS.Recent, so with
  delayed ACKs it echoes the earliest unacknowledged segment and after a gap the last
  in-sequence one.
- §4.1 (RTTM): every ACK that acknowledges new data yields an RTT sample from TSecr; Karn's
  rule is not needed, so retransmissions do not starve the estimator.
- §5.3 (PAWS): a non-RST segment whose TSval is older than TS.Recent is answered with an ACK
  and dropped; §5.5: TS.Recent is invalid after 24 days without use.
- MUST-16: the effective send MSS shrinks by the 12 bytes the option takes, so full-sized
  timestamped segments still fill the MTU and Nagle never sees them as short.

The per-connection object, :class:`Timestamps` (the clock, ``check``, ``accepted``,
``decorate``), lives in :mod:`layers.tcp.builtin_hooks`, compiled with the rest of the
per-segment path; this plugin registers the feature and its SYN-cookie codec and installs it.

Enable per connection with ``features={"timestamps": {}}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from framework.plugins import hookimpl
from framework.registry import Registry
from layers.tcp.builtin_hooks import OPTION_BYTES, PAWS_IDLE, Timestamps, offset_for
from layers.tcp.extensions import add_feature
from layers.tcp.policy import TcpSetup
from layers.tcp.seq import MASK
from layers.tcp.syncookies import OPTION_BITS, SynCookieCodec
from layers.tcp.wire import TcpRepr

NAME = "timestamps"
_HALF = 1 << 31


@dataclass(slots=True)
class TimestampsSettings:
    drop_without_option: bool = True
    """Drop non-RST segments that lack the option once it was negotiated (RFC 7323 §3.2
    SHOULD); Linux accepts them."""


class TimestampsCookie(SynCookieCodec):
    """Carries a SYN cookie's option bits in the low bits of the SYN-ACK's TSval, as Linux does
    (RFC 4987 §3.6; ``cookie_init_timestamp``): the peer echoes them in the ACK's TSecr."""

    carrier = True

    def offered(self, syn: TcpRepr) -> bool:
        return syn.ts is not None  # RFC 7323 §3.2: only in reply to a SYN that had the option

    def carry(self, syn: TcpRepr, synack: TcpRepr, bits: int, iss: int, now: float) -> None:
        assert syn.ts is not None
        clock = (int(now * 1000) + offset_for(iss)) & MASK
        mask = (1 << OPTION_BITS) - 1
        value = (clock & ~mask & MASK) | bits
        if (value - clock) & MASK < _HALF and value != clock:
            value = (value - (1 << OPTION_BITS)) & MASK  # never ahead of the clock (§5.4)
        synack.ts = (value, syn.ts[0])

    def recover(self, ack: TcpRepr) -> int | None:
        return None if ack.ts is None else ack.ts[1] & ((1 << OPTION_BITS) - 1)

    def restore(self, ack: TcpRepr, syn: TcpRepr) -> None:
        if ack.ts is not None:
            syn.ts = (ack.ts[0], 0)  # TS.Recent starts from the ACK's TSval (§4.3)


@hookimpl
def stack_register(registry: Registry) -> None:
    add_feature(
        registry,
        NAME,
        TimestampsSettings,
        doc="timestamps, RTTM and PAWS (RFC 7323 §3-5)",
        syncookie=TimestampsCookie(),
    )


@hookimpl
def tcp_connection_setup(setup: TcpSetup) -> None:
    settings = setup.feature(NAME, TimestampsSettings)
    if settings is None:
        return
    setup.claim(NAME, by=NAME)
    setup.extensions.append(Timestamps(strict=settings.drop_without_option))


__all__ = ["NAME", "OPTION_BYTES", "PAWS_IDLE", "Timestamps", "TimestampsCookie", "TimestampsSettings", "offset_for"]
