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

Enable per connection with ``features={"sack": {}}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from framework.plugins import hookimpl
from framework.registry import Registry
from layers.tcp.extensions import add_feature
from layers.tcp.policy import DecisionLog, Extension, TcpOptions, TcpSetup, decision_log
from layers.tcp.seq import MASK, seq_diff
from layers.tcp.state import TcpState
from layers.tcp.syncookies import SynCookieCodec
from layers.tcp.view import ConnectionView
from layers.tcp.wire import MAX_OPTION_BYTES, TcpRepr

NAME = "sack"
MAX_BLOCKS = 4  # RFC 2018 §3: 2 + 8n bytes in 40 bytes of option space


@dataclass(slots=True)
class SackSettings:
    dsack: bool = True
    """Report duplicate segments with D-SACK blocks (RFC 2883)."""


class Sack(Extension):
    """SACK-permitted negotiation and SACK/D-SACK block generation for one connection."""

    name = NAME
    order = 90
    __slots__ = ("blocks_sent", "dsack", "last", "log", "peer_offered", "recent", "report_dsack")

    def __init__(self, *, dsack: bool, log: DecisionLog | None = None) -> None:
        self.log = log if log is not None else decision_log("?", NAME)
        self.peer_offered = False
        self.report_dsack = dsack
        self.last: tuple[int, int] | None = None  # stream offsets of the latest new data
        self.dsack: tuple[int, int] | None = None  # sequence range of a duplicate to report
        self.recent: list[tuple[int, int]] = []  # blocks reported last time (stream offsets)
        self.blocks_sent = 0

    def syn_options(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None:
        if conn.state is TcpState.SYN_SENT or self.peer_offered:
            seg.sack_perm = True

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

    def check(self, conn: ConnectionView, seg: TcpRepr, now: float) -> bool:
        """Note where each data segment falls, before it is stored (and before old
        duplicates are answered without ever reaching the buffer)."""
        n = len(seg.payload)
        if not n:
            return True
        buf = conn.rcvbuf
        start = buf.nxt + seq_diff(seg.seq, conn.rcv_nxt)
        end = start + n
        if end <= buf.nxt or buf.holds(start, end):  # O(log n) in the blocks held
            if self.report_dsack:  # RFC 2883 §4: a duplicate: report it first
                self.dsack = (seg.seq, (seg.seq + n) & MASK)
                self.log.debug("tcp.decision", decision="D-SACK", seq=seg.seq, len=n, rfc="RFC 2883 §4", t=now)
        elif start < buf.nxt:
            # Partly old: RFC 2883 §4.1.1 reports the duplicate part, the rest is new data.
            if self.report_dsack:
                self.dsack = (seg.seq, (seg.seq + buf.nxt - start) & MASK)
                self.log.debug(
                    "tcp.decision", decision="D-SACK", seq=seg.seq, len=buf.nxt - start, rfc="RFC 2883 §4.1.1", t=now
                )
            self.last = (buf.nxt, end)
        else:
            self.last = (start, end)
        return True

    def decorate(self, conn: ConnectionView, seg: TcpRepr, now: float) -> None:
        buf = conn.rcvbuf
        blocks: list[tuple[int, int]] = []  # stream offsets, except the D-SACK block
        dsack = self.dsack
        self.dsack = None
        if buf.has_gaps:
            # Each lookup is O(log n) in the blocks held, and at most 4 + 4 + 4 are made: the
            # cost of an ACK never grows with how many blocks a peer makes us hold.
            first = buf.block_at(self.last[0]) if self.last is not None else None
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
            out.insert(0, dsack)
        seg.sack = out[:n]
        self.recent = blocks[: n - (1 if dsack is not None else 0)]
        self.blocks_sent += len(seg.sack)


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
