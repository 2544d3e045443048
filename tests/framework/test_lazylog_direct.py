"""A per-connection line (framework/lazylog.py's LazyLog) run through the direct chain that
``configure_logging`` registers gives what structlog's bound logger gives: the same text, the
same exception, in both formats, cached or not.

Differential (hypothesis): random events emitted once with the direct chain and once without
(``set_direct_chain(None)``), the clock stopped, compare the stream's text.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

import framework.lazylog as lazylog
import tcpstack.logging as tlog
from framework.lazylog import DirectChain, LazyLog, set_direct_chain
from tcpstack import configure_logging

_text = st.text(alphabet=st.sampled_from("ab=:> \t\n\"'.,[]xyz09_-"), max_size=12)
# Keys like the stack's events, the ones structlog's signatures reject, and odd ones.
_keys = st.one_of(
    st.sampled_from(["conn", "plugin", "reason", "state", "a", "z", "pcap_frame", "level", "timestamp"]),
    st.sampled_from(["event", "self", "method_name", "logger", "exc_info", "stack"]),
    _text,
)
_values: st.SearchStrategy[Any] = st.one_of(
    _text,
    st.integers(),
    st.floats(allow_nan=False),
    st.none(),
    st.booleans(),
    st.lists(_text, max_size=4),
)


def _emit(log: LazyLog, method: str, event: str, kw: dict[str, Any], direct: bool) -> tuple[str, str]:
    """The text written (or the exception raised) for one call."""
    stream = io.StringIO()
    configure_logging(fmt=_emit.fmt, level="debug", stream=stream, cache=_emit.cache)  # type: ignore[attr-defined]
    if not direct:
        set_direct_chain(None)
    try:
        getattr(log, method)(event, **kw)
    except Exception as exc:  # the same failure either way
        return "raised", f"{type(exc).__name__}: {exc}"
    return "wrote", stream.getvalue()


@pytest.fixture(autouse=True)
def _frozen_clock(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(tlog.time, "time_ns", lambda: 1_796_650_000_123_456_000)
    yield
    configure_logging(level="warning", cache=False)


@settings(max_examples=300, deadline=None)
@given(
    kw=st.dictionaries(_keys, _values, max_size=8),
    method=st.sampled_from(["debug", "info", "warning", "error", "critical"]),
    event=_text,
    plugin=st.one_of(st.none(), st.sampled_from(["sack", "a b"])),
    conn=st.sampled_from(["10.0.0.2:80-10.0.0.1:4000", "x=y"]),
    fmt=st.sampled_from(["console", "json"]),
    cache=st.booleans(),
)
def test_direct_chain_writes_what_structlog_writes(
    kw: dict[str, Any], method: str, event: str, plugin: str | None, conn: str, fmt: str, cache: bool
) -> None:
    _emit.fmt, _emit.cache = fmt, cache  # type: ignore[attr-defined]
    log = LazyLog("tcpstack.tcp", conn, plugin)
    assert _emit(log, method, event, kw, direct=True) == _emit(log, method, event, kw, direct=False)


def test_the_direct_chain_is_taken_and_left_when_structlog_is_reconfigured(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    configure_logging(fmt="console", level="info", stream=stream)
    taken: list[str] = []
    assert lazylog._direct is not None
    original = DirectChain.emit

    def counted(self: DirectChain, method: str, event_dict: Any) -> Any:
        taken.append(method)
        return original(self, method, event_dict)

    monkeypatch.setattr(DirectChain, "emit", counted)
    log = LazyLog("tcpstack.tcp", "10.0.0.2:80-10.0.0.1:4000")
    log.info("tcp.closed", reason="normal", state="CLOSED", features=["sack", "timestamps"])
    assert taken == ["info"]
    assert stream.getvalue() == (
        "2026-12-07T13:26:40.123456Z [info     ] tcp.closed                     "
        "conn=10.0.0.2:80-10.0.0.1:4000 features=['sack', 'timestamps'] reason=normal state=CLOSED\n"
    )
    log.exception("tcp.oops")  # exception: structlog's path (it adds exc_info)
    assert taken == ["info"]
    with structlog.testing.capture_logs() as captured:  # edits the processors list in place: obeyed
        log.info("tcp.closed", reason="normal")
    assert taken == ["info", "info"]
    assert captured == [
        {"conn": "10.0.0.2:80-10.0.0.1:4000", "reason": "normal", "event": "tcp.closed", "log_level": "info"}
    ]
    other = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()], logger_factory=structlog.PrintLoggerFactory(other)
    )
    log.info("tcp.closed", reason="normal")  # another configuration: structlog's path
    assert taken == ["info", "info"]
    assert other.getvalue() == '{"conn": "10.0.0.2:80-10.0.0.1:4000", "reason": "normal", "event": "tcp.closed"}\n'
