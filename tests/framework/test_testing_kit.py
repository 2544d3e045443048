"""The plugin-author kit (tcpstack/testing/), used as third-party suites use it: through the
fixtures of the ``pytest11`` plugin, without importing anything from this repository's tests."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest
import structlog

import tcpstack.plugins
import tcpstack.testing
from layers.tcp.extensions import add_feature, features
from layers.tcp.policy import AckPolicy
from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, SYN
from plugins.delayed_ack import DelayedAck
from tcpstack.plugins import hookimpl
from tcpstack.testing import ConnectionBuilder, StackPair, VirtualClock, capture_logs


@dataclass(slots=True)
class ProbeSettings:
    step: float = 0.25
    """Seconds each ACK waits."""


class ProbeAck(AckPolicy):
    """An ACK policy defined in the test: makes it obvious which connection has the plugin."""

    def __init__(self, step: float) -> None:
        self.step = step

    def on_data(self, seg_len: int, now: float) -> float | None:
        return now + self.step


class ProbePlugin:
    """A third-party plugin as an object (plugins may also be modules)."""

    @hookimpl
    def stack_register(self, registry):
        add_feature(registry, "slowack", ProbeSettings, doc="test feature")

    @hookimpl
    def tcp_connection_setup(self, setup):
        settings = setup.features.get("slowack")
        if settings is not None:
            setup.claim("ack_policy", by="slowack")
            setup.ack_policy = ProbeAck(settings.step)


def test_the_kit_is_loaded_through_the_pytest11_entry_point(request: pytest.FixtureRequest) -> None:
    """pytest found tcpstack.testing through the installed package's pytest11 entry point."""
    assert request.config.pluginmanager.get_plugin("tcpstack") is tcpstack.testing


# ---------------------------------------------------------------------- time


def test_clock_moves_only_when_told(tcpstack_clock: VirtualClock) -> None:
    assert tcpstack_clock.now == 0.0
    assert tcpstack_clock.advance(0.25) == 0.25
    assert tcpstack_clock.advance_to(1.0) == 1.0
    with pytest.raises(ValueError, match="backwards"):
        tcpstack_clock.advance(-0.1)
    with pytest.raises(ValueError, match="backwards"):
        tcpstack_clock.advance_to(0.5)
    assert tcpstack_clock.now == 1.0


# ---------------------------------------------------------------------- a pair of stacks


def test_pair_delivers_bytes_both_ways_and_taps_the_wire(tcpstack_pair) -> None:
    pair: StackPair = tcpstack_pair()
    conn = pair.open()
    assert conn.established and pair.now > 0
    first_t, first = pair.segments("client")[0]
    assert first_t == 0.0 and first.flags == SYN and first.dst_port == conn.port
    payload = bytes(range(256)) * 40  # 10240 bytes: several segments
    conn.send(payload)
    assert pair.run(condition=lambda: bytes(conn.server.received) == payload)
    conn.reply(b"pong")
    assert pair.run_for(1.0, condition=lambda: bytes(conn.client.received) == b"pong")
    sent = b"".join(seg.payload for _, seg in pair.data_segments("client"))
    assert sent == payload  # no loss on this wire: each byte once
    assert pair.pure_acks("server"), "the server acknowledged the data with pure ACKs"
    conn.close()
    assert pair.run_for(5.0, condition=lambda: conn.server.eof and conn.client.eof)
    assert not conn.client.failures and not conn.server.failures


def test_pair_runs_until_a_virtual_time(tcpstack_pair) -> None:
    pair: StackPair = tcpstack_pair(delay=0.1)
    conn = pair.open()
    assert pair.now == pytest.approx(0.3)  # SYN, SYN-ACK and ACK each cross the 100 ms wire
    conn.send(b"x")
    assert pair.run(until=0.35) and pair.now == 0.35  # not there yet: in flight until 0.4
    assert conn.server.received == b""
    pair.run(until=0.45)
    assert conn.server.received == b"x"


