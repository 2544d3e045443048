"""Hook specifications for tcpstack plugins.

Hooks fire when a stack is *assembled* and at rare events, never per packet: a pluggy call costs
about 1-2 µs, a plain method call about 30 ns (docs/architecture.md). Per-packet behaviour lives
in the plain objects these hooks register or install.

Every hook here has a section in ``docs/hooks.md``; ``tests/framework/test_hooks_documented.py``
fails otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from framework.registry import Registry
    from framework.stack import Stack
    from layers.tcp.policy import TcpSetup

PROJECT = "tcpstack"
hookspec = pluggy.HookspecMarker(PROJECT)


# -------------------------------------------------------------------- assembly hooks


@hookspec
def stack_register(registry: Registry) -> None:
    """Register what configuration can name: layer types, per-connection features,
    congestion-control algorithms and plugin settings.

    :param registry: call ``registry.add_layer(type_name, factory, settings_cls, doc=...)``
        for each layer or middleware type, ``registry.add_feature(name, settings_cls)`` for a
        per-connection TCP feature, ``registry.add_congestion_control(name, factory)`` for an
        algorithm, and ``registry.add_settings(plugin_name, settings_cls)`` for settings under
        ``[plugins.<plugin_name>]``. Names must be unique across all plugins; a clash is a
        :class:`~framework.errors.PluginError`.

    Called once per :class:`~framework.plugins.PluginHost`, before any configuration is
    validated.
    """


@hookspec(historic=True)
def stack_configured(stack: Stack) -> None:
    """The stack is assembled and about to receive its first frame.

    :param stack: the assembled stack; ``stack.config`` holds the validated configuration
        (``stack.config.plugin_settings(name)`` returns a plugin's settings object).

    Historic: a plugin registered after assembly is called at once on registration. Do not
    feed the stack frames from here.
    """


@hookspec
def stack_closed(stack: Stack) -> None:
    """The stack is shutting down (the driver stopped). Flush and release what you hold.

    :param stack: the stack being closed; it will receive no more frames.
    """


# -------------------------------------------------------------------- connection hooks


@hookspec
def tcp_connection_setup(setup: TcpSetup) -> None:
    """Install per-connection policies before the connection's first segment is built.

    :param setup: ``setup.features`` maps each feature enabled on this connection to its
        validated settings object (stack defaults merged with listener and connection
        overrides). Install plain policy objects: assign ``setup.ack_policy``,
        ``setup.send_policy`` or ``setup.congestion``, or append to ``setup.extensions``.
        Call ``setup.claim(slot, by=NAME)`` first so two plugins cannot silently fight over
        one slot (a second claimant raises :class:`~framework.errors.PluginError`).

    Called once for every active open and for every SYN a listener accepts. Never per
    segment: the objects installed here are what the segment path calls. Also called on a
    *trial* setup (``setup.trial`` true, port 0 on both ends) when a configuration is checked
    and when an API call names features or an algorithm, so that clashing plugins
    (``PluginError``) are reported before any connection exists; keep no state for a trial.
    """
