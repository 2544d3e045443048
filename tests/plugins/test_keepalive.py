"""Keep-alive (RFC 1122 §4.2.3.6; RFC 9293 §3.8.4), on a connection and between two stacks."""

from __future__ import annotations

import pytest

from framework.errors import ConfigError
from framework.simulation import Simulation
from layers.middleware.fault import FaultInjector
from layers.tcp.events import ConnectionFailed
from layers.tcp.policy import TcpOptions
from layers.tcp.wire import ACK
from tests.layers.tcp.helpers import make_stack, tcp_layer


def _pair(client_features: dict[str, object]) -> tuple[Simulation, object, object, object, object]:
    sim = Simulation()
    a = make_stack("10.0.0.1/24")
    b = make_stack("10.0.0.2/24", fault={"seed": 1})
    sim.wire(a, b, delay=0.001)
    ta, tb = tcp_layer(a), tcp_layer(b)
    listener = tb.listen(80)
    conn = ta.connect(bytes([10, 0, 0, 2]), 80, now=0.0, options=TcpOptions(features=client_features))
    sim.run(condition=lambda: bool(listener.accept_queue), until=5.0)
    server = listener.accept()
    assert server is not None
    return sim, conn, server, a, b


class TestKeepAlive:
    def test_off_by_default(self) -> None:
        """MUST-25: without the feature an idle connection sends nothing, for hours."""
        sim, conn, _, a, _ = _pair({})
        sent = sim.stats(a).frames
        sim.run(until=3 * 3600.0)
        assert sim.stats(a).frames == sent
        assert conn.keepalive_probes_sent == 0  # type: ignore[attr-defined]

    def test_probe_after_idle_is_answered_and_the_connection_lives(self) -> None:
        """MUST-26/27, SHLD-12: after `idle` seconds without traffic a probe with SEQ = SND.UNA - 1 and no
        data goes out; the peer's ACK keeps the connection open."""
        sim, conn, _, _, _ = _pair({"keepalive": {"idle": 10.0, "interval": 2.0, "count": 3}})
        sim.run(until=35.0)
        assert conn.keepalive_probes_sent == 3  # type: ignore[attr-defined]  # at 10, 20 and 30 s
        assert conn.state.value == "ESTABLISHED"  # type: ignore[attr-defined]

    def test_probe_segment_format(self) -> None:
        """SHLD-12, MAY-6: the probe carries SEQ = SND.UNA - 1 and no data (one garbage octet if asked)."""
        for garbage, length in ((False, 0), (True, 1)):
            sim, conn, _, _, _ = _pair({"keepalive": {"idle": 5.0, "garbage_octet": garbage}})
            sim.run(until=4.9)
            conn.handle_timer(6.0)  # type: ignore[attr-defined]
            (probe,) = conn.segments_to_send(6.0)  # type: ignore[attr-defined]
            assert probe.seq == (conn.snd_una - 1) & 0xFFFFFFFF  # type: ignore[attr-defined]
            assert len(probe.payload) == length and probe.flags & ACK

    def test_dead_peer_aborts_with_timeout(self) -> None:
        """RFC 1122 §4.2.3.6: `count` unanswered probes end the connection with a timeout."""
        sim, conn, _, _, b = _pair({"keepalive": {"idle": 10.0, "interval": 2.0, "count": 3}})
        sim.run(until=15.0)  # one probe answered at 10 s
        fault = b.layer("fault")
        assert isinstance(fault, FaultInjector)
        fault.add_rule("drop", direction="in", count=10**6)  # the peer goes silent
        sim.run(until=60.0)
        assert conn.state.value == "CLOSED"  # type: ignore[attr-defined]
        assert ConnectionFailed("timeout", "keep-alive: the peer stopped answering") in conn.events  # type: ignore[attr-defined]
        # Probes at 10 (answered), 20, 22, 24 s; the give-up at 26 s.
        assert conn.keepalive_probes_sent == 4  # type: ignore[attr-defined]
        assert conn.closed_at == pytest.approx(26.0, abs=0.01)  # type: ignore[attr-defined]

    def test_one_lost_answer_is_tolerated(self) -> None:
        """MUST-29: a single lost ACK of a probe does not end the connection."""
        sim, conn, _, _, b = _pair({"keepalive": {"idle": 10.0, "interval": 2.0, "count": 2}})
        fault = b.layer("fault")
        assert isinstance(fault, FaultInjector)
        fault.add_rule("drop", direction="in", nth=1, count=1)  # the first probe is lost
        sim.run(until=40.0)
        assert conn.state.value == "ESTABLISHED"  # type: ignore[attr-defined]

    def test_settings_are_validated(self) -> None:
        """MUST-27: idle/interval/count are settings with bounds; a bad one is a ConfigError with its path."""
        from tcpstack.config import config_from_dict

        with pytest.raises(ConfigError, match=r"layers\[2\]\.features\.keepalive\.count"):
            config_from_dict(
                {
                    "layers": [
                        {"type": "memory"},
                        {"type": "ipv4"},
                        {"type": "tcp", "features": {"keepalive": {"count": 0}}},
                    ]
                },
                entry_points=False,
            )
