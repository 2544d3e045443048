"""Hook specifications of the stack as a whole (layers declare their own, see below).

Hooks fire when a stack is *assembled* and at rare events, never per packet: a pluggy call costs
about 1-2 µs, a plain method call about 30 ns (docs/architecture.md). Per-packet behaviour lives
in the plain objects these hooks register or install.

A layer's own hooks (per connection, say) live in a hookspec module of the layer's package,
added through :func:`stack_addhooks`. Every hook of every module a
:class:`~framework.plugins.PluginHost` knows has a section in ``docs/hooks.md``;
``tests/framework/test_hooks_documented.py`` fails otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from framework.plugins import PluginHost
    from framework.registry import Registry
    from framework.stack import Stack

PROJECT = "tcpstack"
hookspec = pluggy.HookspecMarker(PROJECT)


# -------------------------------------------------------------------- assembly hooks


@hookspec(historic=True)
def stack_addhooks(host: PluginHost) -> None:
    """Add hook specifications: a layer declares the hooks it calls (pytest's
    ``pytest_addhooks``).

    :param host: call ``host.add_hookspecs(module)`` with a module of functions marked with
        ``hookspec`` (``pluggy.HookspecMarker("tcpstack")``).

    Historic: called for every plugin as it registers, before the host checks that each hook
    implementation matches a declared hook, so the order plugins register in does not matter.
    """


@hookspec
def stack_register(registry: Registry) -> None:
    """Register what configuration can name: layer types, plugin settings, and entries of the
    kinds of extension layers define.

    :param registry: call ``registry.add_layer(type_name, factory, settings_cls, doc=...)``
        for each layer or middleware type, ``registry.add_settings(plugin_name, settings_cls)``
        for settings under ``[plugins.<plugin_name>]``, and
        ``registry.kind(KIND).add(name, entry)`` (or the typed helper the layer offers) for an
        extension of a layer. Names must be unique across all plugins; a clash is a
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
