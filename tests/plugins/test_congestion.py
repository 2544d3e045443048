"""Congestion control: reno (RFC 5681, RFC 6582, RFC 3465) and cubic (RFC 9438), selected per
connection by name, and a third-party algorithm added by a plugin (checklist CC2-CC11).

Three levels (design notes C8): the controllers alone, driven with explicit ACK sizes and
times; selection on connections of one stack; and a plugin defined in this module, registered
through ``PluginHost(extra=[...])``, controlling one connection of a simulated transfer.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest

from framework.errors import ConfigError, PluginError
from framework.registry import Registry
from framework.simulation import Simulation
from layers.tcp.congestion import CongestionControl, initial_window
from layers.tcp.extensions import add_congestion_control, congestion_controls
from layers.tcp.policy import TcpOptions
from plugins.congestion.cubic import ALPHA, BETA, Cubic
from tcpstack.config import config_from_dict
from tcpstack.plugins import PluginHost, hookimpl
from tests.layers.tcp.helpers import REMOTE_PORT, App, LayerHarness, data, stack_config, tcp_layer
from tests.plugins.helpers import make_stack, stack_from_host

PEER = socket.inet_aton("10.0.0.2")
MSS = 1000


def one_rtt(cc: CongestionControl, now: float, *, rtt: float = 0.1, ack_bytes: int = MSS) -> float:
    """Acknowledge one window (``cwnd`` bytes) in ACKs of *ack_bytes*, spread over one RTT; return the time
    at its end."""
    window = cc.cwnd
    n = max(window // ack_bytes, 1)
    for i in range(n):
        cc.on_ack(ack_bytes, window, now + rtt * i / n, rtt)
    return now + rtt


def after_loss(cc: Cubic, cwnd_segments: int, now: float = 0.0) -> None:
    """A fast-retransmit loss at *cwnd_segments* and the end of its recovery (RFC 6582 §3.2 full ACK)."""
    cc.cwnd = cwnd_segments * cc.mss
    cc.on_loss(cc.cwnd, now)
    cc.on_recovery_end(cc.ssthresh)


# ====================================================================== 1. reno alone


class TestReno:
    def test_initial_window(self) -> None:
        """RFC 5681 §3.1 (checklist CC1): IW = min(4*SMSS, max(2*SMSS, 4380 bytes))."""
        assert [initial_window(m) for m in (536, 1000, 1095, 1460, 2190, 4000)] == [2144, 4000, 4380, 4380, 4380, 8000]
        assert CongestionControl(1460).cwnd == 4380

    @pytest.mark.parametrize("ack_bytes", [MSS, 2 * MSS])
    def test_slow_start_doubles_per_rtt(self, ack_bytes: int) -> None:
        """RFC 5681 §3.1 with RFC 3465 byte counting (L = 2 SMSS; checklist CC2): cwnd doubles each RTT, with an
        ACK per segment or per two segments (delayed ACKs)."""
        cc = CongestionControl(MSS)
        now, windows = 0.0, [cc.cwnd]
        for _ in range(4):
            now = one_rtt(cc, now, ack_bytes=ack_bytes)
            windows.append(cc.cwnd)
        assert windows == [4000, 8000, 16000, 32000, 64000]

    def test_byte_counting_limits_one_ack_to_two_segments(self) -> None:
        """RFC 3465 §2.2 (L = 2*SMSS): one ACK covering many segments grows cwnd by at most 2 SMSS."""
        cc = CongestionControl(MSS)
        cc.on_ack(10 * MSS, 10 * MSS, 0.0)
        assert cc.cwnd == 4000 + 2 * MSS

    def test_congestion_avoidance_adds_one_mss_per_rtt(self) -> None:
        """RFC 5681 §3.1 eq. 3 (checklist CC3): above ssthresh cwnd grows by one SMSS per RTT, never more."""
        cc = CongestionControl(MSS)
        cc.cwnd = cc.ssthresh = 10 * MSS
        now, windows = 0.0, []
        for _ in range(5):
            now = one_rtt(cc, now)
            windows.append(cc.cwnd)
        assert windows == [11000, 12000, 13000, 14000, 15000]

    def test_ack_division_does_not_inflate_cwnd(self) -> None:
        """RFC 3465 (checklist CC11): a peer splitting ACKs into 1-byte steps gains nothing over whole ACKs."""
        whole, split = CongestionControl(MSS), CongestionControl(MSS)
        whole.on_ack(MSS, MSS, 0.0)
        for _ in range(MSS):
            split.on_ack(1, MSS, 0.0)
        assert split.cwnd == whole.cwnd == 5000
        whole.cwnd = whole.ssthresh = split.cwnd = split.ssthresh = 10 * MSS
        whole.on_ack(10 * MSS, 10 * MSS, 0.0)
        for _ in range(10 * MSS):
            split.on_ack(1, 10 * MSS, 0.0)
        assert split.cwnd == whole.cwnd == 11 * MSS

    def test_loss_and_timeout(self) -> None:
        """RFC 5681 §3.1 eq. 4 and §3.2 (checklist CC4, CC6): ssthresh = max(FlightSize/2, 2 SMSS); fast
        retransmit inflates by 3 SMSS; a timeout leaves one SMSS."""
        cc = CongestionControl(MSS)
        cc.cwnd = 20 * MSS
        cc.on_loss(20 * MSS, 0.0)
        assert (cc.ssthresh, cc.cwnd) == (10 * MSS, 13 * MSS)
        cc.on_timeout(3 * MSS, 1.0)
        assert (cc.ssthresh, cc.cwnd) == (2 * MSS, MSS)


# ====================================================================== 1. cubic alone


class TestCubic:
    def test_slow_start_is_reno_with_byte_counting(self) -> None:
        """RFC 9438 §4.10 and RFC 3465: below ssthresh CUBIC grows like RFC 5681 slow start, by bytes acked."""
        cc = Cubic(MSS)
        now = one_rtt(cc, 0.0)
        now = one_rtt(cc, now)
        assert cc.cwnd == 16000
        split = Cubic(MSS)
        for _ in range(MSS):
            split.on_ack(1, MSS, 0.0)
        assert split.cwnd == 5000

    def test_loss_reduces_to_beta_times_cwnd(self) -> None:
        """RFC 9438 §4.6 (checklist CC10): on loss ssthresh = 0.7 * cwnd, and W_max records the old cwnd."""
        cc = Cubic(MSS)
        cc.cwnd = 100 * MSS
        cc.on_loss(100 * MSS, 0.0)
        assert BETA == 0.7 and cc.ssthresh == 70 * MSS and cc.w_max == 100
        assert cc.cwnd == 73 * MSS  # RFC 5681 §3.2 step 3: ssthresh + 3 SMSS during recovery
        cc.on_recovery_end(70 * MSS)
        assert cc.cwnd == 70 * MSS

    def test_concave_regrowth_plateaus_near_w_max(self) -> None:
        """RFC 9438 §4.2 and §4.4 (checklist CC10): after a loss at 100 segments cwnd regrows fast, then ever more
        slowly, flattening out at W_max around K = cbrt(30/0.4) s, then probes beyond it (convex)."""
        cc = Cubic(MSS)
        after_loss(cc, 100)
        now, trace = 0.0, {}
        for _ in range(70):
            now = one_rtt(cc, now)
            trace[round(now, 1)] = cc.cwnd / MSS
        assert cc.k == pytest.approx((30 / 0.4) ** (1 / 3))  # 4.217 s
        first_second = trace[1.0] - 70
        before_k = trace[4.2] - trace[3.2]
        assert first_second > 10 * before_k > 0
        assert 98 <= trace[4.2] <= 101  # the plateau at W_max
        assert max(trace[t] for t in trace if t <= 4.2) <= 101  # no overshoot while concave
        assert trace[7.0] - trace[6.0] > trace[5.0] - trace[4.0]  # convex: accelerating again

    def test_reno_friendly_region(self) -> None:
        """RFC 9438 §4.3: where Reno would be faster (short RTT, small window) cwnd follows W_est, growing by
        alpha = 3(1-beta)/(1+beta) segments per RTT."""
        cc = Cubic(MSS)
        after_loss(cc, 10)
        now = 0.0
        for _ in range(20):
            now = one_rtt(cc, now, rtt=0.001)
        assert ALPHA == pytest.approx(0.529, abs=0.001)
        assert cc._w_cubic(now) < cc.w_est
        assert cc.cwnd / MSS == pytest.approx(cc.w_est, abs=0.01)
        assert 15 < cc.cwnd / MSS < 7 + 20 * ALPHA + 0.01

    def test_fast_convergence(self) -> None:
        """RFC 9438 §4.7 (checklist CC10): a loss below the previous W_max lowers W_max to cwnd * (1 + beta) / 2;
        without fast convergence W_max is the cwnd at the loss."""
        for fast, w_max in ((True, 90 * (1 + BETA) / 2), (False, 90.0)):
            cc = Cubic(MSS, fast_convergence=fast)
            after_loss(cc, 100)
            after_loss(cc, 90, now=1.0)
            assert cc.w_max == pytest.approx(w_max)
            assert cc.ssthresh == pytest.approx(63 * MSS, abs=1)

    def test_ack_division_does_not_inflate_cwnd_in_congestion_avoidance(self) -> None:
        """RFC 3465 (checklist CC11): CUBIC's growth is per byte acknowledged, so 1-byte ACKs gain nothing."""
        whole, split = Cubic(MSS), Cubic(MSS)
        for cc in (whole, split):
            after_loss(cc, 50)
        whole.on_ack(10 * MSS, 35 * MSS, 0.5, 0.1)
        split.on_ack(1, 35 * MSS, 0.5, 0.1)  # starts the epoch at the same time
        for _ in range(10 * MSS - 1):
            split.on_ack(1, 35 * MSS, 0.5, 0.1)
        assert abs(split.cwnd - whole.cwnd) <= MSS // 10

    def test_timeout_starts_a_new_epoch_from_one_segment(self) -> None:
        """RFC 9438 §4.8: after a timeout cwnd is one segment and the next congestion-avoidance epoch is new."""
        cc = Cubic(MSS)
        after_loss(cc, 100)
        one_rtt(cc, 0.0)
        assert cc.epoch_start is not None
        before = cc.cwnd
        cc.on_timeout(before, 1.0)
        assert cc.cwnd == MSS and cc.epoch_start is None and cc.ssthresh == int(before * BETA)


