"""Switching per-connection features (docs/plugins.md "Switching features", docs/hooks.md
``tcp_connection_setup``): the default set, the tcp layer's ``features`` table, listener and
connection overrides, validation with key paths, and disabled plugins.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from framework.errors import ConfigError
from layers.tcp.extensions import add_feature, features
from layers.tcp.features import DEFAULT_CONGESTION_CONTROL, DEFAULT_FEATURES
from layers.tcp.handler import TcpLayer, TcpSettings
from layers.tcp.policy import AckPolicy, SendPolicy, TcpOptions
from plugins.congestion.cubic import Cubic
from plugins.delayed_ack import DelayedAck, DelayedAckSettings
from plugins.nagle import Nagle
from plugins.timestamps import Timestamps
from plugins.window_scaling import WindowScaling
from tcpstack.config import build_stack, config_from_dict, load_config
from tcpstack.plugins import PluginHost
from tests.layers.tcp.helpers import LayerHarness, stack_config, tcp_layer
from tests.plugins.helpers import HOST, make_stack

PEER = socket.inet_aton("10.0.0.2")
KNOWN = ", ".join(sorted(features(HOST.registry)))


def fresh_config(**tcp: Any) -> dict[str, Any]:
    """A configuration as a user writes it: the tcp layer has only what *tcp* says (no
    ``default_features = false`` as in the other tests)."""
    return {
        "layers": [
            {"type": "memory"},
            {"type": "ipv4", "address": "10.0.0.1/24"},
            {"type": "tcp", "isn_secret": "00" * 16, **tcp},
        ]
    }


def config_problems(data: dict[str, Any], host: PluginHost | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, host=host or PluginHost(entry_points=False))
    return info.value.problems


def connect(tcp: TcpLayer, port: int = 80, **features: Any) -> Any:
    return tcp.connect(PEER, port, now=0.0, options=TcpOptions(features=features) if features else None)


# ====================================================================== the default set


class TestDefaults:
    def test_default_set_is_the_documented_one(self) -> None:
        """docs/plugins.md "The default set": window scaling, timestamps, delayed ACK, Nagle, and CUBIC."""
        assert {"window_scaling", "timestamps", "delayed_ack", "nagle"} <= set(DEFAULT_FEATURES)
        assert "keepalive" not in DEFAULT_FEATURES
        assert DEFAULT_CONGESTION_CONTROL == "cubic"

    def test_a_new_stack_gets_the_default_set(self) -> None:
        """docs/plugins.md: without configuration a stack enables exactly DEFAULT_FEATURES, with their defaults,
        and every connection gets their policies and extensions."""
        stack = build_stack(config_from_dict(fresh_config(), host=PluginHost(entry_points=False)))
        tcp = tcp_layer(stack)
        assert set(tcp.settings.resolved_features) == set(DEFAULT_FEATURES)
        assert tcp.settings.resolved_features["delayed_ack"] == DelayedAckSettings()
        conn = connect(tcp)
        assert set(conn.features) == set(DEFAULT_FEATURES)
        assert isinstance(conn.ack_policy, DelayedAck) and conn.ack_policy.timeout == 0.04
        assert isinstance(conn.send_policy, Nagle)
        assert {type(e) for e in conn.extensions} >= {WindowScaling, Timestamps}
        assert type(conn.cc) is Cubic and conn.congestion_name == "cubic"

    def test_a_layer_built_without_configuration_gets_the_default_set_when_bound(self) -> None:
        """docs/plugins.md: a tcp layer made from ``TcpSettings()`` in Python gets the default set from its host."""
        layer = TcpLayer("tcp", TcpSettings())
        layer.bind(PluginHost(entry_points=False))
        assert set(layer.settings.resolved_features) == set(DEFAULT_FEATURES)

    def test_default_features_false_starts_from_nothing(self) -> None:
        """docs/plugins.md: ``default_features = false``: no feature, the default policies, still CUBIC."""
        tcp = tcp_layer(make_stack())  # stack_config sets default_features = false
        assert tcp.settings.resolved_features == {}
        conn = connect(tcp)
        assert conn.features == {} and conn.extensions == []
        assert type(conn.ack_policy) is AckPolicy and type(conn.send_policy) is SendPolicy
        assert type(conn.cc) is Cubic

    def test_default_features_false_with_a_table_enables_only_what_it_names(self) -> None:
        """docs/plugins.md: with ``default_features = false`` only the features named in the table are on."""
        tcp = tcp_layer(make_stack(features={"nagle": {"cork": True}}))
        conn = connect(tcp)
        assert set(conn.features) == {"nagle"} and conn.send_policy.cork


# ====================================================================== configuration


class TestConfiguration:
    def test_documented_example_table(self, tmp_path: Path) -> None:
        """docs/plugins.md example: ``features = { nagle = false, delayed_ack = { timeout = 0.02 } }`` with reno,
        read from TOML, turns Nagle off and shortens the delay; the rest of the default set stays."""
        cfg = tmp_path / "stack.toml"
        cfg.write_text(
            '[[layers]]\ntype = "memory"\n\n[[layers]]\ntype = "ipv4"\naddress = "10.0.0.1/24"\n\n'
            '[[layers]]\ntype = "tcp"\ncongestion_control = "reno"\n'
            "features = { nagle = false, delayed_ack = { timeout = 0.02 } }\n"
        )
        tcp = tcp_layer(build_stack(load_config(cfg, entry_points=False)))
        assert set(tcp.settings.resolved_features) == set(DEFAULT_FEATURES) - {"nagle"}
        conn = connect(tcp)
        assert type(conn.send_policy) is SendPolicy
        assert conn.ack_policy.timeout == 0.02 and conn.congestion_name == "reno"

    def test_unknown_names_and_bad_settings_are_config_errors_with_key_paths(self) -> None:
        """docs/plugins.md: an unknown feature or setting is a ConfigError naming each key path, all at once."""
        features = {
            "bogus": {},
            "delayed_ack": {"timeout": 0.7, "segmnts": 2},
            "window_scaling": {"shift": 15},
            "nagle": "yes",
            "timestamps": {"drop_without_option": 1},
        }
        assert config_problems(stack_config(features=features)) == [
            f"layers[2].features.bogus: unknown feature 'bogus' (known: {KNOWN})",
            "layers[2].features.delayed_ack.timeout: must be more than 0 and less than 0.5 s (RFC 1122 §4.2.3.2)",
            "layers[2].features.delayed_ack.segmnts: unknown key (did you mean 'segments'?)",
            "layers[2].features.window_scaling.shift: 15 is out of range [0, 14]",
            "layers[2].features.nagle: expected a table, got str",
            "layers[2].features.timestamps.drop_without_option: expected boolean, got 1",
        ]

    def test_features_must_be_a_table(self) -> None:
        """docs/configuration.md: ``features`` is a table of feature names."""
        assert config_problems(stack_config(features="nagle")) == ["layers[2].features: expected table, got 'nagle'"]

    def test_true_and_empty_table_mean_the_defaults(self) -> None:
        """docs/plugins.md: ``true`` or ``{}`` turns a feature on with its default settings."""
        for value in (True, {}):
            tcp = tcp_layer(make_stack(features={"delayed_ack": value}))
            assert tcp.settings.resolved_features == {"delayed_ack": DelayedAckSettings()}


# ====================================================================== listener and connection


class TestOverrides:
    def test_feature_off_in_configuration_is_re_enabled_per_connection(self) -> None:
        """docs/plugins.md level 3: a connection's ``features`` turn back on what the stack's table turned off."""
        tcp = tcp_layer(make_stack(default_features=True, features={"nagle": False, "delayed_ack": False}))
        plain = connect(tcp, 80)
        assert "nagle" not in plain.features and "delayed_ack" not in plain.features
        conn = connect(tcp, 81, nagle=True, delayed_ack={"timeout": 0.1})
        assert isinstance(conn.send_policy, Nagle) and isinstance(conn.ack_policy, DelayedAck)
        assert conn.ack_policy.timeout == 0.1
        assert set(conn.features) == set(DEFAULT_FEATURES)

    def test_feature_off_in_configuration_is_re_enabled_per_listener(self) -> None:
        """docs/plugins.md level 2: a listener's ``features`` apply to every connection it accepts."""
        h = LayerHarness(default_features=True, features={"nagle": False})
        h.tcp.listen(80, options=TcpOptions(features={"nagle": {}}))
        h.tcp.listen(81)
        on, _ = h.handshake(80)
        off, _ = h.handshake(81, remote_port=49501)
        assert isinstance(on.send_policy, Nagle) and type(off.send_policy) is SendPolicy

    def test_a_connection_table_replaces_the_stack_table_for_that_feature(self) -> None:
        """docs/plugins.md ("feature by feature"): a connection's settings for a feature replace the stack's whole
        table for it; settings are not merged key by key."""
        tcp = tcp_layer(make_stack(features={"delayed_ack": {"timeout": 0.02}}))
        conn = connect(tcp, delayed_ack={"segments": 3})
        assert (conn.ack_policy.timeout, conn.features["delayed_ack"].segments) == (0.04, 3)

    def test_unknown_feature_or_setting_for_a_connection_is_a_value_error(self) -> None:
        """docs/plugins.md: for the API an unknown feature or setting is a ValueError listing every problem."""
        tcp = tcp_layer(make_stack())
        with pytest.raises(ValueError) as info:
            connect(tcp, bogus={}, nagle={"cork": "yes"})
        assert str(info.value).split("; ") == [
            f"features.bogus: unknown feature 'bogus' (known: {KNOWN})",
            "features.nagle.cork: expected boolean, got 'yes'",
        ]
        with pytest.raises(ValueError, match=r"features\.delayed_ack\.timeout: must be more than 0"):
            tcp.listen(80, options=TcpOptions(features={"delayed_ack": {"timeout": 1.0}}))
        assert tcp.connections == {} and tcp.listeners == {}

    def test_stack_listener_and_connection_through_the_streams_api(self) -> None:
        """docs/plugins.md (three levels, asyncio API): the stack turns Nagle off, ``start_server(features=...)``
        shortens the server's delayed ACK, ``open_connection(features=..., congestion_control=...)`` turns Nagle
        back on with reno for the client; data flows both ways over an in-memory link."""
        from tcpstack.io.driver import AsyncioDriver
        from tcpstack.io.memory import MemoryLink
        from tcpstack.streams import StackApi

        async def main() -> tuple[Any, Any]:
            la, lb = MemoryLink.pair()
            sa = make_stack("10.0.0.1/24", default_features=True, features={"nagle": False})
            sb = make_stack("10.0.0.2/24", default_features=True, features={"nagle": False})
            da, db = AsyncioDriver(sa, la), AsyncioDriver(sb, lb)
            da.start()
            db.start()
            accepted: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

            async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                accepted.set_result(writer.get_extra_info("connection"))
                writer.write(await reader.readexactly(5))
                await writer.drain()
                writer.close()

            try:
                server = await StackApi(sb, db).start_server(echo, port=7, features={"delayed_ack": {"timeout": 0.01}})
                reader, writer = await asyncio.wait_for(
                    StackApi(sa, da).open_connection(
                        "10.0.0.2", 7, features={"nagle": True}, congestion_control="reno"
                    ),
                    5,
                )
                writer.write(b"hello")
                assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
                client = writer.get_extra_info("connection")
                server_conn = await asyncio.wait_for(accepted, 5)
                writer.close()
                server.close()
                return client, server_conn
            finally:
                da.stop()
                db.stop()
                la.close()
                lb.close()

        client, server_conn = asyncio.run(main())
        assert isinstance(client.send_policy, Nagle) and client.congestion_name == "reno"
        assert set(client.features) == set(DEFAULT_FEATURES)
        assert type(server_conn.send_policy) is SendPolicy and "nagle" not in server_conn.features
        assert server_conn.ack_policy.timeout == 0.01 and server_conn.congestion_name == "cubic"


