"""Configuration: validation collects every problem with its key path; valid configs build stacks."""

from __future__ import annotations

import re
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.packet import Raw, raw

import tcpstack.config
from framework.errors import ConfigError
from framework.registry import Registry
from layers.ipv4.handler import Ipv4Layer
from layers.link.handler import MemorySettings, RawIpLink
from tcpstack.config import (
    DEFAULT_CONFIG,
    StackConfig,
    build_stack,
    config_from_dict,
    default_config_dict,
    load_config,
    read_toml,
)
from tcpstack.plugins import PluginHost, hookimpl
from tests.helpers import OWN, PEER

KNOWN_TYPES = "fault, ipv4, memory, pcap, seqshift, tcp, tun, udp"


def problems_of(data: Any, **kwargs: Any) -> list[str]:
    """The problems config_from_dict reports for *data* (fails the test if it accepts it)."""
    kwargs.setdefault("entry_points", False)
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, **kwargs)
    return info.value.problems


def memory_ipv4(**ipv4: Any) -> dict[str, Any]:
    return {"layers": [{"type": "memory"}, {"type": "ipv4", "address": f"{OWN}/24", **ipv4}]}


def echo_request() -> bytes:
    return raw(IP(src=PEER, dst=OWN) / ICMP(type=8, id=7, seq=1) / Raw(b"config"))


# ---------------------------------------------------------------------------------- all at once


def test_all_problems_reported_at_once() -> None:
    """Five independent mistakes give five problems in one ConfigError, each with its key path."""
    data = {
        "bogus": 1,
        "layers": [{"type": "tun", "mtu": 100}, {"type": "nope"}, {"type": "ipv4", "address": "10.0.0.300/24"}],
        "plugins": {"disable": ["nagel"]},
    }
    assert problems_of(data) == [
        "bogus: unknown top-level key (known: layers, plugins)",
        "plugins.disable: no plugin named 'nagel'",
        "layers[0].mtu: 100 is out of range [576, 65535]",
        f"layers[1].type: unknown layer type 'nope' (known: {KNOWN_TYPES})",
        "layers[2].address: '10.0.0.300/24' is not an IPv4 address with prefix, like '10.0.0.2/24'",
    ]


def test_problems_in_several_layers_and_keys() -> None:
    """Several bad keys inside one layer and across layers are all reported."""
    data = {"layers": [{"type": "memory", "mtuu": 1500}, {"type": "ipv4", "ttl": 0, "echo_reply": "yes"}]}
    assert problems_of(data) == [
        "layers[0].mtuu: unknown key (did you mean 'mtu'?)",
        "layers[1].ttl: 0 is out of range [1, 255]",
        "layers[1].echo_reply: expected boolean, got 'yes'",
    ]


# ---------------------------------------------------------------------------------- top level


def test_not_a_table() -> None:
    """A configuration that is not a table is rejected as such."""
    assert problems_of([1, 2]) == ["configuration: expected a table, got list"]


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (None, "layers: missing; list the layers bottom to top as [[layers]] tables"),
        ([], "layers: expected a non-empty array of tables ([[layers]])"),
        ({"type": "memory"}, "layers: expected a non-empty array of tables ([[layers]])"),
        ("memory", "layers: expected a non-empty array of tables ([[layers]])"),
    ],
)
def test_layers_missing_empty_or_not_a_list(layers: Any, expected: str) -> None:
    """layers must be present and a non-empty array of tables."""
    data = {} if layers is None else {"layers": layers}
    assert problems_of(data) == [expected]


def test_layer_not_a_table() -> None:
    """An entry of layers that is not a table is reported at its index."""
    assert problems_of({"layers": [{"type": "memory"}, 5]}) == ["layers[1]: expected a table"]


@pytest.mark.parametrize("layer", [{"mtu": 1500}, {"type": 3}])
def test_layer_without_type(layer: dict[str, Any]) -> None:
    """A layer without a string type is reported with the known types."""
    assert problems_of({"layers": [layer]}) == [f"layers[0].type: required, one of: {KNOWN_TYPES}"]


def test_unknown_layer_type() -> None:
    """An unknown layer type is reported with the known types."""
    assert problems_of({"layers": [{"type": "memory"}, {"type": "ipv6"}]}) == [
        f"layers[1].type: unknown layer type 'ipv6' (known: {KNOWN_TYPES})"
    ]


def test_duplicate_layer_type() -> None:
    """Each layer type may appear once."""
    data = {"layers": [{"type": "memory"}, {"type": "ipv4"}, {"type": "ipv4", "ttl": 3}]}
    assert problems_of(data) == ["layers: more than one layer of type 'ipv4'"]


