"""Lazy per-connection loggers: nothing is bound, built or rendered unless a line is emitted
at a level that is enabled.

A connection used to bind seven structlog loggers when it opened (its own and one per
decision-making policy: ~8 µs each) and to build its ``tcp.closed`` summary when it ended,
whether or not anything would print them. A :class:`LazyLog` keeps only the logger's name and
the connection's context (two or three references); a call at a level that structlog's
configuration filters out returns after one identity check and one flag test. A call at an
enabled level hands the same event, with the context first, to a fresh
``structlog.get_logger(name)``: the line is the one a bound logger would have emitted, under
whatever configuration is current (nothing is frozen at the first use, so a test or an
application that reconfigures structlog later is obeyed).

Which levels are enabled is read from the configured wrapper class: a class made by
structlog.make_filtering_bound_logger (what the stack's logging configuration and structlog's
defaults use) has its filtered-out methods set to one shared no-op function. Any other wrapper
class (structlog's standard-library integration, for example) counts as "every level enabled"
and does its own filtering on the emit path. The answer is cached and recomputed only when
the configured wrapper class changes.

Code that would build something costly for a line (a summary of the whole connection) asks
:meth:`LazyLog.enabled` first.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import structlog

_STRUCTLOG_CONFIG: Any
try:  # the configuration object structlog.configure() writes; read once per call, never copied
    from structlog._config import _CONFIG as _STRUCTLOG_CONFIG
except ImportError:  # pragma: no cover - a structlog that moved it: ask the public API instead
    _STRUCTLOG_CONFIG = None

LEVELS = ("debug", "info", "warning", "error", "critical")

#: The no-op function filtering wrapper classes install for their filtered-out levels.
_NOP = structlog.make_filtering_bound_logger(logging.CRITICAL).debug


def _wrapper_class() -> Any:
    if _STRUCTLOG_CONFIG is not None:
        return _STRUCTLOG_CONFIG.default_wrapper_class
    return structlog.get_config()["wrapper_class"]  # pragma: no cover


class _Levels:
    """Which levels the current structlog configuration lets through (one shared instance)."""

    __slots__ = ("critical", "debug", "error", "info", "warning", "wrapper")

    def __init__(self) -> None:
        self.wrapper: Any = None
        self.debug = self.info = self.warning = self.error = self.critical = True

    def refresh(self, wrapper: Any) -> None:
        self.wrapper = wrapper
        for level in LEVELS:
            setattr(self, level, getattr(wrapper, level, None) is not _NOP)


_levels = _Levels()


def _current() -> _Levels:
    wrapper = _wrapper_class()
    if wrapper is not _levels.wrapper:
        _levels.refresh(wrapper)
    return _levels


_loggers: dict[str, tuple[tuple[Any, ...], Any]] = {}


def _logger(name: str) -> Any:
    """The structlog logger an emission goes through. Under ``cache_logger_on_first_use`` one
    per name, assembled again whenever the configuration changes (structlog's own cached
    loggers would keep the configuration of their first use); otherwise a fresh one."""
    cfg = _STRUCTLOG_CONFIG
    if cfg is None or cfg.cache_logger_on_first_use is not True:
        return structlog.get_logger(name)
    hit = _loggers.get(name)
    if hit is not None:
        was = hit[0]
        if (
            was[0] is cfg.default_wrapper_class
            and was[1] is cfg.default_processors
            and was[2] is cfg.logger_factory
            and was[3] is cfg.default_context_class
        ):
            return hit[1]
    key = (cfg.default_wrapper_class, cfg.default_processors, cfg.logger_factory, cfg.default_context_class)
    logger = structlog.get_logger(name).bind()
    _loggers[name] = (key, logger)
    return logger


def level_enabled(level: str) -> bool:
    """Whether structlog's current configuration emits events at *level* (``"debug"``...)."""
    return bool(getattr(_current(), level))


def debug_enabled() -> bool:
    """Whether a debug event would be emitted now, or a tap takes it: :meth:`LazyLog.debug`'s own
    test, for code on the per-segment path that asks before building a decision's keywords."""
    if _tap is not None:
        return True
    cfg = _STRUCTLOG_CONFIG
    if cfg is not None and cfg.default_wrapper_class is _levels.wrapper:
        return bool(_levels.debug)
    return bool(_current().debug)


