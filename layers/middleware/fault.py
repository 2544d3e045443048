"""Fault injection middleware (layer type ``fault``): seeded, reproducible packet faults.

Random faults (drop, duplicate, corrupt, delay, reorder) are drawn from one
:class:`random.Random` seeded from the settings, so the same seed and the same packet sequence
give the same faults. Scripted faults (:meth:`FaultInjector.add_rule`) act on the *n*-th packet
matching a predicate and are checked before the random ones.

Held packets (delayed or reordered) are released from :meth:`FaultInjector.handle_timer` or,
for reordering, right after the next packet in the same direction has passed. Inbound packets
that are held or copied become fresh :class:`~framework.packet.Packet` objects over ``bytes``,
because the link's receive buffer may be reused after the call returns.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from framework.checksum import internet_checksum
from framework.context import Context
from framework.handler import BaseHandler
from framework.packet import Packet
from framework.plugins import hookimpl
from framework.registry import Registry

Direction = Literal["both", "in", "out"]
Action = Literal["drop", "duplicate", "corrupt", "delay"]
_ACTIONS: tuple[str, ...] = ("drop", "duplicate", "corrupt", "delay")
_DIRECTIONS: tuple[str, ...] = ("both", "in", "out")

_RATE = {"min": 0.0, "max": 1.0}


def _check_ports(value: list[int]) -> str | None:
    bad = [p for p in value if not 1 <= p <= 65535]
    return f"ports must be 1-65535, got {bad[0]}" if bad else None


@dataclass(slots=True)
class FaultSettings:
    seed: int = 1
    """Seed of the random generator; the same seed gives the same faults for the same traffic."""

    drop: float = field(default=0.0, metadata=_RATE)
    """Probability that a packet is discarded."""

    duplicate: float = field(default=0.0, metadata=_RATE)
    """Probability that a packet is passed on twice."""

    reorder: float = field(default=0.0, metadata=_RATE)
    """Probability that a packet is held until the next packet in the same direction has
    passed (at most ``delay_time``), so the two arrive swapped."""

    corrupt: float = field(default=0.0, metadata=_RATE)
    """Probability that one bit of a packet is flipped (checksums should catch it)."""

    delay: float = field(default=0.0, metadata=_RATE)
    """Probability that a packet is held for ``delay_time`` seconds."""

    delay_time: float = field(default=0.05, metadata={"min": 0.0, "max": 60.0})
    """Seconds a delayed packet is held; also the longest a reordered packet waits."""

    direction: Direction = "both"
    """Which packets random faults apply to: ``"in"`` (received), ``"out"`` (sent) or both."""

    ce_mark: float = field(default=0.0, metadata=_RATE)
    """Probability that an ECN-capable IPv4 datagram (ECT(0) or ECT(1)) is marked CE, as an
    AQM router would (RFC 3168 §5); the header checksum is fixed."""

    ports: list[int] = field(default_factory=list, metadata={"check": _check_ports})
    """Random faults apply only to TCP and UDP datagrams from or to one of these ports (either
    end; IPv4 or IPv6, first fragments and unfragmented datagrams); other packets pass untouched.
    Empty (the default): every packet. Scripted rules are not restricted by it."""


@dataclass(slots=True, eq=False)
class FaultRule:
    """A scripted fault: *action* on matching packets number ``nth .. nth + count - 1``."""

    action: Action
    direction: Direction = "both"
    nth: int = 1
    match: Callable[[bytes], bool] | None = None
    count: int = 1
    seen: int = 0
    """Matching packets seen so far (counting from the rule's creation)."""
    fired: int = 0
    """Packets the action was applied to so far."""

    @property
    def done(self) -> bool:
        return self.fired >= self.count


@dataclass(slots=True, eq=False)
class _Held:
    release_at: float
    seq: int
    inbound: bool
    pkt: Packet
    released: bool = False

    def __lt__(self, other: _Held) -> bool:
        return (self.release_at, self.seq) < (other.release_at, other.seq)


class FaultInjector(BaseHandler):
    """Pass-through handler that drops, duplicates, corrupts, delays and reorders packets."""

    def __init__(self, name: str, settings: FaultSettings) -> None:
        self.name = name
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.rules: list[FaultRule] = []
        self._heap: list[_Held] = []
        self._seq = 0
        # Reorder-held packets per direction, waiting for the next packet to pass.
        self._reorder_in: list[_Held] = []
        self._reorder_out: list[_Held] = []
        s = settings
        any_rate = any(r > 0.0 for r in (s.drop, s.duplicate, s.reorder, s.corrupt, s.delay, s.ce_mark))
        self._random_in = any_rate and s.direction in ("both", "in")
        self._random_out = any_rate and s.direction in ("both", "out")
        self._active_in = self._random_in
        self._active_out = self._random_out
        self._ports: frozenset[int] | None = frozenset(s.ports) if s.ports else None

    # ------------------------------------------------------------------ scripted faults

    def add_rule(
        self,
        action: Action,
        *,
        direction: Direction = "both",
        nth: int = 1,
        match: Callable[[bytes], bool] | None = None,
        count: int = 1,
    ) -> FaultRule:
        """Apply *action* to the *nth* packet in *direction* that satisfies *match* (all
        packets if ``None``), counting from 1 now, and to the ``count - 1`` matching packets
        after it. Returns the rule, whose ``fired`` counts the packets it acted on.

        :raises ValueError: for an unknown action or direction, or ``nth``/``count`` below 1.
        """
        if action not in _ACTIONS:
            raise ValueError(f"fault rule: unknown action {action!r} (known: {', '.join(_ACTIONS)})")
        if direction not in _DIRECTIONS:
            raise ValueError(f"fault rule: unknown direction {direction!r} (known: {', '.join(_DIRECTIONS)})")
        if nth < 1 or count < 1:
            raise ValueError(f"fault rule: nth and count must be at least 1, got nth={nth} count={count}")
        rule = FaultRule(action, direction, nth, match, count)
        self.rules.append(rule)
        self._update_active()
        return rule

    def drop_next(self, direction: Direction = "in") -> FaultRule:
        """Drop the next packet in *direction*."""
        return self.add_rule("drop", direction=direction)

    def _update_active(self) -> None:
        self._active_in = self._random_in or any(r.direction != "out" for r in self.rules)
        self._active_out = self._random_out or any(r.direction != "in" for r in self.rules)

    # ------------------------------------------------------------------ packet path

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        if not self._active_in:
            return pkt
        return self._process(pkt, ctx, True)

    def send(self, pkt: Packet, ctx: Context) -> Packet | None:
        if not self._active_out:
            return pkt
        return self._process(pkt, ctx, False)

    def _process(self, pkt: Packet, ctx: Context, inbound: bool) -> Packet | None:
        data: bytes | None = None
        action: str | None = None
        if self.rules:
            data = _datagram(pkt, inbound)
            action = self._rule_action(data, inbound)
        duplicate = corrupt = delay = reorder = False
        if action is not None:
            if action == "drop":
                self._drop(ctx)
                return None
            duplicate = action == "duplicate"
            corrupt = action == "corrupt"
            delay = action == "delay"
        elif (self._random_in if inbound else self._random_out) and (
            self._ports is None or _ports_of(pkt.payload if inbound else pkt.to_bytes()) & self._ports
        ):
            s, rand = self.settings, self.rng.random
            if s.drop and rand() < s.drop:
                self._drop(ctx)
                return None
            if s.ce_mark:
                data = _datagram(pkt, inbound)
                marked = _mark_ce(data) if rand() < s.ce_mark else None
                if marked is not None:
                    ctx.stats.count("fault.ce_marked")
                    data = marked
                    pkt = _fresh(data, pkt, inbound)
            corrupt = bool(s.corrupt) and rand() < s.corrupt
            duplicate = bool(s.duplicate) and rand() < s.duplicate
            delay = bool(s.delay) and rand() < s.delay
            reorder = not delay and bool(s.reorder) and rand() < s.reorder

        if corrupt:
            if data is None:
                data = _datagram(pkt, inbound)
            if not inbound and pkt.csum_partial:
                # TUN offload: the kernel would complete the checksum over the flipped bit and
                # deliver it. Complete it here first; a super-segment cannot be, so it is lost.
                if pkt.gso_size:
                    ctx.stats.count("fault.corrupted")
                    self._drop(ctx)
                    return None
                data = _complete_tcp_checksum(data)
            if data:
                data = self._flip_bit(data)
                ctx.stats.count("fault.corrupted")
            fresh = _fresh(data, pkt, inbound)
            fresh.csum_ok = fresh.csum_partial = False  # a corrupted frame's checksum is checked in full
            pkt = fresh
        elif delay or reorder:
            if inbound:  # the link's buffer may be reused once this call returns
                pkt = _fresh(data if data is not None else bytes(pkt.payload), pkt, inbound)
            else:  # freeze the headers and payload as they are now
                pkt.to_bytes()
        if duplicate:
            ctx.stats.count("fault.duplicated")
            if data is None:
                data = _datagram(pkt, inbound)
            self._forward(_fresh(data, pkt, inbound), ctx, inbound)
        if delay:
            ctx.stats.count("fault.delayed")
            self._hold(pkt, ctx.now + self.settings.delay_time, inbound)
            return None
        if reorder:
            ctx.stats.count("fault.reordered")
            held = self._hold(pkt, ctx.now + self.settings.delay_time, inbound)
            (self._reorder_in if inbound else self._reorder_out).append(held)
            return None
        waiting = self._reorder_in if inbound else self._reorder_out
        if not waiting:
            return pkt
        # A reordered packet is waiting for this one: pass this one first, then release it.
        if inbound:
            self._reorder_in = []
        else:
            self._reorder_out = []
        self._forward(pkt, ctx, inbound)
        for held in waiting:
            if not held.released:
                held.released = True
                self._forward(held.pkt, ctx, inbound)
        return None

    def _rule_action(self, data: bytes, inbound: bool) -> str | None:
        """Advance every rule that matches; return the action of the first one that fires."""
        action: str | None = None
        finished = False
        skip = "out" if inbound else "in"
        for rule in self.rules:
            if rule.direction == skip or (rule.match is not None and not rule.match(data)):
                continue
            rule.seen += 1
            if rule.seen >= rule.nth and action is None:
                action = rule.action
                rule.fired += 1
                finished = finished or rule.done
        if finished:
            self.rules = [r for r in self.rules if not r.done]
            self._update_active()
        return action

    def _drop(self, ctx: Context) -> None:
        ctx.stats.count("fault.dropped")
        ctx.stats.drop("fault", "injected")

    def _flip_bit(self, data: bytes) -> bytes:
        buf = bytearray(data)
        buf[self.rng.randrange(len(buf))] ^= 1 << self.rng.randrange(8)
        return bytes(buf)

    def _forward(self, pkt: Packet, ctx: Context, inbound: bool) -> None:
        if inbound:
            ctx.deliver(self, pkt)
        else:
            ctx.transmit(self, pkt)

    # ------------------------------------------------------------------ held packets

    def _hold(self, pkt: Packet, release_at: float, inbound: bool) -> _Held:
        self._seq += 1
        held = _Held(release_at, self._seq, inbound, pkt)
        heapq.heappush(self._heap, held)
        return held

    @property
    def held(self) -> int:
        """Number of packets currently held (delayed or waiting to be reordered)."""
        return sum(1 for h in self._heap if not h.released)

    def poll_at(self) -> float | None:
        heap = self._heap
        while heap and heap[0].released:
            heapq.heappop(heap)
        return heap[0].release_at if heap else None

    def handle_timer(self, ctx: Context) -> None:
        heap = self._heap
        now = ctx.now
        while heap and heap[0].release_at <= now:
            held = heapq.heappop(heap)
            if held.released:
                continue
            held.released = True
            self._forward(held.pkt, ctx, held.inbound)


def _mark_ce(data: bytes) -> bytes | None:
    """Set CE on an ECN-capable IPv4 datagram (RFC 3168 §5), fixing the header checksum;
    ``None`` if it is not IPv4 or not ECN-capable."""
    if len(data) < 20 or data[0] >> 4 != 4 or not data[1] & 3 or data[1] & 3 == 3:
        return None
    ihl = (data[0] & 0x0F) * 4
    buf = bytearray(data)
    buf[1] |= 3
    buf[10:12] = b"\0\0"
    csum = internet_checksum(memoryview(buf)[:ihl])
    buf[10] = csum >> 8
    buf[11] = csum & 0xFF
    return bytes(buf)


def _ports_of(data: bytes | bytearray | memoryview) -> frozenset[int]:
    """The source and destination ports of a TCP or UDP datagram (IPv4: RFC 791 §3.1, the header
    length from IHL, none for a non-first fragment; IPv6: RFC 8200 §3, a TCP/UDP header right after
    the fixed header only); empty for anything else or too short."""
    if len(data) < 20:
        return frozenset()
    version = data[0] >> 4
    if version == 4:
        ihl = (data[0] & 0x0F) * 4
        if data[9] not in (6, 17) or (data[6] & 0x1F or data[7]) or len(data) < ihl + 4:
            return frozenset()
        off = ihl
    elif version == 6:
        if len(data) < 44 or data[6] not in (6, 17):
            return frozenset()
        off = 40
    else:
        return frozenset()
    return frozenset(((data[off] << 8) | data[off + 1], (data[off + 2] << 8) | data[off + 3]))


def _datagram(pkt: Packet, inbound: bool) -> bytes:
    return bytes(pkt.payload) if inbound else pkt.to_bytes()


def _fresh(data: bytes, pkt: Packet, inbound: bool) -> Packet:
    """A new packet for *data*, keeping the TUN offload marks of *pkt* (partial checksums,
    super-segments) so the link still describes it right."""
    new = Packet.inbound(data, pkt.frame_no) if inbound else Packet(data, pkt.net)
    new.csum_ok, new.csum_partial, new.gso_size = pkt.csum_ok, pkt.csum_partial, pkt.gso_size
    new.upper = pkt.upper  # the key that picks the layer above (docs/architecture.md, "Pipeline graph")
    return new


def _complete_tcp_checksum(data: bytes) -> bytes:
    """An IPv4/TCP datagram whose TCP checksum field holds the pseudo-header sum (TUN offload)
    with the full checksum in its place (RFC 9293 §3.1); other datagrams unchanged."""
    if len(data) < 40 or data[0] >> 4 != 4 or data[9] != 6:
        return data
    ihl = (data[0] & 0x0F) * 4
    buf = bytearray(data)
    # The field already holds the pseudo-header's sum, so summing the segment as it is adds it.
    csum = internet_checksum(memoryview(buf)[ihl:])
    buf[ihl + 16] = csum >> 8
    buf[ihl + 17] = csum & 0xFF
    return bytes(buf)


def _fault(name: str, settings: FaultSettings) -> FaultInjector:
    return FaultInjector(name, settings)


@hookimpl
def stack_register(registry: Registry) -> None:
    registry.add_layer(
        "fault",
        _fault,
        FaultSettings,
        doc="seeded fault injection: drop, duplicate, corrupt, delay",
        requires=("link",),
    )