# ====================================================================== disabled plugins


class TestDisabledPlugin:
    def disabled(self, **tcp: Any) -> dict[str, Any]:
        return {**fresh_config(**tcp), "plugins": {"disable": ["plugins.nagle"]}}

    def test_drops_out_of_the_default_set_silently(self) -> None:
        """docs/plugins.md / hooks.md: ``plugins.disable = ["plugins.nagle"]`` leaves the rest of the default set;
        connections simply have no Nagle."""
        tcp = tcp_layer(build_stack(config_from_dict(self.disabled(), entry_points=False)))
        assert set(tcp.settings.resolved_features) == set(DEFAULT_FEATURES) - {"nagle"}
        assert type(connect(tcp).send_policy) is SendPolicy

    def test_naming_it_in_configuration_is_an_error(self) -> None:
        """docs/plugins.md: naming a feature whose plugin is disabled is a ConfigError at its key path (even to
        turn it off)."""
        known = ", ".join(sorted(set(features(HOST.registry)) - {"nagle"}))
        for value in ({}, False):
            with pytest.raises(ConfigError) as info:
                config_from_dict(self.disabled(features={"nagle": value}), entry_points=False)
            assert info.value.problems == [
                f"layers[2].features.nagle: unknown feature 'nagle' (plugins disabled by [plugins] disable: "
                f"plugins.nagle; known: {known})"
            ]

    def test_naming_it_for_a_connection_is_a_value_error(self) -> None:
        """docs/plugins.md: an API call naming the disabled plugin's feature is a ValueError."""
        tcp = tcp_layer(build_stack(config_from_dict(self.disabled(), entry_points=False)))
        with pytest.raises(ValueError, match=r"features\.nagle: unknown feature 'nagle'"):
            connect(tcp, nagle={})


