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

Enable per connection with ``features={"timestamps": {}}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from framework.plugins import hookimpl
from framework.registry import Registry
from layers.tcp.extensions import add_feature
from layers.tcp.policy import Extension, TcpSetup
from layers.tcp.seq import MASK, seq_gt, seq_le
from layers.tcp.state import TcpState
from layers.tcp.syncookies import OPTION_BITS, SynCookieCodec
from layers.tcp.view import ConnectionView
from layers.tcp.wire import ACK, RST, TcpRepr

NAME = "timestamps"
OPTION_BYTES = 12  # NOP NOP + kind 8, length 10 (or SACK-permitted + kind 8 on a SYN)
PAWS_IDLE = 24 * 24 * 3600.0  # RFC 7323 §5.5: 24 days
_HALF = 1 << 31


@dataclass(slots=True)
class TimestampsSettings:
    drop_without_option: bool = True
    """Drop non-RST segments that lack the option once it was negotiated (RFC 7323 §3.2
    SHOULD); Linux accepts them."""


class Timestamps(Extension):
    """TSval clock, TSecr echo, RTT samples and PAWS for one connection."""

    name = NAME
    order = 20
    __slots__ = (
        "no_option_drops",
        "offset",
        "paws_drops",
        "peer_offered",
        "samples",
        "strict",
        "ts_recent",
        "ts_recent_at",
    )

    def __init__(self, *, strict: bool) -> None:
        self.offset: int | None = None
        self.peer_offered = False
        self.ts_recent = 0
        self.ts_recent_at = 0.0
        self.strict = strict
        self.paws_drops = 0
        self.no_option_drops = 0
        self.samples = 0

    def tsval(self, now: float) -> int:
        """RFC 7323 §5.4: a 1 ms clock with a random per-connection offset (§7.1)."""
        return (int(now * 1000) + (self.offset or 0)) & MASK

    def syn_options(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None:
        if self.offset is None:
            self.offset = offset_for(conn.iss)
        if conn.state is TcpState.SYN_SENT:
            seg.ts = (self.tsval(now), 0)
        elif self.peer_offered:
            seg.ts = (self.tsval(now), self.ts_recent)

    def on_peer_syn(self, conn: ConnectionView, syn: TcpRepr, now: float) -> None:
        if syn.ts is None:
            return  # §3.2: never send the option unless both SYNs carried it
        self.peer_offered = True
        self.active = True
        if self.offset is None:  # a connection from a SYN cookie sent no SYN-ACK of its own
            self.offset = offset_for(conn.iss)
        self.ts_recent = syn.ts[0]
        self.ts_recent_at = now
        # §4.1 RTTM; RFC 3522 §2: Eifel detection compares echoes with our clock.
        conn.time_rtt_by_timestamps(self.tsval)
        # MUST-16: options take room from the payload of every segment.
        conn.set_send_mss(max(conn.snd_mss - OPTION_BYTES, 1))

    def check(self, conn: ConnectionView, seg: TcpRepr, now: float) -> bool:
        ts = seg.ts
        if ts is None:
            if seg.flags & RST or not self.strict:
                return True
            self.no_option_drops += 1
            return False  # RFC 7323 §3.2: silently drop
        if seg.flags & RST:
            return True  # PAWS never applies to a RST
        # §5.3 R1: TSval older than TS.Recent, with TS.Recent still valid: ACK and drop.
        if (ts[0] - self.ts_recent) & MASK >= _HALF and now - self.ts_recent_at <= PAWS_IDLE:
            self.paws_drops += 1
            conn.request_ack()
            return False
        return True

    def accepted(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None:
        ts = seg.ts
        if ts is None:
            return
        # §4.3 (2): TS.Recent from segments at or before the left edge of what we ACKed. §5.5: an
        # invalid TS.Recent (24 days idle) is replaced even by an "older" TSval, else PAWS stays
        # skipped and TSecr echoes the stale value for good.
        newer = (ts[0] - self.ts_recent) & MASK < _HALF or now - self.ts_recent_at > PAWS_IDLE
        if seq_le(seg.seq, conn.last_ack_sent) and newer:
            self.ts_recent = ts[0]
            self.ts_recent_at = now
        # §4.1 RTTM: an ACK of new data echoing one of our TSvals gives an RTT sample.
        ecr = ts[1]
        if ecr and seg.flags & ACK and seq_gt(seg.ack, conn.snd_una):
            rtt_ms = (self.tsval(now) - ecr) & MASK
            if rtt_ms < _HALF:
                conn.sample_rtt(max(rtt_ms, 0) / 1000.0)
                self.samples += 1

    def decorate(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None:
        seg.ts = (self.tsval(now), self.ts_recent)


def offset_for(iss: int) -> int:
    """§7.1: the per-connection clock offset, derived from the keyed, unpredictable ISS, so the
    clock reveals no uptime and runs are reproducible when the ISN secret is fixed."""
    return (iss * 2654435761) & MASK


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
