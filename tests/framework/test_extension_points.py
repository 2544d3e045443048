"""The core's extension points that know no protocol: hookspecs a layer adds (stack_addhooks),
kinds of extension a layer defines (Registry.kind), a layer type's own configuration check and
link capabilities (add_layer(check=, capabilities=)), and the network-layer interface."""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import pluggy
import pytest

from framework.capabilities import LinkCapabilities, capabilities_below
from framework.config import CheckContext
from framework.errors import ConfigError, PluginError
from framework.handler import BaseHandler
from framework.hookspecs import hookspec
from framework.netlayer import NetworkLayer, network_layer_below
from framework.registry import ExtensionKind, Registry
from layers.ipv4.handler import Ipv4Layer, Ipv4Settings
from layers.link.handler import MemorySettings, RawIpLink, TunSettings
from layers.tcp.extensions import FEATURES, add_feature, features
from tcpstack.config import build_stack, config_from_dict
from tcpstack.plugins import PluginHost, hookimpl

STACK = {"layers": [{"type": "memory"}, {"type": "ipv4"}, {"type": "tcp"}]}


@dataclass(frozen=True)
class Gadget:
    name: str
    size: int


GADGETS: ExtensionKind[Gadget] = ExtensionKind("widget.gadget", "gadget", turn_off="set gadgets = [] instead")


def _plugin(name: str, **hooks: Any) -> types.SimpleNamespace:
    """A plugin object named *name* implementing *hooks*."""
    for func in hooks.values():
        hookimpl(func)
    ns = types.SimpleNamespace(**hooks)
    ns.__name__ = name
    return ns


class TestExtensionKinds:
    def test_a_layer_defines_a_kind_and_plugins_add_to_it(self) -> None:
        """Plugins add entries to a kind whoever registers first; the table names each one's plugin."""

        def register_a(registry: Registry) -> None:
            registry.kind(GADGETS).add("small", Gadget("small", 1))

        def register_b(registry: Registry) -> None:
            registry.kind(GADGETS).add("large", Gadget("large", 9))

        a, b = (_plugin("a", stack_register=register_a), _plugin("b", stack_register=register_b))
        host = PluginHost(entry_points=False, extra=[a, b])
        table = host.registry.kind(GADGETS)
        assert sorted(table) == ["large", "small"] and table["large"].size == 9
        assert table.plugin("small") == "a" and host.registry.kinds["widget.gadget"] is table

    def test_a_name_registered_twice_names_both_plugins(self) -> None:
        def register(registry: Registry) -> None:
            registry.kind(GADGETS).add("small", Gadget("small", 1))

        one, two = _plugin("one", stack_register=register), _plugin("two", stack_register=register)
        with pytest.raises(PluginError, match=r"gadget 'small' registered twice \((one and two|two and one)\)"):
            PluginHost(entry_points=False, extra=[one, two])

    def test_two_kinds_with_one_name_are_an_error(self) -> None:
        registry = Registry()
        registry.kind(GADGETS)
        with pytest.raises(PluginError, match=r"extension kind 'widget\.gadget' defined twice"):
            registry.kind(ExtensionKind("widget.gadget", "gizmo"))

    def test_tcp_declares_its_kinds_even_without_plugins(self) -> None:
        host = PluginHost(entry_points=False, builtin=["layers.tcp.handler"])
        assert set(host.registry.kinds) == {"tcp.feature", "tcp.congestion_control"}
        assert len(features(host.registry)) == 0

    def test_disabling_an_entry_by_name_points_to_the_kind_s_own_way(self) -> None:
        """[plugins] disable naming a feature instead of its plugin: the hint is the kind's."""
        with pytest.raises(ConfigError) as info:
            PluginHost(entry_points=False, disabled=["sack"])
        (problem,) = info.value.problems
        assert "'plugins.sack'" in problem and FEATURES.turn_off.format(name="sack") in problem


class TestLayerHooks:
    def test_tcp_hooks_are_declared_by_the_tcp_layer(self) -> None:
        """The core declares stack hooks only; the TCP layer adds tcp_connection_setup."""
        bare = PluginHost(entry_points=False, builtin=[])
        assert not hasattr(bare.pm.hook, "tcp_connection_setup")
        host = PluginHost(entry_points=False, builtin=["layers.tcp.handler"])
        assert host.hook_names()["tcp_connection_setup"].__name__ == "layers.tcp.hookspecs"

    def test_a_hook_implemented_before_its_layer_registers_is_accepted(self) -> None:
        """Order does not matter: the plugin registers before the layer that declares its hook."""
        host = PluginHost(entry_points=False, builtin=["plugins.nagle", "layers.tcp.handler"])
        assert host.pm.hook.tcp_connection_setup.get_hookimpls()

    def test_a_layer_of_a_plugin_adds_its_own_hooks(self) -> None:
        """A third-party layer declares a hook and calls it; another plugin implements it."""
        specs = types.ModuleType("widget_hookspecs")

        def widget_made(size: int) -> int:  # type: ignore[empty-body]
            """A widget was made."""

        specs.widget_made = hookspec(widget_made)  # type: ignore[attr-defined]

        def stack_addhooks(host: PluginHost) -> None:
            host.add_hookspecs(specs)

        def on_widget(size: int) -> int:
            return size * 2

        user = _plugin("user", widget_made=on_widget)
        layer = _plugin("widget", stack_addhooks=stack_addhooks)
        host = PluginHost(entry_points=False, extra=[user, layer])
        assert host.pm.hook.widget_made(size=21) == [42]
        assert host.hook_names()["widget_made"] is specs

    def test_an_implementation_of_no_declared_hook_is_still_an_error(self) -> None:
        with pytest.raises(pluggy.PluginValidationError, match="widget_made"):
            PluginHost(entry_points=False, extra=[_plugin("user", widget_made=lambda size: size)])

    def test_disabling_the_layer_that_declares_a_hook_says_so(self) -> None:
        with pytest.raises(ConfigError, match=r"tcp_connection_setup.*may be disabled \(layers.tcp.handler\)"):
            PluginHost(entry_points=False, disabled=["layers.tcp.handler"])