def test_pair_features_and_congestion_control_are_per_connection(tcpstack_pair) -> None:
    pair: StackPair = tcpstack_pair()
    delayed = pair.open(features={"delayed_ack": {"timeout": 0.1}}, congestion_control="reno")
    plain = pair.open()
    assert isinstance(delayed.client_conn.ack_policy, DelayedAck)
    assert delayed.client_conn.congestion_name == "reno"
    assert type(plain.client_conn.ack_policy) is AckPolicy
    assert plain.client_conn.congestion_name == "cubic"  # the stack's default algorithm
    # The server's side of either connection did not get the client's features.
    assert type(delayed.server_conn.ack_policy) is AckPolicy
    server_side = pair.open(server_features={"delayed_ack": {}})
    assert isinstance(server_side.server_conn.ack_policy, DelayedAck)
    assert type(server_side.client_conn.ack_policy) is AckPolicy


def test_a_plugin_passed_as_extra_is_enabled_on_one_connection_only(tcpstack_pair) -> None:
    pair: StackPair = tcpstack_pair(extra=[ProbePlugin()])
    probed = pair.open(features={"slowack": {"step": 0.2}})
    other = pair.open()
    assert isinstance(probed.client_conn.ack_policy, ProbeAck) and probed.client_conn.ack_policy.step == 0.2
    assert type(other.client_conn.ack_policy) is AckPolicy
    # Its behaviour shows on the wire: the server's data is acknowledged 0.2 s late.
    start, expected = pair.now, (probed.server_conn.snd_max + 4) & 0xFFFFFFFF
    probed.reply(b"data")

    def acks() -> list[float]:
        return [t for t, seg in pair.pure_acks("client") if seg.dst_port == probed.port and seg.ack == expected]

    assert pair.run_for(1.0, condition=lambda: bool(acks()))
    assert acks()[0] - start == pytest.approx(0.0005 + 0.2)  # one wire delay, then the probe's 0.2 s


def test_an_unknown_feature_is_an_error(tcpstack_pair) -> None:
    pair: StackPair = tcpstack_pair()
    with pytest.raises(ValueError, match="slowack"):
        pair.open(features={"slowack": {}})  # not registered without the extra plugin


class TestPluginsFixtureOverride:
    """A suite adds its plugin to every host by overriding ``tcpstack_plugins``."""

    @pytest.fixture
    def tcpstack_plugins(self) -> list[object]:
        return [ProbePlugin()]

    def test_host_and_builders_know_the_plugin(self, tcpstack_host, tcpstack_conn, tcpstack_pair) -> None:
        assert "slowack" in features(tcpstack_host.registry)
        assert isinstance(tcpstack_conn("ESTABLISHED", {"slowack": {}}).ack_policy, ProbeAck)
        pair: StackPair = tcpstack_pair()
        assert isinstance(pair.open(features={"slowack": {}}).client_conn.ack_policy, ProbeAck)


def test_entry_points_are_off_by_default(tcpstack_host, tcpstack_entry_points) -> None:
    assert tcpstack_entry_points is False
    assert sorted(tcpstack_host.plugin_names()) == sorted(tcpstack.plugins.BUILTIN_PLUGINS)


# ---------------------------------------------------------------------- sans-IO states


@pytest.mark.parametrize("state", [s for s in TcpState])
def test_builder_reaches_every_state_with_features_installed(tcpstack_conn: ConnectionBuilder, state) -> None:
    conn = tcpstack_conn(state.value, {"delayed_ack": {}})
    assert conn.state is state
    assert isinstance(conn.ack_policy, DelayedAck)
    assert tcpstack_conn.drain(conn) == ([], [])  # every builder leaves a quiet connection