# ====================================================================== 2. selection per connection


class TestSelection:
    def test_reno_on_one_connection_cubic_by_default_on_another(self) -> None:
        """RFC 9438 §1 / docs/plugins.md: cubic is the default; ``congestion_control="reno"`` selects RFC 5681
        congestion control for one connection of the same stack only."""
        tcp = tcp_layer(make_stack(default_features=True))
        reno = tcp.connect(PEER, 80, now=0.0, options=TcpOptions(congestion_control="reno", initial_window="rfc5681"))
        cubic = tcp.connect(PEER, 81, now=0.0)
        assert type(reno.cc) is CongestionControl and reno.congestion_name == "reno"
        assert type(cubic.cc) is Cubic and cubic.congestion_name == "cubic"
        assert reno.status()["cwnd"] == cubic.status()["cwnd"] == initial_window(1460)

    def test_stack_default_and_listener_override(self) -> None:
        """RFC 5681 / RFC 9438: the tcp layer's ``congestion_control`` sets the stack's default; a listener's
        option overrides it for the connections it accepts."""
        h = LayerHarness(congestion_control="reno")
        h.tcp.listen(80)
        h.tcp.listen(81, options=TcpOptions(congestion_control="cubic"))
        default, _ = h.handshake(80)
        override, _ = h.handshake(81, remote_port=REMOTE_PORT + 1)
        assert type(default.cc) is CongestionControl and default.congestion_name == "reno"
        assert type(override.cc) is Cubic and override.congestion_name == "cubic"

    def test_unknown_algorithm_for_a_connection_is_a_value_error(self) -> None:
        """docs/plugins.md: an unknown algorithm is a ValueError before anything starts, naming the known ones."""
        tcp = tcp_layer(make_stack())
        with pytest.raises(ValueError, match=r"congestion_control: unknown algorithm 'vegas' \(known: cubic, reno\)"):
            tcp.connect(PEER, 80, now=0.0, options=TcpOptions(congestion_control="vegas"))
        with pytest.raises(ValueError, match="unknown algorithm 'vegas'"):
            tcp.listen(80, options=TcpOptions(congestion_control="vegas"))
        assert tcp.connections == {} and tcp.listeners == {}

    def test_unknown_algorithm_in_the_api_is_a_value_error(self) -> None:
        """docs/plugins.md: ``open_connection(..., congestion_control=...)`` raises ValueError for an unknown name."""
        from tcpstack.io.driver import AsyncioDriver
        from tcpstack.io.memory import MemoryLink
        from tcpstack.streams import StackApi

        async def main() -> None:
            a, b = MemoryLink.pair()
            try:
                stack = make_stack()
                api = StackApi(stack, AsyncioDriver(stack, a))
                with pytest.raises(ValueError, match="unknown algorithm 'bbr'"):
                    await api.open_connection("10.0.0.2", 80, congestion_control="bbr")
            finally:
                a.close()
                b.close()

        asyncio.run(main())

    def test_unknown_algorithm_in_configuration_is_a_config_error_with_the_key_path(self) -> None:
        """docs/plugins.md: ``congestion_control`` naming no registered algorithm is a ConfigError at its key."""
        with pytest.raises(ConfigError) as info:
            config_from_dict(stack_config(congestion_control="vegas"), host=PluginHost(entry_points=False))
        assert info.value.problems == ["layers[2].congestion_control: unknown algorithm 'vegas' (known: cubic, reno)"]

    def test_disabled_algorithm_plugin_is_unknown(self) -> None:
        """docs/plugins.md: disabling ``plugins.congestion.cubic`` removes the name; the default then fails clearly,
        saying a plugin was disabled."""
        data_ = {**stack_config(), "plugins": {"disable": ["plugins.congestion.cubic"]}}
        with pytest.raises(ConfigError) as info:
            config_from_dict(data_, entry_points=False)
        assert info.value.problems == [
            "layers[2].congestion_control: unknown algorithm 'cubic' (plugins disabled by [plugins] disable: "
            "plugins.congestion.cubic; known: reno)"
        ]
        data_["layers"][2]["congestion_control"] = "reno"
        assert config_from_dict(data_, entry_points=False).layer("tcp") is not None


