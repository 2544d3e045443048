"""The per-segment parts of the built-in timestamps, SACK and delayed-ACK plugins, compiled.

The plugins (``plugins/timestamps.py``, ``plugins/sack.py``, ``plugins/delayed_ack.py``) stay
the registrars: they register the features, their settings and SYN-cookie codecs, and install
these objects in ``tcp_connection_setup``. What runs per segment lives here, in a module the
mypyc build compiles (``[tool.tcpstack.compiled]``): the bodies of ``check``, ``accepted``,
``decorate`` and the TSval clock, SACK's block bookkeeping, and the delayed-ACK decision. A
layer may not import a plugin (docs/architecture.md, "Rings and folders"), so the classes live
in the TCP layer and the plugins re-export them under their old names.

Two callers use them:

- the generic path (``segment_received``, ``segments_to_send``, ``receive_text``) calls the
  hooks through the :class:`~layers.tcp.policy.ExtensionProtocol` and
  :class:`~layers.tcp.policy.AckPolicyProtocol` slots, as for any third-party plugin: the
  bodies are merely compiled;
- the receive fast path (``layers/tcp/fastpath.py``) and the send loop recognise these classes
  and call them natively; on a predicted in-order segment SACK's ``check`` reduces to
  :meth:`Sack.in_order` (the one thing it does there: record the latest block).

The behaviour is that of the previous interpreted plugins, line for line (RFC 7323 §3-5,
RFC 2018 §4, RFC 2883 §4, RFC 1122 §4.2.3.2 / RFC 9293 §3.8.6.3); tests/layers/tcp/
test_builtin_hooks.py keeps the interpreted implementations as a reference and compares them
with these on random sequences (hypothesis).

Plain typed Python: it is meant to be compiled with mypyc as well as run interpreted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final, Protocol

from framework._compiled import mypyc_attr
from framework.lazylog import LazyLog, debug_enabled
from layers.tcp.policy import DecisionLog, decision_log
from layers.tcp.seq import HALF, MASK, seq_diff, seq_gt, seq_le
from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, MAX_OPTION_BYTES, RST, TcpRepr

if TYPE_CHECKING:
    from layers.tcp.view import ConnectionView

# ====================================================================== timestamps (RFC 7323)

TIMESTAMPS: Final = "timestamps"
OPTION_BYTES: Final = 12  # NOP NOP + kind 8, length 10 (or SACK-permitted + kind 8 on a SYN)
PAWS_IDLE: Final = 24 * 24 * 3600.0  # RFC 7323 §5.5: 24 days


def offset_for(iss: int) -> int:
    """§7.1: the per-connection clock offset, derived from the keyed, unpredictable ISS, so the
    clock reveals no uptime and runs are reproducible when the ISN secret is fixed."""
    return (iss * 2654435761) & MASK


class Timestamps:
    """TSval clock, TSecr echo, RTT samples and PAWS for one connection (an
    :class:`~layers.tcp.policy.ExtensionProtocol`; the ``timestamps`` plugin installs it)."""

    __slots__ = (
        "active",
        "name",
        "no_option_drops",
        "offset",
        "order",
        "paws_drops",
        "peer_offered",
        "samples",
        "strict",
        "ts_recent",
        "ts_recent_at",
    )

    def __init__(self, *, strict: bool) -> None:
        self.name = TIMESTAMPS
        self.order = 20
        self.active = False
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
        offset = self.offset
        return (int(now * 1000) + (0 if offset is None else offset)) & MASK

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
        if (ts[0] - self.ts_recent) & MASK >= HALF and now - self.ts_recent_at <= PAWS_IDLE:
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
        newer = (ts[0] - self.ts_recent) & MASK < HALF or now - self.ts_recent_at > PAWS_IDLE
        if newer and seq_le(seg.seq, conn.last_ack_sent):
            self.ts_recent = ts[0]
            self.ts_recent_at = now
        # §4.1 RTTM: an ACK of new data echoing one of our TSvals gives an RTT sample.
        ecr = ts[1]
        if ecr and seg.flags & ACK and seq_gt(seg.ack, conn.snd_una):
            rtt_ms = (self.tsval(now) - ecr) & MASK
            if rtt_ms < HALF:
                conn.sample_rtt(max(rtt_ms, 0) / 1000.0)
                self.samples += 1

    def decorate(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None:
        seg.ts = (self.tsval(now), self.ts_recent)  # §3.2: on every non-SYN, non-RST segment


# ====================================================================== SACK (RFC 2018, RFC 2883)

SACK: Final = "sack"
MAX_BLOCKS: Final = 4  # RFC 2018 §3: 2 + 8n bytes in 40 bytes of option space


class Sack:
    """SACK-permitted negotiation and SACK/D-SACK block generation for one connection (an
    :class:`~layers.tcp.policy.ExtensionProtocol`; the ``sack`` plugin installs it)."""

    __slots__ = (
        "active",
        "blocks_sent",
        "dsack",
        "last",
        "log",
        "name",
        "order",
        "peer_offered",
        "recent",
        "report_dsack",
    )
    #: Hooks that do nothing here, so the connection never calls them
    #: (:func:`~layers.tcp.policy.overrides`).
    noop_hooks: ClassVar[tuple[str, ...]] = ("accepted",)

    def __init__(self, *, dsack: bool, log: DecisionLog | None = None) -> None:
        self.name = SACK
        self.order = 90
        self.active = False
        self.log: DecisionLog = log if log is not None else decision_log("?", SACK)
        self.peer_offered = False
        self.report_dsack = dsack
        self.last: tuple[int, int] | None = None  # stream offsets of the latest new data
        self.dsack: tuple[int, int] | None = None  # sequence range of a duplicate to report
        self.recent: list[tuple[int, int]] = []  # blocks reported last time (stream offsets)
        self.blocks_sent = 0

    def syn_options(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None:
        if conn.state is TcpState.SYN_SENT or self.peer_offered:
            seg.sack_perm = True  # RFC 2018 §2

    def on_peer_syn(self, conn: ConnectionView, syn: TcpRepr, now: float) -> None:
        if not syn.sack_perm:
            self.log.debug("tcp.decision", decision="no SACK", reason="not offered", rfc="RFC 2018 §2", t=now)
            return
        self.peer_offered = True
        if conn.state is TcpState.SYN_RECEIVED or conn.state is TcpState.SYN_SENT:
            self.active = True
            # The sender side: RFC 6675 loss recovery from the peer's SACK blocks.
            conn.start_sack_scoreboard()
            self.log.debug("tcp.decision", decision="SACK on", dsack=self.report_dsack, rfc="RFC 2018 §2", t=now)

    def in_order(self, start: int, end: int) -> None:
        """The fast path's :meth:`check` for a predicted segment: in-order new data at stream
        offsets ``[start, end)`` with nothing held out of order, so neither a duplicate nor a
        block to look up; only the latest data is recorded (RFC 2018 §4: the first block of an
        ACK is the one holding the segment that triggered it)."""
        self.last = (start, end)

    def accepted(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None:
        """Nothing (listed in ``noop_hooks``: never called per segment)."""

    def check(self, conn: ConnectionView, seg: TcpRepr, now: float) -> bool:
        """Note where each data segment falls, before it is stored (and before old
        duplicates are answered without ever reaching the buffer)."""
        n = len(seg.payload)
        if not n:
            return True
        buf = conn.rcvbuf
        nxt = buf.nxt
        start = nxt + seq_diff(seg.seq, conn.rcv_nxt)
        end = start + n
        if end <= nxt or buf.holds(start, end):  # O(log n) in the blocks held
            if self.report_dsack:  # RFC 2883 §4: a duplicate: report it first
                self.dsack = (seg.seq, (seg.seq + n) & MASK)
                self.log.debug("tcp.decision", decision="D-SACK", seq=seg.seq, len=n, rfc="RFC 2883 §4", t=now)
        elif start < nxt:
            # Partly old: RFC 2883 §4.1.1 reports the duplicate part, the rest is new data.
            if self.report_dsack:
                self.dsack = (seg.seq, (seg.seq + nxt - start) & MASK)
                self.log.debug(
                    "tcp.decision", decision="D-SACK", seq=seg.seq, len=nxt - start, rfc="RFC 2883 §4.1.1", t=now
                )
            self.last = (nxt, end)
        else:
            self.last = (start, end)  # RFC 2018 §4: the block of the latest segment comes first
        return True

    def decorate(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None:
        buf = conn.rcvbuf
        dsack = self.dsack
        if dsack is None and not buf.has_gaps:
            return  # nothing to report (RFC 2018 §4: blocks only while data is held out of order)
        self.dsack = None
        blocks: list[tuple[int, int]] = []  # stream offsets, except the D-SACK block
        if buf.has_gaps:
            # Each lookup is O(log n) in the blocks held, and at most 4 + 4 + 4 are made: the
            # cost of an ACK never grows with how many blocks a peer makes us hold.
            last = self.last
            first = buf.block_at(last[0]) if last is not None else None
            if first is not None:
                blocks.append(first)
            for old in self.recent:  # repeat what we reported last, still held (§4)
                cur = buf.block_at(old[0])
                if cur is not None and cur not in blocks:
                    blocks.append(cur)
            if len(blocks) < MAX_BLOCKS:  # room left: the highest blocks not reported yet
                for blk in buf.top_blocks(MAX_BLOCKS):
                    if blk not in blocks:
                        blocks.append(blk)
        if not blocks and dsack is None:
            return
        # Room: the option space, and the segment must still fit the MSS we advertised.
        used = seg.options_len()
        room = min(MAX_OPTION_BYTES - used, conn.local_mss - len(seg.payload) - used) - 4
        n = max(0, room // 8)
        if n == 0:
            return
        base_off, base_seq = buf.nxt, conn.rcv_nxt
        out = [((base_seq + s - base_off) & MASK, (base_seq + e - base_off) & MASK) for s, e in blocks]
        if dsack is not None:
            out.insert(0, dsack)  # RFC 2883 §4: the D-SACK block first
        sack = out[:n]
        seg.sack = sack
        self.recent = blocks[: n - (1 if dsack is not None else 0)]
        self.blocks_sent += len(sack)


# ====================================================================== delayed ACK (RFC 1122 §4.2.3.2)

DELAYED_ACK: Final = "delayed_ack"


class AckDelaySettings(Protocol):
    """What :class:`DelayedAck` reads of its settings (``plugins.delayed_ack.DelayedAckSettings``)."""

    @property
    def timeout(self) -> float: ...

    @property
    def segments(self) -> int: ...


@mypyc_attr(allow_interpreted_subclasses=True)  # plugins (quickack) extend it, compiled or not
class DelayedAck:
    """Delay ACKs for in-order data up to a deadline or a byte count (an
    :class:`~layers.tcp.policy.AckPolicyProtocol`; the ``delayed_ack`` plugin installs it)."""

    __slots__ = ("_lazy", "_unacked", "decisions", "log", "threshold", "timeout")

    def __init__(self, settings: AckDelaySettings, mss: int, log: DecisionLog | None = None) -> None:
        self.log: DecisionLog = log if log is not None else decision_log("?", DELAYED_ACK)
        # A LazyLog is asked whether debug is on before a decision's keywords are built; any other
        # logger gets every call, as before.
        self._lazy = isinstance(self.log, LazyLog)
        self.timeout: float = settings.timeout
        # RFC 5681 §2 and RFC 6691 §2: a full-sized segment from the peer holds our MSS less the
        # options it carries on every segment (12 bytes of timestamps), so a segment counts as
        # full from MSS - 40 bytes; with MSS itself two timestamped segments (2 x 1448 < 2 x 1460)
        # would wait for the timer, against SHLD-19.
        self.threshold: int = settings.segments * max(mss - MAX_OPTION_BYTES, 1)
        self._unacked = 0
        self.decisions = 0

    def on_data(self, seg_len: int, now: float) -> float | None:
        unacked = self._unacked + seg_len
        self._unacked = unacked
        # RFC 9293 §3.8.6.3 (SHLD-19): an ACK for at least every second full-sized segment.
        if unacked >= self.threshold:
            if not self._lazy or debug_enabled():
                self.log.debug(
                    "tcp.decision", decision="ACK now", reason="two full-sized segments", rfc="RFC 9293 §3.8.6.3", t=now
                )
            return None
        self.decisions += 1
        deadline = now + self.timeout  # RFC 1122 §4.2.3.2, MUST-40: the delay is below 0.5 s
        if not self._lazy or debug_enabled():
            self.log.debug("tcp.decision", decision="ACK delayed", rfc="RFC 1122 §4.2.3.2", deadline=deadline, t=now)
        return deadline

    def on_ack_sent(self) -> None:
        self._unacked = 0


__all__ = [
    "DELAYED_ACK",
    "MAX_BLOCKS",
    "OPTION_BYTES",
    "PAWS_IDLE",
    "SACK",
    "TIMESTAMPS",
    "AckDelaySettings",
    "DelayedAck",
    "Sack",
    "Timestamps",
    "offset_for",
]
