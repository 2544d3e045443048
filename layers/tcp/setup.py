"""The one connection-setup path: feature and algorithm resolution, the congestion controller,
and the ``tcp_connection_setup`` hook that lets plugins install their policies.

Three callers use it and nothing else builds a :class:`~layers.tcp.policy.TcpSetup`:

- the TCP layer, for every connection it opens or accepts (layers/tcp/handler.py);
- the trial setup that checks a configuration or an API call for plugins that clash
  (:func:`trial_setup`, from layers/tcp/settings.py and the layer);
- the plugin-author kit's sans-IO connections (``tcpstack.testing.sansio.make_setup``).

One pluggy call per connection, never per segment (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
) -> TcpSetup:
    """Build the :class:`TcpSetup` of one connection and run the ``tcp_connection_setup`` hook.

    *features* are resolved already (each enabled feature's settings object). The congestion
    controller is *congestion_control*'s, built with its settings from *algorithm_settings*;
    an algorithm no plugin registered falls back to RFC 5681's (``reno``); ``None`` leaves the
    slot empty, and the connection uses RFC 5681's. Plugin errors propagate.

    *run_hook* false skips the pluggy call: the TCP layer passes :func:`has_setup_hook`'s
    answer, decided once when the stack is assembled, so a stack whose plugins implement no
    ``tcp_connection_setup`` pays nothing for it per connection."""
    setup = TcpSetup(info=info, options=options, features=features, trial=trial)
    if congestion_control is not None:
        alg = congestion_controls(host.registry).get(congestion_control) if host is not None else None
        if alg is not None:
            setup.congestion = alg.factory(info.mss, algorithm_settings.get(congestion_control))
            setup.congestion_name = congestion_control
        else:
            setup.congestion = CongestionControl(info.mss)
        setup.congestion.log = decision_log(info.label, setup.congestion_name)
    if host is not None and run_hook:
        host.pm.hook.tcp_connection_setup(setup=setup)
    return setup


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


__all__ = ["connection_setup", "has_setup_hook", "resolve_overrides", "trial_setup"]