# ====================================================================== 3. a new algorithm from a plugin


class FixedWindow(CongestionControl):
    """A test algorithm: cwnd is always two segments, whatever happens (not a sane controller)."""

    name = "fixed2"

    def _pin(self) -> None:
        self.cwnd = 2 * self.mss

    def __init__(self, mss: int) -> None:
        super().__init__(mss)
        self._pin()

    def set_mss(self, mss: int) -> None:
        self.mss = mss
        self._pin()

    def on_ack(self, acked: int, in_flight: int, now: float, rtt: float | None = None) -> None:
        self._pin()

    def on_loss(self, in_flight: int, now: float) -> None:
        self._pin()

    def on_dup_ack_in_recovery(self) -> None:
        self._pin()

    def on_partial_ack(self, acked: int) -> None:
        self._pin()

    def on_recovery_end(self, in_flight: int) -> None:
        self._pin()

    def on_timeout(self, in_flight: int, now: float) -> None:
        self._pin()

    def on_idle_restart(self) -> None:
        self._pin()


class FixedWindowPlugin:
    """A third-party plugin: registers ``fixed2`` through the documented hook, nothing else."""

    @hookimpl
    def stack_register(self, registry: Registry) -> None:
        add_congestion_control(registry, "fixed2", lambda mss, settings: FixedWindow(mss), doc="cwnd = 2 MSS")


