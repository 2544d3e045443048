"""The plugin-author kit: a pytest plugin and test vocabulary for tcpstack plugins.

Installing tcpstack registers this module as a pytest plugin (the ``pytest11`` entry point
``tcpstack``), so every test suite in the environment can use these fixtures without a
``conftest.py`` (docs/writing-plugins.md has the full table):

- ``tcpstack_clock``: a :class:`VirtualClock` at t=0 that the test advances explicitly;
- ``tcpstack_plugins`` / ``tcpstack_entry_points``: extra plugin objects (default ``[]``) and
  whether to load the ``tcpstack`` entry-point group (default ``False``) for every host the kit
  builds; override them in your ``conftest.py`` or test module;
- ``tcpstack_host``: a :class:`~framework.plugins.PluginHost` built from those two;
- ``tcpstack_pair``: a factory of :class:`StackPair`, two stacks on a simulated wire;
- ``tcpstack_conn``: a :class:`ConnectionBuilder`, sans-IO connections in any state;
- ``tcpstack_logs``: a ``structlog.testing.LogCapture`` of every event at debug level.

Example, for a plugin module ``myplugin`` that registers the feature ``myack``::

    def test_enabled_on_one_connection_only(tcpstack_pair):
        pair = tcpstack_pair(extra=[myplugin])
        mine, other = pair.open(features={"myack": {}}), pair.open()
        mine.send(b"hello")
        assert pair.run(condition=lambda: mine.server.received == b"hello")
        assert type(mine.client_conn.ack_policy).__name__ == "MyAck"
        assert type(other.client_conn.ack_policy).__name__ == "AckPolicy"

    def test_policy(tcpstack_conn, tcpstack_clock):
        conn = tcpstack_conn("ESTABLISHED", {"delayed_ack": {}})
        tcpstack_conn.send(conn, tcpstack_conn.segment(conn, b"abc"))
        assert tcpstack_conn.recv(conn) == []           # the ACK waits
        tcpstack_clock.advance(0.04)
        assert tcpstack_conn.recv(conn)[0].ack == conn.rcv_nxt

Time is always explicit: nothing here reads a clock or sleeps. The sans-IO builders use
64-byte buffers (windows stay readable) and RFC 6298's 1 s minimum RTO; the stacks of a pair
start with every feature off (``default_features = false``), so a test names what it turns on.
Importing this module configures nothing (structlog included); only pytest imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import pytest
import structlog
from structlog.testing import LogCapture

from layers.tcp.seq import MASK
from tcpstack.plugins import PluginHost
from tcpstack.testing.pair import (
    CLIENT_ADDRESS,
    SERVER_ADDRESS,
    App,
    PairConnection,
    StackPair,
    TapSimulation,
    decode,
    make_stack,
    stack_config,
    tcp_layer,
)
from tcpstack.testing.sansio import (
    BUFFER,
    L1,
    LOCAL_ADDR,
    LOCAL_IP,
    LOCAL_MSS,
    LOCAL_PORT,
    LOCAL_SEQ,
    PEER_WINDOW,
    R1,
    RECV,
    REMOTE_ADDR,
    REMOTE_IP,
    REMOTE_PORT,
    REMOTE_SEQ,
    SEND,
    Clock,
    ConnectionBuilder,
    S,
    VirtualClock,
    as_state,
    builtin_host,
    close_wait,
    closed,
    closing,
    drain,
    established,
    events,
    fin_wait_1,
    fin_wait_2,
    handshake,
    last_ack,
    listen,
    make_setup,
    peer_segment,
    peer_syn,
    plugin_host,
    recv,
    recv_nothing,
    run_until,
    send,
    syn_received,
    syn_sent,
    time_wait,
)

# ====================================================================== logs


@contextmanager
def capture_logs(level: int = logging.DEBUG) -> Iterator[LogCapture]:
    """Record every structlog event at *level* and above as a dict (``capture.entries``);
    restore the previous structlog configuration afterwards. Loggers are never cached, so
    objects created inside the block (connections, policies) log into the capture."""
    was_configured = structlog.is_configured()
    saved = structlog.get_config()
    saved["processors"] = list(saved["processors"])
    capture = LogCapture()
    structlog.configure(
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=False,
    )
    try:
        yield capture
    finally:
        if was_configured:
            structlog.configure(**saved)
        else:
            structlog.reset_defaults()


# ====================================================================== fixtures


@pytest.fixture
def tcpstack_clock() -> VirtualClock:
    """A virtual clock at t=0; advance it with ``.advance(seconds)``."""
    return VirtualClock()


@pytest.fixture
def tcpstack_plugins() -> list[object]:
    """Extra plugins for every host the kit builds; override to add yours."""
    return []


@pytest.fixture
def tcpstack_entry_points() -> bool:
    """Whether the kit's hosts load the ``tcpstack`` entry-point group; override to enable."""
    return False


@pytest.fixture
def tcpstack_host(tcpstack_plugins: list[object], tcpstack_entry_points: bool) -> PluginHost:
    """A plugin host: built-ins, ``tcpstack_plugins`` and (if enabled) entry points."""
    return plugin_host(tcpstack_plugins, entry_points=tcpstack_entry_points)


@pytest.fixture
def tcpstack_pair(tcpstack_plugins: list[object], tcpstack_entry_points: bool) -> Callable[..., StackPair]:
    """A factory of :class:`StackPair`; its keyword arguments override the fixtures' plugins."""
    return partial(StackPair, extra=tcpstack_plugins, entry_points=tcpstack_entry_points)


@pytest.fixture
def tcpstack_conn(tcpstack_host: PluginHost, tcpstack_clock: VirtualClock) -> ConnectionBuilder:
    """Sans-IO connections in any state, built against ``tcpstack_host``, on ``tcpstack_clock``."""
    return ConnectionBuilder(tcpstack_host, tcpstack_clock)


@pytest.fixture
def tcpstack_logs() -> Iterator[LogCapture]:
    """structlog events at debug level as dicts (``tcpstack_logs.entries``)."""
    with capture_logs() as capture:
        yield capture


__all__ = [
    "BUFFER",
    "CLIENT_ADDRESS",
    "L1",
    "LOCAL_ADDR",
    "LOCAL_IP",
    "LOCAL_MSS",
    "LOCAL_PORT",
    "LOCAL_SEQ",
    "MASK",
    "PEER_WINDOW",
    "R1",
    "RECV",
    "REMOTE_ADDR",
    "REMOTE_IP",
    "REMOTE_PORT",
    "REMOTE_SEQ",
    "SEND",
    "SERVER_ADDRESS",
    "App",
    "Clock",
    "ConnectionBuilder",
    "PairConnection",
    "S",
    "StackPair",
    "TapSimulation",
    "VirtualClock",
    "as_state",
    "builtin_host",
    "capture_logs",
    "close_wait",
    "closed",
    "closing",
    "decode",
    "drain",
    "established",
    "events",
    "fin_wait_1",
    "fin_wait_2",
    "handshake",
    "last_ack",
    "listen",
    "make_setup",
    "make_stack",
    "peer_segment",
    "peer_syn",
    "plugin_host",
    "recv",
    "recv_nothing",
    "run_until",
    "send",
    "stack_config",
    "syn_received",
    "syn_sent",
    "tcp_layer",
    "tcpstack_clock",
    "tcpstack_conn",
    "tcpstack_entry_points",
    "tcpstack_host",
    "tcpstack_logs",
    "tcpstack_pair",
    "tcpstack_plugins",
    "time_wait",
]