# ---------------------------------------------------------------------------------- plugins table


def test_plugins_not_a_table() -> None:
    """plugins must be a table."""
    assert problems_of({**memory_ipv4(), "plugins": ["x"]}) == ["plugins: expected a table"]


@pytest.mark.parametrize("disable", ["layers.middleware.fault", [1], {"a": 1}])
def test_plugins_disable_not_a_list_of_strings(disable: Any) -> None:
    """plugins.disable must be a list of strings."""
    assert problems_of({**memory_ipv4(), "plugins": {"disable": disable}}) == [
        f"plugins.disable: expected a list of strings, got {disable!r}"
    ]


def test_plugins_disable_unknown_name() -> None:
    """A disabled name that matches no plugin is a problem naming it."""
    assert problems_of({**memory_ipv4(), "plugins": {"disable": ["layers.middleware.fault", "nagel"]}}) == [
        "plugins.disable: no plugin named 'nagel'"
    ]


def test_plugins_unknown_settings_table() -> None:
    """A [plugins.<name>] table that no plugin takes is reported at its key path."""
    assert problems_of({**memory_ipv4(), "plugins": {"nagle": {"delay": 1}}}) == [
        "plugins.nagle: no plugin takes settings under this name"
    ]


@dataclass(slots=True)
class GreeterSettings:
    greeting: str = "hello"
    """What to say."""

    times: int = field(default=1, metadata={"min": 1, "max": 3})
    """How often."""


class Greeter:
    """A third-party plugin with settings under [plugins.greeter]."""

    @hookimpl
    def stack_register(self, registry: Registry) -> None:
        registry.add_settings("greeter", GreeterSettings)


def test_plugin_settings_validated_and_available() -> None:
    """Plugin settings are validated under plugins.<name> and reachable from the stack's config."""
    host = PluginHost(entry_points=False, extra=[Greeter()])
    data = {**memory_ipv4(), "plugins": {"greeter": {"greeting": "hi", "times": 2}}}
    stack = build_stack(config_from_dict(data, host=host))
    assert stack.config is not None
    assert stack.config.plugin_settings("greeter") == GreeterSettings("hi", 2)
    defaults = config_from_dict(memory_ipv4(), host=host)
    assert defaults.plugin_settings("greeter") == GreeterSettings()
    assert defaults.plugin_settings("nobody") is None


def test_plugin_settings_problems_have_key_paths() -> None:
    """Bad plugin settings are reported under plugins.<name>.<key>."""
    host = PluginHost(entry_points=False, extra=[Greeter()])
    data = {**memory_ipv4(), "plugins": {"greeter": {"greting": "hi", "times": 9}}}
    assert problems_of(data, host=host) == [
        "plugins.greeter.greting: unknown key (did you mean 'greeting'?)",
        "plugins.greeter.times: 9 is out of range [1, 3]",
    ]
    assert problems_of({**memory_ipv4(), "plugins": {"greeter": 5}}, host=host) == [
        "plugins.greeter: expected a table, got int"
    ]


# ---------------------------------------------------------------------------------- files


def test_unreadable_file(tmp_path: Path) -> None:
    """A file that cannot be read is a ConfigError naming the path and the reason."""
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, entry_points=False)
    assert info.value.problems == [f"{missing}: cannot read: No such file or directory"]
    with pytest.raises(ConfigError) as info:
        read_toml(tmp_path)  # a directory
    assert info.value.problems == [f"{tmp_path}: cannot read: Is a directory"]


def test_invalid_toml(tmp_path: Path) -> None:
    """Malformed TOML is a ConfigError naming the path and the parser's message."""
    path = tmp_path / "bad.toml"
    path.write_text("[[layers]\ntype = memory\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, entry_points=False)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: invalid TOML: ")
    assert "line 1" in problem