class TestSetupFailureAtRuntime:
    def test_a_plugin_failing_on_a_real_syn_costs_that_syn_only(self, log_output) -> None:
        """A plugin that passes the trial setup but raises PluginError for a real connection: the SYN is a
        counted drop (``setup_failed``) with an error line naming the reason; no reply, no internal error."""
        from dataclasses import replace

        from framework.errors import PluginError
        from layers.tcp.wire import SYN
        from tcpstack.plugins import PluginHost, hookimpl
        from tests.layers.tcp.helpers import SEND, decode, frame
        from tests.plugins.helpers import stack_from_host, tcp_layer

        class Fussy:
            @hookimpl
            def tcp_connection_setup(self, setup) -> None:
                if setup.info.local[1]:  # not the trial (port 0): only real connections
                    raise PluginError("fussy refuses this connection")

        stack = stack_from_host(PluginHost(entry_points=False, extra=[Fussy()]))
        tcp_layer(stack).listen(80)
        stack.receive_frame(frame(replace(SEND, dst_port=80, seq=1000, ack=0, flags=SYN)), now=0.0)
        assert [decode(f) for f in stack.frames_to_send(now=0.0)] == []
        assert stack.stats.drops[("tcp", "setup_failed")] == 1
        assert stack.stats.drops[("stack", "internal_error")] == 0
        [line] = [e for e in log_output.entries if e["event"] == "tcp.setup_failed"]
        assert line["error"] == "PluginError: fussy refuses this connection" and line["log_level"] == "error"

    def test_trial_setup_spares_plugins_that_need_later_state(self, log_output) -> None:
        """hookspecs: a plugin may read its [plugins.X] settings in stack_configured, after the configuration is
        checked; its trial setup failing then is no verdict (only clashes are). Real connections work, and a
        failure on a real SYN of another kind than PluginError is a setup_failed drop too."""
        import dataclasses
        from dataclasses import replace

        from layers.tcp.policy import AckPolicy
        from layers.tcp.wire import SYN
        from tcpstack.plugins import PluginHost, hookimpl
        from tests.layers.tcp.helpers import SEND, decode, frame
        from tests.plugins.helpers import stack_from_host, tcp_layer

        @dataclasses.dataclass
        class LateSettings:
            pass

        class Late:
            settings = None
            trials = 0

            @hookimpl
            def stack_register(self, registry) -> None:
                add_feature(registry, "late", LateSettings, doc="late")

            @hookimpl
            def stack_configured(self, stack) -> None:
                Late.settings = object()

            @hookimpl
            def tcp_connection_setup(self, setup) -> None:
                if "late" not in setup.features:
                    return
                Late.trials += setup.trial
                if Late.settings is None or setup.info.remote[1] == 4242:
                    raise AttributeError("no settings yet")
                setup.claim("ack_policy", by="late")
                setup.ack_policy = AckPolicy()

        stack = stack_from_host(PluginHost(entry_points=False, extra=[Late()]), features={"late": {}})
        assert Late.trials == 1  # the trial ran (and failed) while the configuration was checked
        tcp = tcp_layer(stack)
        tcp.listen(80)
        stack.receive_frame(frame(replace(SEND, dst_port=80, seq=1000, ack=0, flags=SYN)), now=0.0)
        assert [decode(f)[1].flags for f in stack.frames_to_send(now=0.0)] == [SYN | 0x10]  # a SYN-ACK
        stack.receive_frame(frame(replace(SEND, src_port=4242, dst_port=80, seq=1000, ack=0, flags=SYN)), now=0.0)
        assert stack.frames_to_send(now=0.0) == []
        assert stack.stats.drops[("tcp", "setup_failed")] == 1
        assert [e["error"] for e in log_output.entries if e["event"] == "tcp.setup_failed"] == [
            "AttributeError: no settings yet"
        ]
