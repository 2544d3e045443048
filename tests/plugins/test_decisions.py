"""Decision logs: every policy says at debug level why it acted (``tcp.decision`` events that
name the connection, the plugin and the RFC), so a user can read why an ACK was delayed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from framework.lazylog import add_debug_tap, remove_debug_tap
from layers.tcp.congestion import CongestionControl
from layers.tcp.policy import decision_log
from plugins.delayed_ack import DelayedAck, DelayedAckSettings
from plugins.nagle import Nagle, NagleSettings


@pytest.fixture(autouse=True)
def every_decision_reaches_the_debug_tap(request: pytest.FixtureRequest) -> Iterator[None]:
    """Around every test here (each drives some policy's decisions): every ``tcp.decision`` the log
    shows also reached a debug tap, in the same order, so it went through a LazyLog
    (``decision_log``): what the pcapng capture's comments and the probe see. A decision logged some
    other way would be in the log and not in the tap."""
    if "log_output" not in request.fixturenames:
        yield
        return
    log_output = request.getfixturevalue("log_output")
    tapped: list[tuple[str, str | None, str]] = []

    def tap(conn: str, plugin: str | None, event: str, kw: dict[str, Any]) -> None:
        if event == "tcp.decision":
            tapped.append((conn, plugin, str(kw.get("decision"))))

    add_debug_tap(tap)
    try:
        yield
    finally:
        remove_debug_tap(tap)
    logged = [(e["conn"], e.get("plugin"), str(e["decision"])) for e in _decisions(log_output)]
    assert logged, "the test logged no decision"
    assert tapped == logged


def _decisions(log_output: object) -> list[dict[str, object]]:
    return [e for e in log_output.entries if e["event"] == "tcp.decision"]  # type: ignore[attr-defined]


def test_delayed_ack_logs_delay_and_immediate_ack(log_output) -> None:
    """RFC 1122 §4.2.3.2 / RFC 9293 §3.8.6.3: a delayed ACK and the second-segment ACK are both logged."""
    p = DelayedAck(DelayedAckSettings(timeout=0.04), mss=1460, log=decision_log("c1", "delayed_ack"))
    assert p.on_data(1448, now=1.0) == 1.04
    assert p.on_data(1448, now=1.01) is None
    first, second = _decisions(log_output)
    assert first["decision"] == "ACK delayed" and first["deadline"] == 1.04 and first["conn"] == "c1"
    assert first["plugin"] == "delayed_ack" and "RFC 1122" in str(first["rfc"])
    assert second["decision"] == "ACK now" and second["t"] == 1.01


def test_nagle_logs_held_segment(log_output) -> None:
    """RFC 896 / RFC 9293 §3.7.4: a short segment held by Nagle is logged with the bytes in flight."""
    p = Nagle(NagleSettings(), log=decision_log("c2", "nagle"))
    assert not p.may_send_small(10, in_flight=100, now=2.0)
    [e] = _decisions(log_output)
    assert e["conn"] == "c2" and e["plugin"] == "nagle" and e["t"] == 2.0


def test_congestion_reduction_is_logged(log_output) -> None:
    """RFC 5681 §3.1: a retransmission timeout that collapses cwnd to one segment is logged."""
    cc = CongestionControl(1000)
    cc.log = decision_log("c3", "reno")
    cc.on_timeout(in_flight=8000, now=3.0)
    [e] = _decisions(log_output)
    assert e["decision"] == "cwnd reduced" and e["cwnd"] == 1000 and e["ssthresh"] == 4000
    assert e["reason"] == "retransmission timeout" and e["conn"] == "c3"


def _by(log_output: object, plugin: str) -> list[dict[str, object]]:
    return [e for e in _decisions(log_output) if e["plugin"] == plugin]


def test_window_scaling_logs_the_negotiated_shifts(log_output) -> None:
    """RFC 7323 §2.2-§2.3: the handshake's outcome is logged: both shifts, or no scaling when not offered."""
    from tests.plugins.helpers import established_with

    conn, _ = established_with({"window_scaling": {"shift": 3}}, peer_wscale=7)
    [e] = _by(log_output, "window_scaling")
    assert e["decision"] == "windows scaled" and e["snd_shift"] == 7 and e["rcv_shift"] == 3
    assert e["conn"] == conn.label and e["rfc"] == "RFC 7323 §2.2-§2.3"
    established_with({"window_scaling": {}}, peer_wscale=None)
    assert _by(log_output, "window_scaling")[-1]["decision"] == "no scaling"


def test_sack_logs_negotiation_and_dsack(log_output) -> None:
    """RFC 2018 §2 (SACK on) and RFC 2883 §4 (a duplicate segment reported as D-SACK) are logged."""
    from tests.layers.tcp.helpers import LayerHarness
    from tests.plugins.test_sack_blocks import _data, _open

    h = LayerHarness(features={"sack": {}})
    conn, ours, theirs = _open(h)
    _data(h, ours, theirs, 0)
    _data(h, ours, theirs, 0)  # the same segment again
    on, dsack = _by(log_output, "sack")
    assert on["decision"] == "SACK on" and on["conn"] == conn.label  # type: ignore[attr-defined]
    assert dsack["decision"] == "D-SACK" and dsack["seq"] == theirs and dsack["len"] == 1000
    assert dsack["rfc"] == "RFC 2883 §4"


def test_rack_tlp_logs_losses_probes_and_missing_sack(log_output) -> None:
    """RFC 8985 §6.2 (segments marked lost by time), §7.3 (tail loss probe) and §3 (off without SACK)."""
    from tests.plugins.test_rack_tlp import FEATURES, _transfer

    ok, _, conn = _transfer({**FEATURES, "rack_tlp": {}}, 20 * 1448 + 100, drop_len=152)
    assert ok
    decisions = {e["decision"] for e in _by(log_output, "rack_tlp") if e["conn"] == conn.label}  # type: ignore[attr-defined]
    assert "tail loss probe" in decisions
    ok, _, conn = _transfer({**FEATURES, "rack_tlp": {"tlp": False}}, 4 * 1460, drop_nth=2)
    marked = [e for e in _by(log_output, "rack_tlp") if e["decision"] == "marked lost"]
    assert ok and marked and all(e["rfc"] == "RFC 8985 §6.2" for e in marked)
    _transfer({"rack_tlp": {}}, 1000)
    assert _by(log_output, "rack_tlp")[-1]["decision"] == "RACK-TLP off"


def test_keepalive_logs_probes_and_the_dead_peer(log_output) -> None:
    """RFC 1122 §4.2.3.6: every probe and the give-up after `count` unanswered probes are logged."""
    from layers.middleware.fault import FaultInjector
    from tests.plugins.test_keepalive import _pair

    sim, _, _, _, b = _pair({"keepalive": {"idle": 10.0, "interval": 2.0, "count": 2}})
    fault = b.layer("fault")
    assert isinstance(fault, FaultInjector)
    fault.add_rule("drop", direction="in", count=10**6)  # the peer is gone
    sim.run(until=30.0)
    got = [(e["decision"], e.get("probe"), round(float(e["t"]), 1)) for e in _by(log_output, "keepalive")]
    # idle counts from the handshake's last segment (t = 0.002 on this 1 ms wire)
    assert got == [("probe sent", 1, 10.0), ("probe sent", 2, 12.0), ("peer dead", None, 14.0)], got


def test_a_controller_a_plugin_installs_itself_logs_its_decisions(log_output) -> None:
    """A congestion controller a plugin puts in ``setup.congestion`` itself (after the setup gave the
    configured one its log) still logs its window reductions through the connection's decision log, as
    does the controller a connection makes when the slot is empty."""
    from framework.plugins import hookimpl
    from layers.tcp.congestion import NO_LOG
    from tcpstack.testing.sansio import ConnectionBuilder, plugin_host

    class OwnController:
        @hookimpl
        def tcp_connection_setup(self, setup: Any) -> None:
            setup.congestion = CongestionControl(setup.info.mss)
            assert setup.congestion.log is NO_LOG

    conn = ConnectionBuilder(plugin_host([OwnController()]))("ESTABLISHED")
    conn.cc.on_timeout(in_flight=8000, now=3.0)
    [e] = [x for x in _decisions(log_output) if x["conn"] == conn.info.label]
    assert e["decision"] == "cwnd reduced" and e["plugin"] == "reno" and e["reason"] == "retransmission timeout"
