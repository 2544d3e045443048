"""Logging with structlog.

Library modules only call ``structlog.get_logger(__name__)`` and log events as dotted nouns with
keyword values (``log.info("tcp.state", old=..., new=...)``).

The library is quiet unless the application configures logging: importing :mod:`tcpstack`
installs :func:`install_quiet_default` (warnings and errors only, one line each, on standard
error), unless structlog was configured before. structlog's own default would print every
debug event to standard output, which costs a busy stack two thirds of its throughput. An
application that wants the stack's events calls :func:`configure_logging` (``tcpstack up``
does, from its ``--log-format`` and ``--log-level``), or configures structlog itself.

With a capture running, :func:`link_pcap` makes every event that is emitted carry
``pcap_frame``: the number of the last frame written to the pcap (Wireshark's ``frame.number``),
so a decision made while handling frame N names N. It costs nothing for filtered-out events
(processors run only for events that pass the level filter).
"""

from __future__ import annotations

import asyncio
import atexit
import datetime
import logging
import re
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, Protocol, TextIO

import structlog

from framework.lazylog import DirectChain, set_direct_chain

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


_NEEDS_REPR = re.compile("[ \t=\r\n\"']").search  # what ConsoleRenderer._repr quotes in a string
_NOTHING: Any = object()
#: Keys the console renderer treats specially (traceback, stack, logger name, the default column).
_SPECIAL_KEYS = ("stack", "exception", "exc_info", "logger", "logger_name", "")


class FastConsoleRenderer(structlog.dev.ConsoleRenderer):
    """structlog's ``ConsoleRenderer(colors=False)``, rendering the common event in one pass.

    The stock renderer formats each key through a column formatter with its own ``StringIO``
    (about 30 µs for a ``tcp.closed`` line, most of what the line costs). An event with none of
    the keys it treats specially (``stack``, ``exception``, ``exc_info``, ``logger``,
    ``logger_name``) is rendered here to the same text: timestamp, ``[level]`` padded to the
    longest level name, the event padded to 30 characters, then ``key=value`` sorted by key, a
    string quoted with ``repr`` only when it holds a space, tab, ``=``, a quote or a line break.
    Any other event goes to the stock renderer. tests/framework/test_logging_render.py checks
    the two give the same text.
    """

    def __init__(self) -> None:
        super().__init__(colors=False)
        self._level_width = self._longest_level

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> str:
        for key in _SPECIAL_KEYS:
            if key in event_dict:
                return super().__call__(logger, name, event_dict)
        level = event_dict.get("level", "")
        if not isinstance(level, str):
            return super().__call__(logger, name, event_dict)
        parts: list[str] = []
        timestamp = event_dict.pop("timestamp", _NOTHING)
        if timestamp is not _NOTHING:
            stamp = str(timestamp)
            if stamp:  # an empty column is left out
                parts.append(stamp)
        if event_dict.pop("level", _NOTHING) is not _NOTHING:
            parts.append(f"[{level.ljust(self._level_width)}]")
        event = event_dict.pop("event", _NOTHING)
        if event is not _NOTHING:
            text = str(event).ljust(self._pad_event_to)
            if text:
                parts.append(text)
        for key in sorted(event_dict):  # "key=..." is never empty
            value = event_dict[key]
            if isinstance(value, str):
                parts.append(f"{key}={value!r}" if _NEEDS_REPR(value) else f"{key}={value}")
            else:
                parts.append(f"{key}={value!r}")
        return " ".join(parts).rstrip(" ")