class TestCapabilities:
    def test_a_link_offers_typed_capabilities(self) -> None:
        plain = RawIpLink("memory", 1400, MemorySettings(mtu=1400))
        offload = RawIpLink("tun", 1500, TunSettings(offload=True))
        assert plain.capabilities == LinkCapabilities(1400)
        assert offload.capabilities == LinkCapabilities(1500, True, True, 65535)
        assert capabilities_below([BaseHandler(), offload]) is offload.capabilities
        assert capabilities_below([BaseHandler()]) is None

    def test_the_layers_above_receive_them_at_attach(self) -> None:
        """IPv4 takes the link's MTU; TCP the offload (checksum and super-segments)."""
        data = {"layers": [{"type": "tun", "offload": True, "mtu": 1400}, {"type": "ipv4"}, {"type": "tcp"}]}
        stack = build_stack(config_from_dict(data))
        ip, tcp = stack.layer("ipv4"), stack.layer("tcp")
        assert ip.mtu == 1400  # type: ignore[attr-defined]
        assert tcp.mtu == 1400 and tcp.tso_max == 65535 and tcp.local_mss == 1360  # type: ignore[attr-defined]
        plain = build_stack(config_from_dict(STACK)).layer("tcp")
        assert plain.tso_max == 0 and plain.local_mss == 1460  # type: ignore[attr-defined]

    def test_a_check_sees_the_link_capabilities_without_building(self) -> None:
        """add_layer(check=, capabilities=): a layer's own check finds the link below by its declaration."""
        seen: list[Any] = []

        def check(settings: Any, context: CheckContext) -> None:
            seen.append(context.link_below())
            context.problems.append(f"{context.path}: checked")

        def stack_register(registry: Registry) -> None:
            registry.add_layer("probe", lambda name, s: BaseHandler(), MemorySettings, check=check)

        host = PluginHost(entry_points=False, extra=[_plugin("probe", stack_register=stack_register)])
        data = {"layers": [{"type": "memory", "mtu": 1280}, {"type": "probe"}]}
        with pytest.raises(ConfigError) as info:
            config_from_dict(data, host=host)
        assert info.value.problems == ["layers[1]: checked"]
        ((layer, caps),) = seen
        assert layer.type == "memory" and caps == LinkCapabilities(1280)


class TestNetworkLayer:
    def test_ipv4_is_a_network_layer(self) -> None:
        ip = Ipv4Layer("ipv4", Ipv4Settings(address="10.0.0.2/24", mtu=1280))
        assert isinstance(ip, NetworkLayer) and network_layer_below([BaseHandler(), ip]) is ip
        assert list(ip.local_addresses()) == [bytes([10, 0, 0, 2])] and ip.mtu_to(None) == 1280
        assert ip.is_broadcast(bytes([10, 0, 0, 255])) and ip.is_broadcast(b"\xff" * 4)
        assert not ip.is_broadcast(bytes([10, 0, 0, 1]))
        hdr = ip.make_header(bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]), 17, tos=2, dont_frag=False)
        src, dst = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])
        assert (hdr.src, hdr.dst, hdr.protocol, hdr.tos, hdr.dont_frag) == (src, dst, 17, 2, False)

    def test_ipv4_pseudo_header_sum(self) -> None:
        """RFC 768 "Fields": source, destination, zero, protocol, length, summed as RFC 1071
        words; linear in the length (what a transport may rely on)."""
        ip = Ipv4Layer("ipv4", Ipv4Settings(address="10.0.0.2/24", mtu=1280))
        src, dst = bytes([10, 0, 0, 2]), bytes([192, 168, 255, 1])
        pseudo = src + dst + bytes([0, 17]) + (1234).to_bytes(2, "big")
        expected = sum(int.from_bytes(pseudo[i : i + 2], "big") for i in range(0, 12, 2))
        got = ip.pseudo_header_sum(src, dst, 17, 1234)
        assert got % 0xFFFF == expected % 0xFFFF
        assert ip.pseudo_header_sum(src, dst, 17, 0) + 1234 == got

    def test_a_transport_without_a_network_layer_below_is_a_config_error(self) -> None:
        with pytest.raises(ConfigError, match="tcp: needs a network layer"):
            build_stack(config_from_dict({"layers": [{"type": "memory"}, {"type": "tcp"}]}, host=_no_shape_host()))


def _no_shape_host() -> PluginHost:
    """A host whose tcp layer type declares no ``requires`` (so only attach can object)."""
    from layers.tcp.handler import TcpSettings, _tcp

    def stack_register(registry: Registry) -> None:
        registry.add_layer("tcp", _tcp, TcpSettings)

    others = ["layers.link.handler", "layers.ipv4.handler"]
    return PluginHost(entry_points=False, builtin=others, extra=[_plugin("tcp", stack_register=stack_register)])


def test_add_feature_helper_records_the_plugin() -> None:
    registry = Registry()
    registry._current_plugin = "mine"
    add_feature(registry, "probe", MemorySettings, doc="a probe")
    assert features(registry)["probe"].plugin == "mine" and features(registry)["probe"].doc == "a probe"
