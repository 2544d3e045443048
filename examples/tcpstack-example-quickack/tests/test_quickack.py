"""Tests of the quickack plugin with tcpstack's own pytest fixtures (``tcpstack_pair``,
``tcpstack_conn``, ``tcpstack_clock``, ``tcpstack_logs``: the pytest11 plugin that installing
tcpstack registers). They test the *installed* package, found through its entry point, the way
users get it: ``pip install .`` first, then ``pytest``."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import LogCapture

from tcpstack.plugin import AckPolicy, DelayedAck, PluginError, features
from tcpstack.plugins import PluginHost
from tcpstack.testing import ConnectionBuilder, PairConnection, StackPair, VirtualClock

# The installed package only (the source tree is never on sys.path); a checkout without it skips.
quickack = pytest.importorskip(
    "tcpstack_example_quickack.plugin",
    reason="tcpstack-example-quickack is not installed: pip install ./examples/tcpstack-example-quickack",
)
QuickAck = quickack.QuickAck

WIRE = 0.0005  # the pair's one-way delay


@pytest.fixture
def tcpstack_entry_points() -> bool:
    """Every host the kit builds here loads the ``tcpstack`` entry-point group (off by default)."""
    return True


def test_the_installed_package_is_under_test_not_the_source_tree() -> None:
    path = Path(quickack.__file__).resolve()
    src = Path(__file__).resolve().parents[1] / "src"
    assert src not in path.parents, f"imported from the source tree ({path}): pip install the package first"
    assert "site-packages" in path.parts, path


def test_the_entry_point_group_names_the_plugin() -> None:
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="tcpstack")}
    assert "quickack" in eps, sorted(eps)
    assert eps["quickack"].value == "tcpstack_example_quickack.plugin"
    assert eps["quickack"].dist is not None and eps["quickack"].dist.name == "tcpstack-example-quickack"


def test_a_host_with_entry_points_registers_the_feature(tcpstack_host: PluginHost) -> None:
    feature = features(tcpstack_host.registry)["quickack"]
    assert feature.plugin == "quickack"  # registered under its entry-point name
    assert "quickack" not in features(PluginHost(entry_points=False).registry)
    assert "quickack" not in features(PluginHost(disabled=["quickack"]).registry)  # [plugins] disable


def test_installing_it_changes_nothing_for_other_connections(tcpstack_pair: Callable[..., StackPair]) -> None:
    pair = tcpstack_pair(default_features=True)  # the stack's built-in default set
    conn = pair.open()
    assert type(conn.client_conn.ack_policy) is DelayedAck
    assert type(conn.server_conn.ack_policy) is DelayedAck


def _ack_delays(conn: PairConnection, n: int) -> list[float]:
    """The client writes one byte *n* times, each once the previous one was acknowledged;
    return how long each ACK took to come back."""
    pair, client = conn.pair, conn.client_conn
    delays = []
    for _ in range(n):
        start = pair.now
        conn.send(b"x")
        assert pair.run_for(1.0, condition=lambda: client.snd_una == client.snd_max)
        delays.append(pair.now - start)
    return delays


def test_enabled_on_one_connection_and_not_another(tcpstack_pair: Callable[..., StackPair]) -> None:
    pair = tcpstack_pair()
    quick = pair.open(server_features={"quickack": {"quick": 2, "timeout": 0.1}})
    plain = pair.open()
    assert isinstance(quick.server_conn.ack_policy, QuickAck)
    assert type(plain.server_conn.ack_policy) is AckPolicy
    assert type(quick.client_conn.ack_policy) is AckPolicy  # the client did not ask for it

    assert _ack_delays(quick, 3) == pytest.approx([2 * WIRE, 2 * WIRE, 2 * WIRE + 0.1])
    assert _ack_delays(plain, 3) == pytest.approx([2 * WIRE] * 3)


def test_first_segments_are_acked_at_once_then_delayed(
    tcpstack_conn: ConnectionBuilder, tcpstack_clock: VirtualClock
) -> None:
    conn = tcpstack_conn("ESTABLISHED", {"quickack": {"quick": 2, "timeout": 0.1}})
    for _ in range(2):
        tcpstack_clock.advance(1.0)
        tcpstack_conn.send(conn, tcpstack_conn.segment(conn, b"ab"))
        [ack] = tcpstack_conn.recv(conn)
        assert ack.ack == conn.rcv_nxt
        assert conn.read() == b"ab"
    tcpstack_clock.advance(1.0)
    tcpstack_conn.send(conn, tcpstack_conn.segment(conn, b"cd"))
    assert tcpstack_conn.recv(conn) == []  # the quick phase is over: the ACK waits
    [(t, ack)] = tcpstack_conn.advance(conn, 0.5)
    assert t == pytest.approx(3.1) and ack.ack == conn.rcv_nxt  # at most `timeout` later


def test_every_second_full_sized_segment_is_acked_at_once(tcpstack_conn: ConnectionBuilder) -> None:
    """RFC 9293 §3.8.6.3 (SHLD-19), after the quick phase."""
    conn = tcpstack_conn("ESTABLISHED", {"quickack": {"quick": 0}}, recv_buffer=8192)
    tcpstack_conn.send(conn, tcpstack_conn.segment(conn, bytes(1420)))
    assert tcpstack_conn.recv(conn) == []
    tcpstack_conn.send(conn, tcpstack_conn.segment(conn, bytes(1420)))
    [ack] = tcpstack_conn.recv(conn)
    assert ack.ack == conn.rcv_nxt


def test_settings_are_checked(tcpstack_conn: ConnectionBuilder) -> None:
    with pytest.raises(ValueError, match=r"0\.5 s"):
        tcpstack_conn("ESTABLISHED", {"quickack": {"timeout": 0.5}})
    with pytest.raises(PluginError, match="ack_policy"):  # both want the ACK policy slot
        tcpstack_conn("ESTABLISHED", {"quickack": {}, "delayed_ack": {}})


def test_decisions_are_logged(tcpstack_logs: LogCapture, tcpstack_conn: ConnectionBuilder) -> None:
    conn = tcpstack_conn("ESTABLISHED", {"quickack": {"quick": 1}})
    tcpstack_conn.send(conn, tcpstack_conn.segment(conn, b"a"))
    tcpstack_conn.send(conn, tcpstack_conn.segment(conn, b"b"))
    decisions = [(e["plugin"], e["decision"]) for e in tcpstack_logs.entries if e["event"] == "tcp.decision"]
    assert decisions == [("quickack", "ACK now"), ("quickack", "ACK delayed")]


def test_on_a_default_stack_it_replaces_delayed_ack(tcpstack_pair: Callable[..., StackPair]) -> None:
    """The README's API call: on a stack with the default set, turn delayed_ack off where quickack goes on;
    naming both is a clear error before any connection exists."""
    pair = tcpstack_pair(default_features=True)
    conn = pair.open(features={"quickack": {"quick": 4}, "delayed_ack": False})
    assert isinstance(conn.client_conn.ack_policy, QuickAck)
    with pytest.raises(ValueError, match="both want to set ack_policy"):
        pair.open(features={"quickack": {}})
