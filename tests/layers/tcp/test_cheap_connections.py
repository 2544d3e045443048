"""Cheap connections (issue 11, item 5): per-connection logging costs nothing unless its level
is enabled, and a stack whose plugins implement no ``tcp_connection_setup`` makes no pluggy call
per connection."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog._config import BoundLoggerLazyProxy

from framework.lazylog import LazyLog, level_enabled
from framework.plugins import hookimpl
from layers.tcp.policy import ConnInfo, TcpOptions, decision_log
from layers.tcp.setup import connection_setup, has_setup_hook
from layers.tcp.state import TcpState
from tcpstack.logging import configure_logging
from tcpstack.plugins import PluginHost
from tcpstack.testing import sansio
from tests.layers.tcp.helpers import LayerHarness


@pytest.fixture
def structlog_restored() -> Iterator[None]:
    was, saved = structlog.is_configured(), structlog.get_config()
    try:
        yield
    finally:
        if was:
            structlog.configure(**saved)
        else:
            structlog.reset_defaults()


@pytest.fixture
def binds(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every ``structlog.get_logger(...).bind(...)`` (and every emission through a lazy
    proxy, which binds first) made while the test runs."""
    calls: list[dict[str, Any]] = []
    original = BoundLoggerLazyProxy.bind

    def counting(self: BoundLoggerLazyProxy, **kw: Any) -> Any:
        calls.append(kw)
        return original(self, **kw)

    monkeypatch.setattr(BoundLoggerLazyProxy, "bind", counting)
    return calls


class Unsortable(dict[str, Any]):
    """A features table that fails loudly if the summary line is built."""

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the tcp.closed summary was built at a disabled level")


FEATURES = {"sack": True, "window_scaling": True, "timestamps": True, "delayed_ack": True, "nagle": True}


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_a_whole_connection_binds_and_emits_nothing_below_the_configured_level(
    structlog_restored: None, binds: list[dict[str, Any]]
) -> None:
    buf = io.StringIO()
    configure_logging(fmt="json", level="warning", stream=buf, cache=False)
    conn = sansio.time_wait(FEATURES)  # the plugins' decision logs, state changes, tcp.closed at TIME-WAIT
    assert conn.state is TcpState.TIME_WAIT
    assert binds == []
    assert buf.getvalue() == ""


def test_the_summary_is_not_even_built_when_info_is_off(structlog_restored: None) -> None:
    configure_logging(fmt="json", level="warning", stream=io.StringIO(), cache=False)
    conn = sansio.established()
    conn.features = Unsortable(conn.features)
    conn._log_summary(1.0, "CLOSED")  # no AssertionError: nothing iterated the features
    configure_logging(fmt="json", level="info", stream=io.StringIO(), cache=False)
    with pytest.raises(AssertionError, match="summary was built"):
        conn._log_summary(1.0, "CLOSED")


def test_enabled_lines_are_the_ones_a_bound_logger_emits(structlog_restored: None) -> None:
    """Same keys, same order, same values as ``get_logger(name).bind(conn=..., plugin=...)``."""
    buf = io.StringIO()
    configure_logging(fmt="json", level="debug", stream=buf, cache=False)
    label = "10.0.0.1:80>10.0.0.2:49500"
    kw: dict[str, Any] = {"reason": "normal", "bytes_in": 3, "features": ["sack"], "srtt": None}
    structlog.get_logger("tcpstack.tcp").bind(conn=label).info("tcp.closed", **kw)
    LazyLog("tcpstack.tcp", label).info("tcp.closed", **kw)
    structlog.get_logger("tcpstack.decision").bind(conn=label, plugin="nagle").debug("tcp.decision", t=1.5)
    decision_log(label, "nagle").debug("tcp.decision", t=1.5)
    old_closed, new_closed, old_decision, new_decision = _lines(buf)
    for old, new in ((old_closed, new_closed), (old_decision, new_decision)):
        old.pop("timestamp")
        new.pop("timestamp")
        assert list(new.items()) == list(old.items())
    assert new_decision["plugin"] == "nagle" and new_closed["conn"] == label


def test_a_connection_logs_its_lines_when_the_level_is_on(structlog_restored: None) -> None:
    buf = io.StringIO()
    configure_logging(fmt="json", level="debug", stream=buf, cache=False)
    conn = sansio.time_wait(FEATURES)
    lines = _lines(buf)
    label = conn.info.label
    closed = [e for e in lines if e["event"] == "tcp.closed"]
    assert [(e["conn"], e["state"], e["level"]) for e in closed] == [(label, "TIME-WAIT", "info")]
    states = [(e["old"], e["new"]) for e in lines if e["event"] == "tcp.state"]
    assert ("ESTABLISHED", "FIN-WAIT-1") in states and states[-1][1] == "TIME-WAIT"
    decisions = {e["plugin"] for e in lines if e["event"] == "tcp.decision"}
    assert {"sack", "window_scaling"} <= decisions