class TestPluginAlgorithm:
    def test_registered_through_the_hook_and_named_for_its_plugin(self) -> None:
        """docs/hooks.md (``add_congestion_control``): the plugin's algorithm joins the built-in ones."""
        host = PluginHost(entry_points=False, extra=[FixedWindowPlugin()])
        alg = congestion_controls(host.registry)["fixed2"]
        assert sorted(congestion_controls(host.registry)) == ["cubic", "fixed2", "reno"]
        assert alg.plugin == f"{__name__}.FixedWindowPlugin" and alg.doc == "cwnd = 2 MSS"
        assert isinstance(alg.factory(1460, None), FixedWindow)

    def test_clash_with_a_builtin_name_is_a_plugin_error(self) -> None:
        """docs/hooks.md: registering a name another plugin registered raises PluginError naming both."""

        class Impostor:
            @hookimpl
            def stack_register(self, registry: Registry) -> None:
                add_congestion_control(registry, "cubic", lambda mss, settings: FixedWindow(mss))

        with pytest.raises(PluginError, match="congestion control 'cubic' registered twice") as info:
            PluginHost(entry_points=False, extra=[Impostor()])
        assert "Impostor" in str(info.value) and "plugins.congestion.cubic" in str(info.value)

    def test_selectable_in_configuration_only_with_the_plugin(self) -> None:
        """docs/plugins.md: ``congestion_control = "fixed2"`` validates against the host that has the plugin."""
        host = PluginHost(entry_points=False, extra=[FixedWindowPlugin()])
        stack = stack_from_host(host, congestion_control="fixed2")
        assert isinstance(tcp_layer(stack).connect(PEER, 80, now=0.0).cc, FixedWindow)
        with pytest.raises(ConfigError, match="unknown algorithm 'fixed2'"):
            config_from_dict(stack_config(congestion_control="fixed2"), host=PluginHost(entry_points=False))

    def test_controls_one_connection_of_a_transfer_without_touching_the_core(self) -> None:
        """RFC 5681 §3 (cwnd limits the flight; checklist CC12): an algorithm defined in this test module,
        registered with ``PluginHost(extra=[...])`` and selected for one connection only, is that connection's
        controller: its flight never exceeds 2 MSS, while a cubic connection of the same stack grows its own."""
        host = PluginHost(entry_points=False, extra=[FixedWindowPlugin()])
        a = stack_from_host(host)
        b = make_stack("10.0.0.2/24")
        sim = Simulation()
        sim.wire(a, b, delay=0.005)
        ta, tb = tcp_layer(a), tcp_layer(b)
        servers: list[App] = []

        def accept(conn: Any) -> None:
            app = App(sim, tb)
            servers.append(app)
            app.attach(conn)

        tb.listen(80, on_accept=accept)
        payload = data(200_000)
        fixed = App(sim, ta, payload)
        fixed.attach(ta.connect(PEER, 80, now=0.0, options=TcpOptions(congestion_control="fixed2")))
        default = App(sim, ta, payload)
        default.attach(ta.connect(PEER, 80, now=0.0))
        assert fixed.conn is not None and default.conn is not None
        assert isinstance(fixed.conn.cc, FixedWindow) and fixed.conn.congestion_name == "fixed2"
        assert type(default.conn.cc) is Cubic and default.conn.congestion_name == "cubic"

        peak = {id(fixed.conn): 0, id(default.conn): 0}

        def on_step(now: float) -> None:
            for c in (fixed.conn, default.conn):
                assert c is not None
                peak[id(c)] = max(peak[id(c)], c.in_flight)

        sim.on_step = on_step
        sim.run(until=60.0, condition=lambda: len(servers) == 2 and all(s.eof for s in servers))
        assert [bytes(s.received) for s in servers] == [payload, payload]
        assert not fixed.failures and not default.failures
        assert peak[id(fixed.conn)] == 2 * 1460
        assert peak[id(default.conn)] > 20 * 1460
        assert fixed.conn.cc.cwnd == 2 * 1460