def test_file_problems_have_key_paths(tmp_path: Path) -> None:
    """Problems in a file are reported with the same key paths as for plain data."""
    path = tmp_path / "stack.toml"
    path.write_text('[[layers]]\ntype = "memory"\n\n[[layers]]\ntype = "ipv4"\nadress = "10.0.0.2/24"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, entry_points=False)
    assert info.value.problems == ["layers[1].adress: unknown key (did you mean 'address'?)"]


def test_toml_file_round_trip(tmp_path: Path) -> None:
    """A TOML file loads, builds a stack, and that stack answers an ICMP echo request."""
    path = tmp_path / "stack.toml"
    path.write_text(
        "[[layers]]\n"
        'type = "memory"\n'
        "mtu = 1400\n"
        "\n"
        "[[layers]]\n"
        'type = "ipv4"\n'
        f'address = "{OWN}/24"\n'
        "ident_seed = 0\n"
        "\n"
        "[plugins]\n"
        'disable = ["layers.middleware.fault"]\n'
    )
    config = load_config(path, entry_points=False)
    assert [(layer.type, layer.name) for layer in config.layers] == [("memory", "memory"), ("ipv4", "ipv4")]
    assert config.disable == ["layers.middleware.fault"]
    stack = build_stack(config)
    assert stack.layer("memory").mtu == 1400  # type: ignore[attr-defined]
    stack.receive_frame(echo_request(), now=0.0)
    (frame,) = stack.frames_to_send(now=0.0)
    reply = IP(frame)
    assert (reply.src, reply.dst, reply[ICMP].type, reply[ICMP].id) == (OWN, PEER, 0, 7)
    assert bytes(reply[ICMP].payload) == b"config"


# ---------------------------------------------------------------------------------- build_stack


def test_ipv4_mtu_above_link_mtu() -> None:
    """An ipv4.mtu larger than the link's MTU is found by validation (before anything is built),
    naming both."""
    with pytest.raises(ConfigError) as info:
        config_from_dict(memory_ipv4(mtu=1600), entry_points=False)
    assert info.value.problems == ["layers[1].mtu: 1600 exceeds the MTU 1500 of the memory layer below"]


def test_ipv4_without_link_below() -> None:
    """An ipv4 layer with no link below it is a validation error naming the layer."""
    with pytest.raises(ConfigError) as info:
        config_from_dict({"layers": [{"type": "ipv4", "mtu": 1500}]}, entry_points=False)
    assert info.value.problems == ["layers[0] (ipv4): needs a link layer below it"]


class Fussy:
    """A plugin whose layer factories refuse their settings at build time."""

    @hookimpl
    def stack_register(self, registry: Registry) -> None:
        def bad_value(name: str, settings: MemorySettings) -> RawIpLink:
            raise ValueError("cannot open the widget")

        def bad_config(name: str, settings: MemorySettings) -> RawIpLink:
            raise ConfigError(["mtu: the widget wants 1280", "other: and more"])

        registry.add_layer("widget", bad_value, MemorySettings, provides=("link",), bottom=True)
        registry.add_layer("gadget", bad_config, MemorySettings)


def test_factory_errors_are_reported_with_layer_paths() -> None:
    """ValueError and ConfigError from layer factories are all reported, prefixed with layers[i]."""
    host = PluginHost(entry_points=False, extra=[Fussy()])
    config = config_from_dict({"layers": [{"type": "widget"}, {"type": "gadget"}, {"type": "ipv4"}]}, host=host)
    with pytest.raises(ConfigError) as info:
        build_stack(config)
    assert info.value.problems == [
        "layers[0]: cannot open the widget",
        "layers[1]: mtu: the widget wants 1280",
        "layers[1]: other: and more",
    ]


# ---------------------------------------------------------------------------------- defaults


def test_default_config_validates_and_builds() -> None:
    """DEFAULT_CONFIG is valid and builds a tun + ipv4 stack (building opens no device)."""
    config = config_from_dict(default_config_dict(), entry_points=False)
    assert isinstance(config, StackConfig)
    assert [layer.type for layer in config.layers] == ["tun", "ipv4", "tcp"]
    tun = config.layer("tun")
    assert tun is not None and tun.settings.device == "tun0" and tun.settings.create is False
    assert config.layer("pcap") is None
    stack = build_stack(config)
    assert isinstance(stack.layer("ipv4"), Ipv4Layer)
    assert stack.layer("ipv4").mtu == 1500  # type: ignore[attr-defined]
    assert stack.config is config


def test_default_config_dict_is_a_copy() -> None:
    """default_config_dict returns a deep copy: changing it leaves DEFAULT_CONFIG alone."""
    data = default_config_dict()
    data["layers"][0]["device"] = "tun9"
    data["plugins"]["disable"].append("x")
    assert DEFAULT_CONFIG["layers"][0]["device"] == "tun0"
    assert DEFAULT_CONFIG["plugins"]["disable"] == []


def test_module_docstring_example_is_valid() -> None:
    """The TOML example in tcpstack.config's docstring validates as written."""
    doc = tcpstack.config.__doc__ or ""
    block = re.search(r"\.\. code-block:: toml\n\n(.*?)\n\n(?=\S)", doc, re.S)
    assert block is not None
    data = tomllib.loads(textwrap.dedent(block.group(1)))
    config = config_from_dict(data, entry_points=False)
    assert [layer.type for layer in config.layers] == ["tun", "pcap", "ipv4"]
