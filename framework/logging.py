"""Logging with structlog.

Library modules only call ``structlog.get_logger(__name__)`` and log events as dotted nouns with
keyword values (``log.info("tcp.state", old=..., new=...)``). Only the command-line program
calls :func:`configure_logging`; importing the library never configures anything.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error", "critical")


def configure_logging(*, fmt: str = "console", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog for an application: ``fmt`` is ``"console"`` or ``"json"``.

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
    ]
    renderer: list[Any]
    if fmt == "json":
        renderer = [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=False)]
    structlog.configure(
        cache_logger_on_first_use=True,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        processors=shared + renderer,
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
    )
