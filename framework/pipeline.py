"""The pipeline: a tree of handlers rooted at the link, run bottom-up for receive and down the
one path to the root for send. It knows no protocol; it only moves
:class:`~framework.packet.Packet` objects.

Each handler sits on exactly one handler below it (its parent); the bottom one (the link) sits on
nothing. A handler may have several handlers above it: UDP beside TCP on IPv4, IPv6 beside IPv4
on the link. The handler below then chooses among them by the demultiplexing key it announces
in ``pkt.upper`` (IPv4: the IP protocol number; a raw-IP link: the IP version), each handler
above taking the keys it was placed with (:class:`Node`). A pass-through middleware leaves
``pkt.upper`` as it found it, so it may sit anywhere, with one or several handlers above it.

Dispatch is precomputed at assembly: each maximal run of single-child handlers becomes one tuple
walked by a plain loop (a chain is one run, as fast as a list), and each branching handler a
``dict`` from key to the run above it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from framework.errors import ConfigError
from framework.handler import EventSource, OutputSource, PacketHandler
from framework.packet import Frame, Packet

if TYPE_CHECKING:
    from framework.context import Context


@dataclass(frozen=True, slots=True)
class Node:
    """A handler and its place in the tree, for :class:`Pipeline`.

    A bare handler in the list given to :class:`Pipeline` means ``Node(handler)``.
    """

    handler: PacketHandler
    below: str | None = None
    """Name of the handler this one sits on, listed before it; ``None``: the previous entry
    (for the first entry: nothing, it is the bottom)."""
    keys: tuple[int, ...] = ()
    """The values of ``pkt.upper`` under which this handler takes packets from the one below
    (e.g. ``(6,)`` for TCP on IPv4). Needed when the handler below has several handlers above
    it; also tells the handler below what the handlers above it take (:class:`Above`)."""


class Above(tuple[PacketHandler, ...]):
    """What :meth:`~framework.handler.PacketHandler.attach` receives as ``above``: every handler
    above this one, nearest first (breadth-first where the tree branches: the handlers directly
    above in list order, then theirs, ...). On a chain this is exactly the chain above.

    :ivar direct: the handlers directly above (sitting on this one), in list order.
    :ivar keys: every ``pkt.upper`` value some handler directly above takes (their
        :attr:`Node.keys`), e.g. the IP protocols the transports on an IPv4 layer handle.
    """

    direct: tuple[PacketHandler, ...]
    keys: frozenset[int]

    def __new__(
        cls, handlers: Iterable[PacketHandler], direct: Iterable[PacketHandler] = (), keys: Iterable[int] = ()
    ) -> Self:
        self = super().__new__(cls, handlers)
        self.direct = tuple(direct)
        self.keys = frozenset(keys)
        return self


#: A run of single-child handlers walked in one loop, then the table choosing the next run by
#: ``pkt.upper`` (``None``: the run ends at a handler with nothing above it).
_Run = tuple[tuple[PacketHandler, ...], "dict[int, _Run] | None"]


class Pipeline:
    """Handlers from bottom (link) to top (transports), as a tree.

    :param layers: handlers (or :class:`Node` placements) bottom first; each after the one it
        sits on. Plain handlers form a chain, each on the previous one.
    :raises ConfigError: for an empty list, two handlers of one name, a ``below`` naming no
        handler listed before, or handlers above one handler that cannot be told apart by key.
    """

    def __init__(self, layers: Sequence[PacketHandler | Node]) -> None:
        if not layers:
            raise ConfigError(["layers: a stack needs at least one layer"])
        nodes = [n if isinstance(n, Node) else Node(n) for n in layers]
        handlers = tuple(n.handler for n in nodes)
        names = [h.name for h in handlers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError([f"layers: duplicate layer name {n!r}" for n in dupes])
        parents = _parents(nodes, names)
        self.handlers: tuple[PacketHandler, ...] = handlers
        children: list[list[int]] = [[] for _ in nodes]
        for i, p in enumerate(parents):
            if p is not None:
                children[p].append(i)
        self._check_keys(nodes, children)
        # Precomputed paths: what lies below each handler (its path to the root, nearest first).
        below: list[tuple[PacketHandler, ...]] = []
        for p in parents:
            below.append(() if p is None else (handlers[p], *below[p]))
        self._below = {id(h): below[i] for i, h in enumerate(handlers)}
        # Precomputed receive dispatch: the run starting at each handler, and what lies above each.
        runs: dict[int, _Run] = {}
        for i in reversed(range(len(nodes))):
            chain = [handlers[i]]
            j = i
            while len(children[j]) == 1:
                j = children[j][0]
                chain.append(handlers[j])
            runs[i] = (tuple(chain), self._table(nodes, children[j], runs) if children[j] else None)
        self._root: _Run = runs[0]
        self._next: dict[int, _Run] = {}
        for i, h in enumerate(handlers):
            kids = children[i]
            self._next[id(h)] = runs[kids[0]] if len(kids) == 1 else ((), self._table(nodes, kids, runs) or None)
        self.tx_queue: deque[Frame] = deque()
        # Only handlers that override flush/dispatch_events are called for them.
        self._flushers = tuple(h for h in handlers if _overrides(h, "flush"))
        self._dispatchers: tuple[EventSource, ...] = tuple(h for h in handlers if isinstance(h, EventSource))
        self.output_sources: tuple[OutputSource, ...] = tuple(h for h in handlers if isinstance(h, OutputSource))
        for i, h in enumerate(handlers):
            h.attach(self._below[id(h)], _above(i, nodes, children))

    @staticmethod
    def _check_keys(nodes: Sequence[Node], children: Sequence[Sequence[int]]) -> None:
        problems: list[str] = []
        for p, kids in enumerate(children):
            if len(kids) < 2:
                continue
            parent = nodes[p].handler.name
            taken: dict[int, str] = {}
            for c in kids:
                name = nodes[c].handler.name
                if not nodes[c].keys:
                    problems.append(f"layers: {name!r} sits beside other layers on {parent!r} but takes no key")
                for key in nodes[c].keys:
                    if key in taken:
                        problems.append(f"layers: {taken[key]!r} and {name!r} both take key {key} from {parent!r}")
                    taken[key] = name
        if problems:
            raise ConfigError(problems)

    @staticmethod
    def _table(nodes: Sequence[Node], kids: Sequence[int], runs: dict[int, _Run]) -> dict[int, _Run]:
        return {key: runs[c] for c in kids for key in nodes[c].keys}

    def by_name(self, name: str) -> PacketHandler:
        for h in self.handlers:
            if h.name == name:
                return h
        raise KeyError(name)

    @property
    def root(self) -> PacketHandler:
        """The bottom handler (the link): every inbound packet starts there."""
        return self.handlers[0]

    def next_above(self, handler: PacketHandler, key: int) -> PacketHandler | None:
        """The handler that receives a packet *handler* passes up with ``pkt.upper == key``
        (the only one above it, whatever the key, where it has one), or ``None``: what a
        handler taking a shortcut past others checks, once, at assembly."""
        chain, table = self._next[id(handler)]
        if chain:
            return chain[0]
        nxt = table.get(key) if table is not None else None
        return nxt[0][0] if nxt is not None and nxt[0] else None

    def receive(self, pkt: Packet, ctx: Context) -> None:
        """Run an inbound packet up from the bottom handler."""
        self._run_up(self._root, pkt, ctx)

    def receive_above(self, origin: PacketHandler, pkt: Packet, ctx: Context) -> None:
        """Run *pkt* up from the handler(s) above *origin* (chosen by ``pkt.upper`` where several)."""
        self._run_up(self._next[id(origin)], pkt, ctx)

    @staticmethod
    def _run_up(run: _Run, pkt: Packet, ctx: Context) -> None:
        p: Packet | None = pkt
        chain, table = run
        for handler in chain:
            p = handler.receive(p, ctx)  # type: ignore[arg-type]
            if p is None:
                return
        # A chain ends here; where handlers branch, the key the one below set picks the next run.
        while table is not None:
            nxt = table.get(p.upper)  # type: ignore[union-attr]
            if nxt is None:
                break
            chain, table = nxt
            for handler in chain:
                p = handler.receive(p, ctx)  # type: ignore[arg-type]
                if p is None:
                    return
        # Nobody above consumed it: a packet no layer wanted is a counted drop, not a crash.
        ctx.stats.drop("pipeline", "unclaimed")

    def send_below(self, origin: PacketHandler, pkt: Packet, ctx: Context) -> None:
        """Run an outbound packet down from just below *origin*; queue the resulting frame."""
        p: Packet | None = pkt
        for handler in self._below[id(origin)]:
            p = handler.send(p, ctx)  # type: ignore[arg-type]
            if p is None:
                return
        self.tx_queue.append(p.to_bytes())  # type: ignore[union-attr]

    def flush(self, ctx: Context) -> None:
        """Let handlers emit what they deferred until the end of the batch (top first)."""
        for h in reversed(self._flushers):
            h.flush(ctx)

    def dispatch_events(self) -> None:
        """Let handlers hand queued user events to their listeners (after frames went out)."""
        for h in self._dispatchers:
            h.dispatch_events()

    def poll_at(self) -> float | None:
        best: float | None = None
        for h in self.handlers:
            t = h.poll_at()
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timer(self, ctx: Context) -> None:
        now = ctx.now
        for h in self.handlers:
            t = h.poll_at()
            if t is not None and t <= now:
                h.handle_timer(ctx)


def _parents(nodes: Sequence[Node], names: Sequence[str]) -> list[int | None]:
    """The index of the handler each one sits on (``None`` for the bottom one)."""
    problems: list[str] = []
    parents: list[int | None] = []
    for i, node in enumerate(nodes):
        if node.below is None:
            parents.append(i - 1 if i else None)
            continue
        name = names[i]
        if node.below in names[:i]:
            parents.append(names.index(node.below))
            continue
        parents.append(None)
        if node.below == name:
            problems.append(f"layers: {name!r} sits on itself")
        elif node.below in names:
            problems.append(
                f"layers: {name!r} sits on {node.below!r}, which is listed after it "
                "(list each layer after the layer it sits on)"
            )
        else:
            problems.append(f"layers: {name!r} sits on unknown layer {node.below!r}")
    if problems:
        raise ConfigError(problems)
    return parents


def _above(i: int, nodes: Sequence[Node], children: Sequence[Sequence[int]]) -> Above:
    """Everything above handler *i*, breadth-first, with the handlers and keys directly above."""
    order: list[PacketHandler] = []
    level = list(children[i])
    while level:
        order.extend(nodes[c].handler for c in level)
        level = [g for c in level for g in children[c]]
    direct = [nodes[c].handler for c in children[i]]
    return Above(order, direct, (k for c in children[i] for k in nodes[c].keys))


def _overrides(handler: PacketHandler, method: str) -> bool:
    from framework.handler import BaseHandler

    impl = getattr(type(handler), method, None)
    return impl is not None and impl is not getattr(BaseHandler, method, None)