class DebugTap(Protocol):
    """What :func:`add_debug_tap` installs: called with every debug-level :class:`LazyLog` event,
    whatever the logging level, as ``tap(conn, plugin, event, keywords)``."""

    def __call__(self, conn: str, plugin: str | None, event: str, kw: dict[str, Any], /) -> None: ...


_taps: list[DebugTap] = []
_tap: DebugTap | None = None  # the one tap, or a fan-out to several; None: no tap


def _fan_out(conn: str, plugin: str | None, event: str, kw: dict[str, Any], /) -> None:
    for tap in tuple(_taps):
        tap(conn, plugin, event, kw)


def add_debug_tap(tap: DebugTap) -> None:
    """Hand every debug-level :class:`LazyLog` event to *tap* as well, also when the logging
    configuration filters debug out, until :func:`remove_debug_tap`.

    What a capture or a probe uses to see the decisions (``tcp.decision`` events) of the moment:
    with a tap installed, :func:`debug_enabled` is true, so the per-segment path builds the
    keywords of its decisions. With none (the default) nothing changes: one module-global test
    per filtered-out debug call. A tap must not raise and must not keep *kw* (copy what it needs)."""
    global _tap
    _taps.append(tap)
    _tap = tap if len(_taps) == 1 else _fan_out


def remove_debug_tap(tap: DebugTap) -> None:
    """Undo one :func:`add_debug_tap` of *tap* (nothing if it is not installed)."""
    global _tap
    if tap in _taps:
        _taps.remove(tap)
    _tap = None if not _taps else _taps[0] if len(_taps) == 1 else _fan_out


def describe_decision(plugin: str | None, kw: dict[str, Any]) -> str:
    """One line for a decision event's keywords, for a capture comment or a probe record:
    ``ACK delayed, delayed_ack, RFC 1122 §4.2.3.2, deadline 40 ms``: the ``decision``, the
    plugin, the ``rfc``, then the other keywords as ``key value``; a ``deadline`` (an absolute
    time) is shown relative to the event's ``t``, in milliseconds; ``t`` itself is left out."""
    parts = [str(kw.get("decision", "?"))]
    if plugin:
        parts.append(plugin)
    rfc = kw.get("rfc")
    if rfc:
        parts.append(str(rfc))
    t = kw.get("t")
    for key, value in kw.items():
        if key in ("decision", "rfc", "t"):
            continue
        if key == "deadline" and isinstance(value, (int, float)) and isinstance(t, (int, float)):
            parts.append(f"deadline {round((value - t) * 1000, 3):g} ms")
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


class DirectChain:
    """structlog's processor chain run without structlog's bound logger, for one configuration.

    An application's logging setup that made the configuration (the public API's
    ``configure_logging``) registers it with :func:`set_direct_chain`: the processors list it passed
    to ``structlog.configure``, the logger factory, and one logger that factory made. While
    structlog's configuration still holds those very objects (and plain ``dict`` contexts), a
    :class:`LazyLog` line at an enabled level (not ``exception``) runs here: the same event
    dictionary a bound logger builds (``conn``, ``plugin``, the keywords, then ``event``), each
    processor in the list's current order with the same arguments, and the final value handed to
    the logger's method of the level's name, as ``BoundLoggerBase._proxy_to_logger`` does
    (``DropEvent`` drops the line). What it saves is structlog's plumbing per line (a method
    wrapper, two keyword-argument repackings, a context copy); the text is the same
    (tests/framework/test_lazylog_direct.py)."""

    __slots__ = ("factory", "logger", "processors")

    def __init__(self, processors: list[Any], factory: Any, logger: Any) -> None:
        self.processors = processors
        self.factory = factory
        self.logger = logger

    def emit(self, method: str, event_dict: Any) -> Any:
        logger = self.logger
        try:
            for proc in self.processors:
                event_dict = proc(logger, method, event_dict)
            if isinstance(event_dict, (str, bytes, bytearray)):
                return getattr(logger, method)(event_dict)
            if isinstance(event_dict, tuple):
                args, kw = event_dict
                return getattr(logger, method)(*args, **kw)
            if isinstance(event_dict, dict):
                return getattr(logger, method)(**event_dict)
        except structlog.DropEvent:
            return None
        raise ValueError(
            "Last processor didn't return an appropriate value.  "
            "Valid return values are a dict, a tuple of (args, kwargs), bytes, or a str."
        )


