"""Logging with structlog.

Library modules only call ``structlog.get_logger(__name__)`` and log events as dotted nouns with
keyword values (``log.info("tcp.state", old=..., new=...)``). Only the command-line program
calls :func:`configure_logging`; importing the library never configures anything.

With a capture running, :func:`link_pcap` makes every event that is emitted carry
``pcap_frame``: the number of the last frame written to the pcap (Wireshark's ``frame.number``),
so a decision made while handling frame N names N. It costs nothing for filtered-out events
(processors run only for events that pass the level filter).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Protocol, TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error", "critical")


class FrameCounter(Protocol):
    @property
    def frames(self) -> int:
        """Frames written so far (the last one's 1-based number)."""
        ...


_pcap: FrameCounter | None = None


def link_pcap(counter: FrameCounter | None) -> None:
    """Stamp events with ``pcap_frame`` from *counter* (a pcap writer); ``None`` unlinks."""
    global _pcap
    _pcap = counter


def add_pcap_frame(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: ``pcap_frame`` = the number of the last frame in the capture."""
    if _pcap is not None:
        event.setdefault("pcap_frame", _pcap.frames)
    return event


def configure_logging(
    *, fmt: str = "console", level: str = "info", stream: TextIO | None = None, cache: bool = True
) -> None:
    """Configure structlog for an application: ``fmt`` is ``"console"`` or ``"json"``.

    With *cache* (the default, for speed), each logger freezes this configuration the first
    time it is used; a test suite that configures logging many times passes ``cache=False``.

    :raises ValueError: for an unknown format or level.
    """
    if fmt not in ("console", "json"):
        raise ValueError(f"log format must be 'console' or 'json', got {fmt!r}")
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_pcap_frame,
    ]
    renderer: list[Any]
    if fmt == "json":
        renderer = [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=False)]
    structlog.configure(
        cache_logger_on_first_use=cache,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        processors=shared + renderer,
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
    )
