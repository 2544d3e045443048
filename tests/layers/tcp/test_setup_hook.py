"""The ``tcp_connection_setup`` hook run without pluggy's caller (layers/tcp/setup.SetupHook).

The TCP layer calls the implementations' functions itself, in pluggy's order; it re-reads the
host's list at every connection, so a plugin registered (or unregistered) after a listener
opened is honoured at the next SYN; wrappers and hook-call monitoring go through pluggy.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest

from framework.plugins import hookimpl
from layers.tcp.features import defaults
from layers.tcp.policy import ConnInfo, TcpOptions, TcpSetup
from layers.tcp.setup import SetupHook, connection_setup
from tcpstack.plugins import PluginHost
from tests.layers.tcp.helpers import LOCAL_PORT, LayerHarness

_NO_POLICIES = ("layers.link.handler", "layers.ipv4.handler", "layers.tcp.handler")
INFO = ConnInfo(local=(bytes(4), 1), remote=(bytes(4), 2), mss=536)


class Named:
    """Appends its name to ``setup.claims['order']`` (a string, one letter per call)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    @hookimpl
    def tcp_connection_setup(self, setup: TcpSetup) -> None:
        self.calls += 1
        setup.claims["order"] = setup.claims.get("order", "") + self.name


class First(Named):
    @hookimpl(tryfirst=True)
    def tcp_connection_setup(self, setup: TcpSetup) -> None:
        super().tcp_connection_setup(setup)


class Last(Named):
    @hookimpl(trylast=True)
    def tcp_connection_setup(self, setup: TcpSetup) -> None:
        super().tcp_connection_setup(setup)


class NoArgs:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def tcp_connection_setup(self) -> None:
        self.calls += 1


class Claims:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def tcp_connection_setup(self, setup: TcpSetup) -> None:
        self.calls += 1
        setup.claim("marker", by="test")


@pytest.fixture
def pluggy_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every call of a TCP hook that goes through a pluggy HookCaller (pytest's own are left out)."""
    host = PluginHost(builtin=_NO_POLICIES, entry_points=False)
    caller_type = type(host.pm.hook.tcp_connection_setup)
    original = caller_type.__call__
    calls: list[str] = []

    def recording(self: Any, **kwargs: Any) -> Any:
        if self.name.startswith("tcp_"):
            calls.append(self.name)
        return original(self, **kwargs)

    monkeypatch.setattr(caller_type, "__call__", recording)
    yield calls


def _setup() -> TcpSetup:
    return TcpSetup(info=INFO, options=TcpOptions())


def test_direct_calls_in_pluggys_order_without_pluggy(pluggy_calls: list[str]) -> None:
    plugins = [Named("a"), First("F"), Named("b"), Last("L"), Named("c"), NoArgs()]
    host = PluginHost(builtin=_NO_POLICIES, entry_points=False, extra=plugins)
    through_pluggy = _setup()
    host.pm.hook.tcp_connection_setup(setup=through_pluggy)
    assert pluggy_calls == ["tcp_connection_setup"]
    direct = _setup()
    SetupHook(host)(direct)
    assert pluggy_calls == ["tcp_connection_setup"]  # no second call through pluggy
    assert direct.claims["order"] == through_pluggy.claims["order"] == "FcbaL"  # tryfirst, last registered first
    assert plugins[-1].calls == 2  # NoArgs, called without arguments


def test_no_implementation_no_call(pluggy_calls: list[str]) -> None:
    host = PluginHost(builtin=_NO_POLICIES, entry_points=False)
    setup = connection_setup(host, INFO, TcpOptions(), {}, None, {}, hook=SetupHook(host))
    assert pluggy_calls == [] and setup.claims == {}


def test_registered_after_the_listener_opened_is_honoured(pluggy_calls: list[str]) -> None:
    """A plugin registered while a listener is open takes part from the next SYN on; once
    unregistered, it no longer does."""
    h = LayerHarness(initial_sequence=1000)
    assert h.tcp.host is not None
    pluggy_calls.clear()  # the configuration check's trial setup (through pluggy, once)
    h.tcp.listen(LOCAL_PORT, backlog=64)
    before, _ = h.handshake(remote_port=40000, irs=1000)
    plugin = Claims()
    h.tcp.host.register(plugin)
    after, _ = h.handshake(remote_port=40001, irs=2000)
    assert plugin.calls == 1
    assert "marker" in after.setup.claims and "marker" not in before.setup.claims
    h.tcp.host.pm.unregister(plugin)  # on the plugin manager itself, behind the host's back
    later, _ = h.handshake(remote_port=40002, irs=3000)
    assert plugin.calls == 1 and "marker" not in later.setup.claims
    assert pluggy_calls == []  # all three through the direct calls


def test_the_built_in_plugins_give_the_same_connection_either_way(pluggy_calls: list[str]) -> None:
    host = PluginHost(entry_points=False)  # every built-in plugin
    features = defaults(host.registry, [])
    assert "sack" in features and "timestamps" in features
    via_pluggy = connection_setup(host, INFO, TcpOptions(), dict(features), "reno", {})
    direct = connection_setup(host, INFO, TcpOptions(), dict(features), "reno", {}, hook=SetupHook(host))
    assert pluggy_calls == ["tcp_connection_setup"]
    assert direct.claims == via_pluggy.claims
    assert [type(e) for e in direct.extensions] == [type(e) for e in via_pluggy.extensions]
    assert type(direct.ack_policy) is type(via_pluggy.ack_policy)
    assert type(direct.send_policy) is type(via_pluggy.send_policy)


def test_an_exception_propagates_as_through_pluggy() -> None:
    class Fails:
        @hookimpl
        def tcp_connection_setup(self, setup: TcpSetup) -> None:
            raise ValueError("no room")

    host = PluginHost(builtin=_NO_POLICIES, entry_points=False, extra=[Fails()])
    with pytest.raises(ValueError, match="no room"):
        SetupHook(host)(_setup())


def test_a_wrapper_goes_through_pluggy(pluggy_calls: list[str]) -> None:
    seen: list[str] = []

    class Wraps:
        @hookimpl(wrapper=True)
        def tcp_connection_setup(self, setup: TcpSetup) -> Generator[None, None, None]:
            seen.append("before")
            yield
            seen.append("after")

    named = Named("n")
    host = PluginHost(builtin=_NO_POLICIES, entry_points=False, extra=[named, Wraps()])
    setup = _setup()
    SetupHook(host)(setup)
    assert pluggy_calls == ["tcp_connection_setup"] and seen == ["before", "after"]
    assert setup.claims["order"] == "n"


def test_hook_call_monitoring_goes_through_pluggy() -> None:
    """TCPSTACK_TRACE_PLUGINS (pluggy's monitoring) still sees every setup call."""
    named = Named("n")
    host = PluginHost(builtin=_NO_POLICIES, entry_points=False, extra=[named])
    hook = SetupHook(host)
    hook(_setup())  # planned without monitoring
    traced: list[str] = []
    undo = host.pm.add_hookcall_monitoring(lambda name, impls, kw: traced.append(name), lambda *a: None)
    hook(_setup())
    assert traced == ["tcp_connection_setup"] and named.calls == 2
    undo()
    hook(_setup())
    assert traced == ["tcp_connection_setup"] and named.calls == 3
