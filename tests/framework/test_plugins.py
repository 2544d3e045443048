"""The plugin host: built-ins by module name, blocking, third-party plugins, hooks, entry points."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import textwrap
from pathlib import Path
from typing import Any

import pluggy
import pytest

import layers.ipv4.handler
import layers.link.handler
from framework.errors import ConfigError, PluginError
from framework.registry import Registry
from framework.stack import Stack
from layers.link.handler import MemorySettings, RawIpLink
from tcpstack.config import build_stack, config_from_dict
from tcpstack.plugins import BUILTIN_PLUGINS, PROJECT, PluginHost, hookimpl

MEMORY_IPV4 = {"layers": [{"type": "memory"}, {"type": "ipv4"}]}


class Loopish(RawIpLink):
    """The layer a third-party plugin adds in these tests."""


def _loopish(name: str, settings: MemorySettings) -> Loopish:
    return Loopish(name, settings.mtu, settings)


class ThirdParty:
    """A third-party plugin adding the layer type "loopish"."""

    @hookimpl
    def stack_register(self, registry: Registry) -> None:
        registry.add_layer("loopish", _loopish, MemorySettings, doc="a test link", provides=("link",), bottom=True)


class Clasher:
    """A plugin registering a layer type that a built-in already registers."""

    @hookimpl
    def stack_register(self, registry: Registry) -> None:
        registry.add_layer("memory", _loopish, MemorySettings)


class Typo:
    """A plugin whose hookimpl name matches no hook."""

    @hookimpl
    def stack_regster(self, registry: Registry) -> None:
        raise AssertionError("never called")


class WrongArgument:
    """A plugin whose hookimpl asks for an argument the hook does not have."""

    @hookimpl
    def stack_register(self, reg: Registry) -> None:
        raise AssertionError("never called")


class Recorder:
    """Records the stacks the lifecycle hooks are called with."""

    def __init__(self) -> None:
        self.configured: list[Stack] = []
        self.closed: list[Stack] = []

    @hookimpl
    def stack_configured(self, stack: Stack) -> None:
        self.configured.append(stack)

    @hookimpl
    def stack_closed(self, stack: Stack) -> None:
        self.closed.append(stack)


def test_builtins_registered_under_module_names() -> None:
    """Each built-in plugin is its module, registered under the module's name."""
    host = PluginHost(entry_points=False)
    assert host.plugin_names() == sorted(BUILTIN_PLUGINS)
    for name in BUILTIN_PLUGINS:
        assert host.pm.get_plugin(name) is importlib.import_module(name)
    assert host.pm.get_plugin("layers.link.handler") is layers.link.handler


def test_builtin_layer_types_name_their_plugin() -> None:
    """Every built-in layer type is registered through the hook by its own module."""
    layers_ = PluginHost(entry_points=False).registry.layers
    assert {name: lt.plugin for name, lt in layers_.items()} == {
        "tun": "layers.link.handler",
        "memory": "layers.link.handler",
        "pcap": "layers.middleware.pcap",
        "fault": "layers.middleware.fault",
        "ipv4": "layers.ipv4.handler",
        "seqshift": "layers.middleware.seqshift",
        "tcp": "layers.tcp.handler",
        "udp": "layers.udp.handler",
    }
    assert all(lt.doc for lt in layers_.values())


def test_disabling_a_builtin_removes_its_layer_type() -> None:
    """A disabled built-in is not registered and its layer type is unknown to configuration."""
    host = PluginHost(entry_points=False, disabled=["layers.middleware.pcap"])
    assert "layers.middleware.pcap" not in host.plugin_names()
    assert "pcap" not in host.registry.layers
    data = {
        "layers": [{"type": "memory"}, {"type": "pcap", "path": "x.pcap"}, {"type": "ipv4"}],
        "plugins": {"disable": ["layers.middleware.pcap"]},
    }
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, entry_points=False)
    assert info.value.problems == [
        "layers[1].type: unknown layer type 'pcap' (known: fault, ipv4, memory, seqshift, tcp, tun, udp)"
    ]