@dataclass(slots=True)
class FixedSettings:
    segments: int = field(default=2, metadata={"min": 1, "max": 100})
    """cwnd in segments."""


class SettingsPlugin:
    """Registers ``fixedn``, whose window comes from its settings."""

    @hookimpl
    def stack_register(self, registry: Registry) -> None:
        add_congestion_control(
            registry, "fixedn", lambda mss, settings: Tuned(mss, settings.segments), settings=FixedSettings, doc="tuned"
        )


class Tuned(CongestionControl):
    """Reno that remembers the setting it was built with."""

    def __init__(self, mss: int, segments: int) -> None:
        super().__init__(mss)
        self.segments = segments


class TestAlgorithmSettings:
    def test_settings_come_from_the_tcp_layers_congestion_table(self) -> None:
        """``congestion = { fixedn = { segments = 7 } }``: the factory gets the validated settings; without the
        table, the defaults."""
        host = PluginHost(entry_points=False, extra=[SettingsPlugin()])
        tuned = tcp_layer(stack_from_host(host, congestion_control="fixedn", congestion={"fixedn": {"segments": 7}}))
        assert tuned.connect(PEER, 80, now=0.0).cc.segments == 7  # type: ignore[attr-defined]
        plain = tcp_layer(stack_from_host(host, congestion_control="fixedn"))
        assert plain.connect(PEER, 80, now=0.0).cc.segments == 2  # type: ignore[attr-defined]

    def test_bad_algorithm_settings_and_names_are_config_errors(self) -> None:
        host = PluginHost(entry_points=False, extra=[SettingsPlugin()])
        with pytest.raises(ConfigError) as info:
            config_from_dict(
                stack_config(congestion_control="cubc", congestion={"fixedn": {"segments": 0}, "reno": {"x": 1}}),
                host=host,
            )
        problems = info.value.problems
        assert any("congestion_control: unknown algorithm 'cubc' (did you mean 'cubic'?" in p for p in problems)
        assert any("congestion.fixedn.segments" in p for p in problems)
        assert any("congestion.reno: the algorithm 'reno' takes no settings" in p for p in problems)

    def test_a_non_string_algorithm_is_a_value_error(self) -> None:
        tcp = tcp_layer(stack_from_host(PluginHost(entry_points=False)))
        with pytest.raises(ValueError, match="expected the name of an algorithm"):
            tcp.connect(PEER, 80, now=0.0, options=TcpOptions(congestion_control={"reno": {}}))  # type: ignore[arg-type]