_direct: DirectChain | None = None


def set_direct_chain(chain: DirectChain | None) -> None:
    """Let :class:`LazyLog` run *chain* while structlog's configuration is the one it was made
    for (``None``: always go through structlog)."""
    global _direct
    _direct = chain


class LazyLog:
    """A logger for one connection (and optionally one plugin) that binds nothing until it
    emits: ``LazyLog("tcpstack.tcp", "10.0.0.2:80-10.0.0.1:4000")``, or with a plugin's name
    for its decisions.

    Events carry ``conn`` (and ``plugin``) first, then the call's keywords, as a structlog
    logger bound with ``.bind(conn=..., plugin=...)`` would emit them. Three references per
    instance (no dictionary): a connection keeps several. Methods: ``debug``, ``info``,
    ``warning``, ``error``, ``critical``, ``exception`` and :meth:`enabled`."""

    __slots__ = ("_conn", "_name", "_plugin")

    def __init__(self, name: str, conn: str, plugin: str | None = None) -> None:
        self._name = name
        self._conn = conn
        self._plugin = plugin

    @staticmethod
    def enabled(level: str) -> bool:
        """Whether an event at *level* would be emitted now (ask before building a costly one)."""
        return level_enabled(level)

    def _emit(self, method: str, event: str, kw: dict[str, Any]) -> Any:
        direct = _direct
        if direct is not None and method != "exception":
            cfg = _STRUCTLOG_CONFIG
            if (
                cfg is not None
                and cfg.default_processors is direct.processors
                and cfg.logger_factory is direct.factory
                and cfg.default_context_class is dict
                # structlog's own signatures reject these keywords (TypeError): leave that to it
                and "event" not in kw
                and "self" not in kw
                and "method_name" not in kw
            ):
                if self._plugin is None:
                    event_dict: Any = {"conn": self._conn, **kw}
                else:
                    event_dict = {"conn": self._conn, "plugin": self._plugin, **kw}
                event_dict["event"] = event
                return direct.emit(method, event_dict)
        logger = _logger(self._name)
        if self._plugin is None:
            return getattr(logger, method)(event, **{"conn": self._conn, **kw})
        return getattr(logger, method)(event, **{"conn": self._conn, "plugin": self._plugin, **kw})

    def debug(self, event: str, /, **kw: Any) -> Any:
        levels = _levels if _wrapper_class() is _levels.wrapper else _current()
        tap = _tap
        if tap is not None:
            tap(self._conn, self._plugin, event, kw)
        if levels.debug:
            return self._emit("debug", event, kw)
        return None

    def info(self, event: str, /, **kw: Any) -> Any:
        levels = _levels if _wrapper_class() is _levels.wrapper else _current()
        if levels.info:
            return self._emit("info", event, kw)
        return None

    def warning(self, event: str, /, **kw: Any) -> Any:
        levels = _levels if _wrapper_class() is _levels.wrapper else _current()
        if levels.warning:
            return self._emit("warning", event, kw)
        return None

    def error(self, event: str, /, **kw: Any) -> Any:
        levels = _levels if _wrapper_class() is _levels.wrapper else _current()
        if levels.error:
            return self._emit("error", event, kw)
        return None

    def exception(self, event: str, /, **kw: Any) -> Any:
        levels = _levels if _wrapper_class() is _levels.wrapper else _current()
        if levels.error:
            return self._emit("exception", event, kw)
        return None

    def critical(self, event: str, /, **kw: Any) -> Any:
        levels = _levels if _wrapper_class() is _levels.wrapper else _current()
        if levels.critical:
            return self._emit("critical", event, kw)
        return None

    def __repr__(self) -> str:
        plugin = "" if self._plugin is None else f" plugin={self._plugin}"
        return f"<LazyLog {self._name} conn={self._conn}{plugin}>"


__all__ = [
    "DebugTap",
    "DirectChain",
    "LazyLog",
    "add_debug_tap",
    "debug_enabled",
    "describe_decision",
    "level_enabled",
    "remove_debug_tap",
    "set_direct_chain",
]