def test_disabling_unknown_name_is_config_error() -> None:
    """Disabling a name that matches no plugin is a ConfigError naming it, with what was probably meant:
    a close name, or for a built-in's short name its module name and the feature switch."""
    with pytest.raises(ConfigError) as info:
        PluginHost(entry_points=False, disabled=["layers.middleware.fault", "plugins.nagel", "nope", "nagle"])
    assert info.value.problems == [
        "plugins.disable: no plugin named 'plugins.nagel' (did you mean 'plugins.nagle'?)",
        "plugins.disable: no plugin named 'nope'",
        "plugins.disable: no plugin named 'nagle' (built-in plugins are named by module: 'plugins.nagle'; to turn"
        " the feature off for connections instead, set features = { nagle = false } in the tcp layer)",
    ]


def test_third_party_plugin_via_extra() -> None:
    """A plugin object passed as extra adds a layer type that configuration can use."""
    host = PluginHost(entry_points=False, extra=[ThirdParty()])
    assert host.registry.layers["loopish"].doc == "a test link"
    config = config_from_dict({"layers": [{"type": "loopish", "mtu": 1280}, {"type": "ipv4"}]}, host=host)
    stack = build_stack(config)
    assert isinstance(stack.layer("loopish"), Loopish)
    assert stack.layer("ipv4").mtu == 1280  # type: ignore[attr-defined]


def test_third_party_plugin_via_register() -> None:
    """A plugin registered on an existing host makes its layer type usable from configuration."""
    host = PluginHost(entry_points=False)
    assert "loopish" not in host.registry.layers
    host.register(ThirdParty(), name="thirdparty")
    assert host.registry.layers["loopish"].plugin == "thirdparty"
    assert "thirdparty" in host.plugin_names()
    stack = build_stack(config_from_dict({"layers": [{"type": "loopish"}, {"type": "ipv4"}]}, host=host))
    assert isinstance(stack.layer("loopish"), Loopish)


def test_same_layer_type_twice_names_both_plugins() -> None:
    """Two plugins registering one layer type is a PluginError naming both."""
    host = PluginHost(entry_points=False)
    with pytest.raises(PluginError, match=r"layer type 'memory' registered twice \(.*\)") as info:
        host.register(Clasher(), name="clasher")
    assert "clasher" in str(info.value)
    assert "layers.link.handler" in str(info.value)

    with pytest.raises(PluginError) as info:
        PluginHost(entry_points=False, extra=[ThirdParty(), Clasher()])
    assert f"{__name__}.Clasher" in str(info.value)  # an unnamed object is named by its class

    host = PluginHost(entry_points=False, extra=[ThirdParty()])
    with pytest.raises(PluginError) as info:
        host.register(ThirdParty(), name="two")
    message = str(info.value)
    assert message.startswith("layer type 'loopish' registered twice (")
    assert "two" in message and f"{__name__}.ThirdParty" in message


def test_failed_registration_leaves_host_usable() -> None:
    """A plugin that fails to register is removed again, so later registrations still work."""
    host = PluginHost(entry_points=False)
    with pytest.raises(PluginError):
        host.register(Clasher(), name="clasher")
    with pytest.raises(pluggy.PluginValidationError):
        host.register(Typo(), name="typo")
    with pytest.raises(pluggy.PluginValidationError):
        host.register(WrongArgument(), name="wrong")
    assert host.plugin_names() == sorted(BUILTIN_PLUGINS)
    host.register(ThirdParty(), name="thirdparty")
    assert host.registry.layers["memory"].plugin == "layers.link.handler"
    assert "loopish" in host.registry.layers


def test_hookimpl_without_spec_rejected_at_registration() -> None:
    """A hookimpl whose name matches no hook fails at registration, not silently."""
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'stack_regster'"):
        PluginHost(entry_points=False, extra=[Typo()])
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'stack_regster'"):
        PluginHost(entry_points=False).register(Typo())


def test_hookimpl_with_wrong_argument_rejected() -> None:
    """A hookimpl asking for an argument the hook does not pass fails at registration."""
    with pytest.raises(pluggy.PluginValidationError, match="reg"):
        PluginHost(entry_points=False).register(WrongArgument())


def test_stack_configured_is_called_at_build_time() -> None:
    """stack_configured is called once with the stack that build_stack returns."""
    recorder = Recorder()
    host = PluginHost(entry_points=False, extra=[recorder])
    stack = build_stack(config_from_dict(MEMORY_IPV4, host=host))
    assert recorder.configured == [stack]
    assert recorder.closed == []


def test_stack_configured_is_historic() -> None:
    """A plugin registered after the stack was built is called at once with that stack."""
    host = PluginHost(entry_points=False)
    stack = build_stack(config_from_dict(MEMORY_IPV4, host=host))
    late = Recorder()
    host.register(late)
    assert late.configured == [stack]