def test_builder_accepts_state_names_and_rejects_unknown_ones(tcpstack_conn: ConnectionBuilder) -> None:
    assert tcpstack_conn("fin_wait_2").state is TcpState.FIN_WAIT_2
    assert tcpstack_conn(TcpState.SYN_SENT, min_rto=0.5).state is TcpState.SYN_SENT
    with pytest.raises(ValueError, match="TIME-WAIT"):
        tcpstack_conn("TIME_WAITING")
    with pytest.raises(ValueError, match="nosuch"):
        tcpstack_conn("ESTABLISHED", {"nosuch": {}})


def test_builder_congestion_control_and_options(tcpstack_conn: ConnectionBuilder) -> None:
    conn = tcpstack_conn("ESTABLISHED", congestion_control="cubic", recv_buffer=1000, active=True)
    assert conn.congestion_name == "cubic" and type(conn.cc).__name__ == "Cubic"
    assert conn.options.recv_buffer == 1000 and conn.state is TcpState.ESTABLISHED


def test_send_recv_advance_drive_a_delayed_ack(tcpstack_conn: ConnectionBuilder, tcpstack_clock: VirtualClock) -> None:
    conn = tcpstack_conn("ESTABLISHED", {"delayed_ack": {"timeout": 0.1}})
    tcpstack_clock.advance(1.0)
    tcpstack_conn.send(conn, tcpstack_conn.segment(conn, b"abc"))
    assert tcpstack_conn.recv(conn) == []  # the ACK waits (RFC 1122 §4.2.3.2)
    sent = tcpstack_conn.advance(conn, 0.2)
    assert [(t, seg.flags, seg.ack) for t, seg in sent] == [(pytest.approx(1.1), ACK, conn.rcv_nxt)]
    assert conn.read() == b"abc"


def test_without_the_feature_the_ack_leaves_at_once(tcpstack_conn: ConnectionBuilder) -> None:
    conn = tcpstack_conn("ESTABLISHED")
    tcpstack_conn.send(conn, tcpstack_conn.segment(conn, b"abc"))
    [ack] = tcpstack_conn.recv(conn)
    assert ack.flags == ACK and ack.ack == conn.rcv_nxt


# ---------------------------------------------------------------------- logs


def test_logs_capture_delayed_ack_decisions_at_debug_level(tcpstack_logs, tcpstack_conn: ConnectionBuilder) -> None:
    conn = tcpstack_conn("ESTABLISHED", {"delayed_ack": {}})
    tcpstack_conn.send(conn, tcpstack_conn.segment(conn, b"abc"))
    decisions = [e for e in tcpstack_logs.entries if e["event"] == "tcp.decision"]
    assert decisions, tcpstack_logs.entries
    assert decisions[0]["plugin"] == "delayed_ack" and decisions[0]["log_level"] == "debug"
    assert decisions[0]["decision"] == "ACK delayed" and decisions[0]["conn"] == "10.0.0.1:80>10.0.0.2:49500"


def test_capture_logs_restores_the_previous_configuration() -> None:
    before = structlog.get_config()
    with capture_logs() as capture:
        structlog.get_logger("kit").debug("inside", n=1)
    assert capture.entries == [{"event": "inside", "n": 1, "log_level": "debug"}]
    after = structlog.get_config()
    assert after["wrapper_class"] is before["wrapper_class"]
    assert after["processors"] == before["processors"]
    with capture_logs(logging.INFO) as quiet:
        structlog.get_logger("kit").debug("filtered")
        structlog.get_logger("kit").info("kept")
    assert [e["event"] for e in quiet.entries] == ["kept"]


def test_pair_survives_a_corrupting_wire(tcpstack_pair) -> None:
    """A fault layer corrupting outgoing frames: the tap records them raw instead of failing the test."""
    pair = tcpstack_pair(fault={"seed": 2, "corrupt": 0.3, "direction": "out"})
    conn = pair.open(timeout=60.0)
    conn.send(b"x" * 20_000)
    assert pair.run_for(120.0, condition=lambda: len(conn.server.received) == 20_000)
    assert pair.sim.other  # some frames were corrupted (and retransmitted)
