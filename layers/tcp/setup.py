"""The one connection-setup path: feature and algorithm resolution, the congestion controller,
and the ``tcp_connection_setup`` hook that lets plugins install their policies.

Three callers use it and nothing else builds a :class:`~layers.tcp.policy.TcpSetup`:

- the TCP layer, for every connection it opens or accepts (layers/tcp/layer.py);
- the trial setup that checks a configuration or an API call for plugins that clash
  (:func:`trial_setup`, from layers/tcp/settings.py and the layer);
- the plugin-author kit's sans-IO connections (``tcpstack.testing.sansio.make_setup``).

One pluggy call per connection, never per segment (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pluggy

from framework.errors import PluginError
from framework.plugins import PluginHost
from framework.registry import Registry
from layers.tcp.congestion import CongestionControl
from layers.tcp.extensions import congestion_controls
from layers.tcp.features import check_algorithm, resolve
from layers.tcp.policy import ConnInfo, TcpOptions, TcpSetup, decision_log

#: Where a trial connection pretends to be (its label is cut from error messages).
TRIAL_INFO = ConnInfo(local=(bytes(4), 0), remote=(bytes(4), 0), mss=536)


def resolve_overrides(
    registry: Registry, features: Mapping[str, Any] | None, congestion_control: str | None, problems: list[str]
) -> dict[str, Any]:
    """Validate a per-connection ``features`` table and algorithm name against what plugins
    registered; returns ``{name: settings, or None for off}`` and appends to *problems*."""
    resolved = resolve(registry, features, "features", problems)
    if congestion_control is not None:
        check_algorithm(registry, congestion_control, "congestion_control", problems)
    return resolved


def connection_setup(
    host: PluginHost | None,
    info: ConnInfo,
    options: TcpOptions,
    features: dict[str, Any],
    congestion_control: str | None,
    algorithm_settings: Mapping[str, Any],
    *,
    trial: bool = False,
    run_hook: bool = True,
    hook: Callable[[TcpSetup], None] | None = None,
    shared: dict[str, Any] | None = None,
) -> TcpSetup:
    """Build the :class:`TcpSetup` of one connection and run the ``tcp_connection_setup`` hook.

    *features* are resolved already (each enabled feature's settings object). The congestion
    controller is *congestion_control*'s, built with its settings from *algorithm_settings*;
    an algorithm no plugin registered falls back to RFC 5681's (``reno``); ``None`` leaves the
    slot empty, and the connection uses RFC 5681's. Plugin errors propagate.

    *run_hook* false skips the pluggy call: the TCP layer passes :func:`has_setup_hook`'s
    answer, decided once when the stack is assembled, so a stack whose plugins implement no
    ``tcp_connection_setup`` pays nothing for it per connection.

    *hook*, if given, runs the hook instead of the plugin manager's caller: the TCP layer
    passes its :class:`SetupHook`, which calls the implementations directly.

    *shared*: the TCP layer's table of stack-wide plugin objects (:attr:`TcpSetup.shared`)."""
    if shared is None:
        setup = TcpSetup(info=info, options=options, features=features, trial=trial)
    else:  # (passed in: no empty table made per connection)
        setup = TcpSetup(info=info, options=options, features=features, trial=trial, shared=shared)
    if congestion_control is not None:
        alg = congestion_controls(host.registry).get(congestion_control) if host is not None else None
        if alg is not None:
            setup.congestion = alg.factory(info.mss, algorithm_settings.get(congestion_control))
            setup.congestion_name = congestion_control
        else:
            setup.congestion = CongestionControl(info.mss)
        setup.congestion.log = decision_log(info.label, setup.congestion_name)
    if hook is not None:
        if run_hook:
            hook(setup)
    elif host is not None and run_hook:
        host.pm.hook.tcp_connection_setup(setup=setup)
    return setup


#: What a plugin manager runs hooks with when nothing monitors them (pluggy's ``_multicall``);
#: ``None`` if this pluggy does not say, and then :class:`SetupHook` always goes through pluggy.
_PLAIN_HOOKEXEC: Any = getattr(pluggy.PluginManager("tcpstack-probe"), "_inner_hookexec", None)


class SetupHook:
    """The ``tcp_connection_setup`` hook of one plugin host, run without pluggy's caller.

    pluggy's ``HookCaller`` (keyword collection, the result list, the wrapper machinery) cost
    about 26 µs per connection on top of what the plugins themselves do. When no implementation
    is a wrapper and each takes ``setup`` (or nothing), this calls the implementations' functions
    itself, in pluggy's order (its list of implementations from the end: last registered first,
    ``tryfirst``/``trylast`` respected). Exceptions propagate as they do through pluggy.

    The list is checked against the host's at every call (pluggy copies it; the comparison is
    by identity), so a plugin registered or unregistered later, by
    :meth:`~framework.plugins.PluginHost.register` or on the plugin manager directly, takes
    part from the next connection on. Wrappers, hook-call monitoring
    (``TCPSTACK_TRACE_PLUGINS``) or an implementation with other arguments go through pluggy.
    """

    __slots__ = ("_calls", "_host", "_impls")

    def __init__(self, host: PluginHost) -> None:
        self._host = host
        self._impls: list[Any] | None = None
        self._calls: list[tuple[Callable[..., Any], bool]] | None = None  # None: through pluggy

    def _plan(self, impls: list[Any]) -> None:
        self._impls = impls
        calls: list[tuple[Callable[..., Any], bool]] = []
        for impl in reversed(impls):
            if impl.hookwrapper or impl.wrapper or impl.kwargnames or impl.argnames not in (("setup",), ()):
                self._calls = None
                return
            calls.append((impl.function, bool(impl.argnames)))
        self._calls = calls

    def __call__(self, setup: TcpSetup) -> None:
        pm = self._host.pm
        caller = getattr(pm.hook, "tcp_connection_setup", None)
        if caller is None:
            return
        impls = caller.get_hookimpls()
        if impls != self._impls:
            self._plan(impls)
        calls = self._calls
        if calls is None or _PLAIN_HOOKEXEC is None or getattr(pm, "_inner_hookexec", None) is not _PLAIN_HOOKEXEC:
            caller(setup=setup)
            return
        for function, takes_setup in calls:
            if takes_setup:
                function(setup)
            else:
                function()


def has_setup_hook(host: PluginHost | None) -> bool:
    """Whether any registered plugin implements ``tcp_connection_setup`` (asked once, when the
    stack is assembled: plugins are registered before that)."""
    if host is None:
        return False
    caller = getattr(host.pm.hook, "tcp_connection_setup", None)
    return caller is not None and bool(caller.get_hookimpls())


def trial_setup(
    host: PluginHost,
    features: dict[str, Any],
    congestion_control: str | None,
    options: TcpOptions,
    algorithm_settings: Mapping[str, Any] | None = None,
) -> str | None:
    """Run the ``tcp_connection_setup`` hook once on a trial connection with *features*; the
    error a plugin raises (e.g. two features claiming one policy slot), or ``None``."""
    try:
        connection_setup(
            host, TRIAL_INFO, options, features, congestion_control or "reno", algorithm_settings or {}, trial=True
        )
    except PluginError as exc:
        message = str(exc).replace(f" on {TRIAL_INFO.label}", "")
        return f"{message} (turn one of them off where the other is on, e.g. features = {{ NAME = false }})"
    except Exception:
        # Not a verdict: a plugin may need state it only gets later (stack_configured reads its
        # [plugins.X] settings), so only the clashes PluginError reports count here.
        return None
    return None


__all__ = ["SetupHook", "connection_setup", "has_setup_hook", "resolve_overrides", "trial_setup"]