def test_stack_closed_reaches_plugins() -> None:
    """host.stack_closed calls every plugin's stack_closed with the stack."""
    recorder = Recorder()
    host = PluginHost(entry_points=False, extra=[recorder])
    stack = build_stack(config_from_dict(MEMORY_IPV4, host=host))
    host.stack_closed(stack)
    assert recorder.closed == [stack]


def test_trace_plugins_logs_hook_calls(monkeypatch: pytest.MonkeyPatch, log_output) -> None:
    """With TCPSTACK_TRACE_PLUGINS set, every hook call is logged with the plugins it reaches."""
    monkeypatch.setenv("TCPSTACK_TRACE_PLUGINS", "1")
    recorder = Recorder()
    host = PluginHost(entry_points=False, extra=[recorder])
    stack = build_stack(config_from_dict(MEMORY_IPV4, host=host))
    host.stack_closed(stack)
    calls = [e for e in log_output.entries if e["event"] == "plugin.hook_call"]
    assert any(e["hook"] == "stack_closed" and "layers.middleware.pcap" in e["impls"] for e in calls)
    assert {"event": "plugin.hook_done", "hook": "stack_closed", "log_level": "debug"} in log_output.entries


# ---------------------------------------------------------------------------------- entry points


class FakeDistribution(importlib.metadata.Distribution):
    """An installed distribution that exists only in memory."""

    def __init__(self, files: dict[str, str], root: Path) -> None:
        self._files = files
        self._root = root

    def read_text(self, filename: str) -> str | None:
        return self._files.get(filename)

    def locate_file(self, path: Any) -> Path:
        return self._root / str(path)


@pytest.fixture
def fake_entry_point(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Install (in memory) a distribution "tcpstack-loopish" with a "tcpstack" entry point "loopish"."""
    module = "tcpstack_loopish_plugin"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            f"""
            from tcpstack.plugins import hookimpl
            from layers.link.handler import MemorySettings
            from {__name__} import _loopish

            @hookimpl
            def stack_register(registry):
                registry.add_layer(
                    "loopish", _loopish, MemorySettings, doc="from an entry point", provides=("link",)
                )
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    dist = FakeDistribution(
        {
            "METADATA": "Metadata-Version: 2.1\nName: tcpstack-loopish\nVersion: 1.0\n",
            "entry_points.txt": f"[{PROJECT}]\nloopish = {module}\n\n[other.group]\nnot_ours = nowhere.at.all\n",
        },
        tmp_path,
    )
    monkeypatch.setattr(importlib.metadata, "distributions", lambda **kw: [dist])
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: dist.entry_points.select(**kw))
    return module


def test_entry_point_plugin_is_loaded(fake_entry_point: str) -> None:
    """A plugin in the "tcpstack" entry-point group is loaded under its entry-point name."""
    host = PluginHost()
    assert "loopish" in host.plugin_names()
    assert host.pm.get_plugin("loopish") is sys.modules[fake_entry_point]
    assert host.registry.layers["loopish"].plugin == "loopish"
    assert [dist.project_name for _, dist in host.pm.list_plugin_distinfo()] == ["tcpstack-loopish"]
    stack = build_stack(config_from_dict({"layers": [{"type": "loopish"}, {"type": "ipv4"}]}))
    assert isinstance(stack.layer("loopish"), Loopish)


def test_entry_point_plugin_can_be_disabled(fake_entry_point: str) -> None:
    """An entry-point plugin is blocked by its entry-point name and is then not loaded."""
    host = PluginHost(disabled=["loopish"])
    assert "loopish" not in host.plugin_names()
    assert "loopish" not in host.registry.layers


def test_entry_points_off_ignores_installed_plugins(fake_entry_point: str) -> None:
    """entry_points=False (what tests use) loads nothing from the entry-point group."""
    host = PluginHost(entry_points=False)
    assert host.plugin_names() == sorted(BUILTIN_PLUGINS)
    with pytest.raises(ConfigError):
        PluginHost(entry_points=False, disabled=["loopish"])


def test_builtin_modules_are_plugins() -> None:
    """The built-in modules expose their hookimpls as module-level functions."""
    for mod in (layers.link.handler, layers.ipv4.handler):
        assert hasattr(mod.stack_register, f"{PROJECT}_impl")