def test_the_level_follows_reconfiguration(structlog_restored: None) -> None:
    configure_logging(level="warning", stream=io.StringIO(), cache=False)
    assert not level_enabled("info") and level_enabled("warning")
    buf = io.StringIO()
    configure_logging(fmt="json", level="info", stream=buf, cache=True)
    log = LazyLog("tcpstack.tcp", "c")
    log.debug("x.debug")
    log.info("x.info")
    log.error("x.error")
    assert [e["event"] for e in _lines(buf)] == ["x.info", "x.error"]
    # a cached configuration is not frozen into the lazy logger: the next one is obeyed
    buf2 = io.StringIO()
    configure_logging(fmt="json", level="debug", stream=buf2, cache=True)
    log.debug("y.debug")
    assert [e["event"] for e in _lines(buf2)] == ["y.debug"] and len(_lines(buf)) == 2
    # a wrapper class that does not filter (e.g. a standard-library one) gets every call
    structlog.configure(wrapper_class=structlog.BoundLogger)
    assert level_enabled("debug")


# ---------------------------------------------------------------- the setup hook


class CountingSetup:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def tcp_connection_setup(self, setup: Any) -> None:
        self.calls += 1


_NO_POLICIES = ("layers.link.handler", "layers.ipv4.handler", "layers.tcp.handler")


def test_has_setup_hook_asks_the_registered_plugins() -> None:
    assert has_setup_hook(PluginHost(entry_points=False))  # the built-in policies implement it
    assert not has_setup_hook(PluginHost(builtin=_NO_POLICIES, entry_points=False))
    assert has_setup_hook(PluginHost(builtin=_NO_POLICIES, entry_points=False, extra=[CountingSetup()]))
    assert not has_setup_hook(None)


def test_run_hook_false_makes_no_pluggy_call() -> None:
    counter = CountingSetup()
    host = PluginHost(builtin=_NO_POLICIES, entry_points=False, extra=[counter])
    info = ConnInfo(local=(bytes(4), 1), remote=(bytes(4), 2), mss=536)
    connection_setup(host, info, TcpOptions(), {}, None, {})
    assert counter.calls == 1
    connection_setup(host, info, TcpOptions(), {}, None, {}, run_hook=False)
    assert counter.calls == 1


def test_the_tcp_layer_makes_no_pluggy_call_per_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """With or without implementations of the setup hook, no connection goes through pluggy's
    caller (layers/tcp/setup.SetupHook calls the implementations; tests/layers/tcp/test_setup_hook.py)."""
    harness = LayerHarness()
    calls: list[object] = []
    caller_type = type(PluginHost(builtin=_NO_POLICIES, entry_points=False).pm.hook.tcp_connection_setup)
    original = caller_type.__call__

    def recording(self: Any, **kw: Any) -> Any:
        if self.name == "tcp_connection_setup":
            calls.append(kw)
        return original(self, **kw)

    monkeypatch.setattr(caller_type, "__call__", recording)
    conn = harness.tcp.connect(bytes([10, 0, 0, 2]), 7, now=0.0)
    assert conn.state is TcpState.SYN_SENT and calls == []
    harness.tcp.bind(PluginHost(builtin=_NO_POLICIES, entry_points=False))
    conn = harness.tcp.connect(bytes([10, 0, 0, 2]), 8, now=0.0)
    assert conn.state is TcpState.SYN_SENT and calls == []


def test_congestion_settings_are_resolved_once_per_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty ``congestion`` table is an answer too: not resolved again for every connection."""
    from layers.tcp import layer

    harness = LayerHarness()
    calls: list[object] = []
    real = layer.resolve_algorithm_settings

    def counting(*args: Any, **kw: Any) -> Any:
        calls.append(args)
        return real(*args, **kw)

    monkeypatch.setattr(layer, "resolve_algorithm_settings", counting)
    for port in (7, 8, 9):
        harness.tcp.connect(bytes([10, 0, 0, 2]), port, now=0.0)
    assert len(calls) <= 1
    harness.tcp.bind(PluginHost(entry_points=False))  # another registry: asked again, once
    for port in (10, 11):
        harness.tcp.connect(bytes([10, 0, 0, 2]), port, now=0.0)
    assert len(calls) <= 2
