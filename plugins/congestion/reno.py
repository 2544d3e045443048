"""Reno congestion control: RFC 5681 with NewReno recovery (RFC 6582) and byte counting
(RFC 3465), registered as the algorithm ``reno``.

The algorithm itself is :class:`layers.tcp.congestion.CongestionControl`, the core's fallback,
so a stack with every plugin disabled still obeys MUST-19 (slow start, congestion avoidance,
exponential backoff). This plugin only makes it selectable by name.
"""

from __future__ import annotations

from framework.plugins import hookimpl
from framework.registry import Registry
from layers.tcp.congestion import CongestionControl
from layers.tcp.extensions import add_congestion_control


def _reno(mss: int, settings: object) -> CongestionControl:
    return CongestionControl(mss)


@hookimpl
def stack_register(registry: Registry) -> None:
    add_congestion_control(registry, "reno", _reno, doc="RFC 5681 + RFC 6582 NewReno, with RFC 3465 byte counting")