class IsoUtcStamper:
    """structlog's ``TimeStamper(fmt="iso", utc=True)``: ``timestamp`` as
    ``2026-12-07T15:00:00.123456Z`` (no fraction when the microseconds are 0, as
    ``datetime.isoformat``), with the date and time of day formatted once per second instead
    of building a ``datetime`` per event."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        second, ns = divmod(time.time_ns(), 1_000_000_000)
        if second != self._second:
            self._prefix = datetime.datetime.fromtimestamp(second, datetime.UTC).isoformat()[:19]
            self._second = second
        us = ns // 1000
        event_dict["timestamp"] = f"{self._prefix}.{us:06d}Z" if us else f"{self._prefix}Z"
        return event_dict


#: A batch of buffered lines is written once it holds this many characters: at most
#: ``PIPE_BUF`` (4096) bytes, so even on a pipe shared with other processes one ``write(2)``
#: lands whole.
BATCH_CHARS = 4000


class LineSink:
    """One log destination: *file*, a lock, and (with *flush_after* > 0) the lines waiting to be
    written together.

    Without *flush_after*, every line is one ``write`` call. With it, lines below ``warning``
    logged while an asyncio event loop runs in this thread wait, at most *flush_after* seconds
    (a ``call_later`` on that loop) or until they hold :data:`BATCH_CHARS` characters, and then
    go out in one ``write``: a stack that logs a line per connection then makes one system call
    per batch of lines instead of one per line. A ``warning`` or worse line, a line logged with
    no loop running, :meth:`flush` and the end of the process (``atexit``) write what waits
    first, so lines keep their order. Every write holds whole lines."""

    def __init__(self, file: TextIO, flush_after: float = 0.0) -> None:
        self.file = file
        self.flush_after = flush_after
        self.lock = threading.Lock()
        self._pending: list[str] = []
        self._chars = 0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._atexit = False

    def write_now(self, message: str) -> None:
        """*message* (one line, no newline) at once, after any lines waiting."""
        with self.lock:
            if self._pending:
                self._pending.append(message)
                text = self._take()
            else:
                text = message + "\n"
            self.file.write(text)
            self.file.flush()

    def write_soon(self, message: str) -> None:
        """*message* within :attr:`flush_after` seconds (at once without a running loop)."""
        if self.flush_after <= 0:
            self.write_now(message)
            return
        loop = self._loop
        if self._handle is None or loop is None or not loop.is_running():
            # Which loop runs (asyncio asks getpid(2) for it): only when a batch starts.
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.write_now(message)
                return
            if self._handle is not None and loop is not self._loop:
                self.flush()  # the loop that was to write them is gone
        if self._chars + len(message) >= BATCH_CHARS:
            self.flush()
        with self.lock:
            self._pending.append(message)
            self._chars += len(message) + 1
            if self._handle is None:
                self._loop = loop
                self._handle = loop.call_later(self.flush_after, self.flush)
                if not self._atexit:
                    self._atexit = True
                    atexit.register(self.flush)

    def flush(self) -> None:
        """Write the lines waiting, if any, in one call."""
        with self.lock:
            if not self._pending:
                return
            text = self._take()
            try:
                self.file.write(text)
                self.file.flush()
            except ValueError:  # the file was closed under us (the end of a test, of the process)
                pass

    def _take(self) -> str:
        """The waiting lines as one text (whole lines), and nothing waits any more."""
        text = "\n".join(self._pending) + "\n"
        self._pending = []
        self._chars = 0
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        return text


class LineLogger(structlog.PrintLogger):
    """A :class:`structlog.PrintLogger` that writes each line with one ``write`` call.

    ``print()`` writes the message and the newline separately, and standard error that is not
    a terminal is write-through: two ``write(2)`` calls per line. Processes that share one log
    file (``tcpstack up --workers N``: the parent and every worker) then could put a line of
    one inside a line of another; one call per line keeps every line whole.

    Loggers made by one :class:`LineLoggerFactory` share its :class:`LineSink`: with the
    factory's *flush_after*, ``debug`` and ``info`` lines may wait to be written with others
    (whole lines still, in order).
    """

    def __init__(self, file: TextIO | None = None, sink: LineSink | None = None) -> None:
        super().__init__(file)
        self._sink = sink if sink is not None else LineSink(self._file)

    def msg(self, message: str) -> None:
        self._sink.write_now(message)

    def soon(self, message: str) -> None:
        self._sink.write_soon(message)

    log = debug = info = soon
    warn = warning = fatal = failure = err = error = critical = exception = msg


class LineLoggerFactory:
    """:class:`LineLogger` on *file*, or on whatever ``sys.stderr`` is when a logger is made;
    loggers on one file share one :class:`LineSink` (with *flush_after*, see there)."""

    def __init__(self, file: TextIO | None = None, flush_after: float = 0.0) -> None:
        self._file = file
        self._flush_after = flush_after
        self._sinks: dict[int, LineSink] = {}

    def __call__(self, *args: Any) -> LineLogger:
        file = self._file if self._file is not None else sys.stderr
        sink = self._sinks.get(id(file))
        if sink is None or sink.file is not file:
            sink = self._sinks[id(file)] = LineSink(file, self._flush_after)
        return LineLogger(file, sink)

    def flush(self) -> None:
        """Write every line still waiting."""
        for sink in list(self._sinks.values()):
            sink.flush()


_StderrLoggerFactory = LineLoggerFactory  # the quiet default: standard error at call time


def install_quiet_default() -> bool:
    """Unless structlog is configured already: warnings and errors only, one line each on standard
    error; everything below ``warning`` costs one no-op call. Returns whether it installed.

    Nothing is cached (``cache_logger_on_first_use`` stays off), so a later
    :func:`configure_logging` (or ``structlog.configure``) takes effect for every logger.
    """
    if structlog.is_configured():
        return False
    structlog.configure(
        cache_logger_on_first_use=False,
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        logger_factory=_StderrLoggerFactory(),
    )
    return True


_factory: LineLoggerFactory | None = None  # the one configure_logging made last


def flush_logs() -> None:
    """Write the log lines :func:`configure_logging`'s *flush_after* holds back, if any."""
    if _factory is not None:
        _factory.flush()


