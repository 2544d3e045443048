"""The console renderer ``configure_logging`` installs (tcpstack.logging.FastConsoleRenderer)
writes exactly the text of structlog's ``ConsoleRenderer(colors=False)``, faster.

Differential: random events (hypothesis) through both renderers give the same line; events
with a key the stock renderer treats specially (a traceback, a stack, a logger name) go to it.
"""

from __future__ import annotations

import datetime
import io
import sys
import time
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpstack import configure_logging
from tcpstack.logging import FastConsoleRenderer, IsoUtcStamper

# Keys and values like the stack's events, plus the characters the renderer quotes for.
_text = st.text(alphabet=st.sampled_from("ab=:> \t\n\"'.,[]xyz09_-"), max_size=12)
_keys = st.one_of(st.sampled_from(["conn", "reason", "state", "a", "b", "z", "pcap_frame", "level"]), _text)
_values: st.SearchStrategy[Any] = st.one_of(
    _text,
    st.integers(),
    st.floats(allow_nan=False),
    st.none(),
    st.booleans(),
    st.lists(_text, max_size=4),
    st.tuples(st.integers(), st.integers()),
)


def _render(renderer: Any, event: dict[str, Any]) -> str:
    return str(renderer(None, "info", dict(event)))


@settings(max_examples=400, deadline=None)
@given(
    kw=st.dictionaries(_keys, _values, max_size=8),
    level=st.sampled_from(["debug", "info", "warning", "error", "critical", "exception", "odd"]),
    event=_text,
    timestamp=st.one_of(st.none(), st.just(""), st.just("2026-12-07T15:00:00.123456Z")),
)
def test_same_text_as_structlog_console_renderer(
    kw: dict[str, Any], level: str, event: str, timestamp: str | None
) -> None:
    ev: dict[str, Any] = {**kw, "event": event, "level": level}
    if timestamp is not None:
        ev["timestamp"] = timestamp
    stock = structlog.dev.ConsoleRenderer(colors=False)
    assert _render(FastConsoleRenderer(), ev) == _render(stock, ev)


def test_tcp_closed_line() -> None:
    """The line docs/quickstart.md shows, byte for byte."""
    ev = {
        "event": "tcp.closed",
        "level": "info",
        "timestamp": "2026-12-07T15:00:00.123456Z",
        "conn": "10.0.0.2:9>10.0.0.1:58308",
        "reason": "normal",
        "state": "CLOSED",
        "duration": 0.009588,
        "bytes_in": 100000,
        "bytes_out": 0,
        "retransmits": 0,
        "timeouts": 0,
        "srtt": 0.0034,
        "cwnd": 14480,
        "congestion": "cubic",
        "features": ["delayed_ack", "sack"],
        "pcap_frame": 80,
    }
    assert _render(FastConsoleRenderer(), ev) == (
        "2026-12-07T15:00:00.123456Z [info     ] tcp.closed                     bytes_in=100000 bytes_out=0"
        " congestion=cubic conn=10.0.0.2:9>10.0.0.1:58308 cwnd=14480 duration=0.009588"
        " features=['delayed_ack', 'sack'] pcap_frame=80 reason=normal retransmits=0 srtt=0.0034"
        " state=CLOSED timeouts=0"
    )
    assert _render(FastConsoleRenderer(), ev) == _render(structlog.dev.ConsoleRenderer(colors=False), ev)


def test_special_keys_go_to_the_stock_renderer() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    for extra in ({"exception": "Traceback..."}, {"stack": "s"}, {"logger": "tcpstack.tcp"}, {"": 3}):
        ev = {"event": "x", "level": "error", "a": 1, **extra}
        fast = _render(FastConsoleRenderer(), ev)
        assert fast == _render(structlog.dev.ConsoleRenderer(colors=False), ev)
    # A traceback (its rendering shows object addresses, so only what it says is compared).
    text = _render(FastConsoleRenderer(), {"event": "x", "a": 1, "exc_info": exc_info})
    assert text.startswith("x") and "a=1" in text and "ValueError: boom" in text


def test_configure_logging_console_uses_it() -> None:
    out = io.StringIO()
    configure_logging(fmt="console", level="info", stream=out, cache=False)
    try:
        assert isinstance(structlog.get_config()["processors"][-1], FastConsoleRenderer)
        structlog.get_logger("t").info("hello", b="x y", a=1)
    finally:
        structlog.reset_defaults()
    line = out.getvalue()
    assert line.endswith("[info     ] hello                          a=1 b='x y'\n")


def test_timestamps_as_structlogs_iso_utc_stamper(monkeypatch: pytest.MonkeyPatch) -> None:
    """IsoUtcStamper writes what TimeStamper(fmt="iso", utc=True) writes for the same instant,
    microseconds 0 included (isoformat then leaves the fraction out)."""
    stamper = IsoUtcStamper()
    for ns in (1_796_655_600_123_456_789, 1_796_655_600_000_000_000, 1_796_655_601_000_999_000, 86_399_999_999_000):
        monkeypatch.setattr(time, "time_ns", lambda ns=ns: ns)
        expected = datetime.datetime.fromtimestamp(ns // 1000 / 1e6, datetime.UTC)
        expected = expected.replace(microsecond=ns // 1000 % 1_000_000)
        assert stamper(None, "info", {})["timestamp"] == expected.isoformat().replace("+00:00", "Z")
    monkeypatch.undo()
    stock = structlog.processors.TimeStamper(fmt="iso", utc=True)(None, "info", {})["timestamp"]
    ours = IsoUtcStamper()(None, "info", {})["timestamp"]
    assert len(ours) == len(stock) or "." not in ours or "." not in stock
    assert ours[:16] == stock[:16] and ours.endswith("Z")  # the same minute, the same shape
