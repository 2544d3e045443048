"""Named counters: every drop by layer and reason, and event counters by name.

The one way to count: :meth:`Stats.drop` for a packet discarded on purpose (counted always,
logged at debug level) and :meth:`Stats.count` for anything else; every handler reaches them
as ``ctx.stats``, the stack and the I/O edge as ``stack.stats``. The dictionaries are for
reading. Counting is a dict increment (tens of nanoseconds), cheap enough for the per-packet
path.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import structlog

logger = structlog.get_logger("tcpstack.drop")


class Stats:
    """Drop and event counters for one stack.

    ``drops[(layer, reason)]`` counts packets discarded on purpose; ``events[name]`` counts
    everything else worth counting (frames in and out, echo replies, reassemblies, ...).
    """

    __slots__ = ("_log", "drops", "events")

    def __init__(self) -> None:
        self.drops: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.events: defaultdict[str, int] = defaultdict(int)
        self._log: Any = logger

    def drop(self, layer: str, reason: str, **detail: object) -> None:
        """Count (always) and log (at debug level) one packet *layer* discarded for *reason*."""
        self.drops[(layer, reason)] += 1
        self._log.debug("packet.dropped", layer=layer, reason=reason, **detail)

    def count(self, name: str, n: int = 1) -> None:
        """Add *n* to the event counter *name*."""
        self.events[name] += n

    def total_drops(self) -> int:
        return sum(self.drops.values())

    def as_dict(self) -> dict[str, dict[str, int]]:
        """A JSON-ready snapshot: ``{"drops": {"ipv4.bad_checksum": 1}, "events": {...}}``."""
        return {
            "drops": {f"{layer}.{reason}": n for (layer, reason), n in sorted(self.drops.items())},
            "events": dict(sorted(self.events.items())),
        }