def configure_logging(
    *,
    fmt: str = "console",
    level: str = "info",
    stream: TextIO | None = None,
    cache: bool = True,
    flush_after: float = 0.0,
) -> None:
    """Configure structlog for an application: ``fmt`` is ``"console"`` or ``"json"``, events at
    *level* and above go to *stream* (default: standard error).

    With *cache* (the default, for speed), each logger freezes this configuration the first
    time it is used; a test suite that configures logging many times passes ``cache=False``.

    With *flush_after* (seconds, > 0), ``debug`` and ``info`` lines logged while an asyncio loop
    runs may wait that long to be written together with others, in one ``write`` (whole lines,
    in order; ``warning`` and worse, and the end of the process, write what waits at once):
    ``tcpstack up`` passes 0.05, which saves it a system call per connection at ``info``
    (:class:`LineSink`). :func:`flush_logs` writes what waits.

    :raises ValueError: for an unknown format or level, or a negative *flush_after*.
    """
    if not flush_after >= 0:
        raise ValueError(f"flush_after must be 0 or more seconds, got {flush_after!r}")
    if fmt not in ("console", "json"):
        raise ValueError(f"log format must be 'console' or 'json', got {fmt!r}")
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        IsoUtcStamper(),  # TimeStamper(fmt="iso", utc=True)'s text
        add_pcap_frame,
    ]
    renderer: list[Any]
    if fmt == "json":
        renderer = [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        renderer = [FastConsoleRenderer()]  # ConsoleRenderer(colors=False)'s text, faster
    processors = shared + renderer
    factory = LineLoggerFactory(stream or sys.stderr, flush_after)  # whole lines per write
    global _factory
    flush_logs()  # what a previous configuration still holds goes out before this one's lines
    _factory = factory
    structlog.configure(
        cache_logger_on_first_use=cache,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        processors=processors,
        logger_factory=factory,
    )
    # Per-connection lines (framework/lazylog.py) run this chain without structlog's bound
    # logger while this configuration stands (docs/architecture.md, "Connection cost").
    set_direct_chain(DirectChain(processors, factory, factory()))
