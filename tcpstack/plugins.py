"""The built-in plugins: the layers and per-connection policies ``tcpstack`` ships.

:class:`framework.plugins.PluginHost` knows no plugin by name; this subclass registers the
built-in ones first (by module name, as pytest registers its ``default_plugins``), then the
``tcpstack`` entry points. Disable one with ``[plugins] disable = ["plugins.nagle"]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from framework.plugins import PROJECT, hookimpl
from framework.plugins import PluginHost as _CorePluginHost

__all__ = ["BUILTIN_PLUGINS", "PROJECT", "PluginHost", "hookimpl"]

BUILTIN_PLUGINS: Final[tuple[str, ...]] = (
    "layers.link.handler",
    "layers.middleware.pcap",
    "layers.middleware.fault",
    "layers.middleware.seqshift",
    "layers.ipv4.handler",
    "layers.tcp.handler",
    "layers.udp.handler",
    "plugins.congestion.reno",
    "plugins.congestion.cubic",
    "plugins.delayed_ack",
    "plugins.nagle",
    "plugins.window_scaling",
    "plugins.timestamps",
    "plugins.keepalive",
    "plugins.sack",
    "plugins.ecn",
    "plugins.rack_tlp",
    "plugins.hystart",
    "plugins.probe",
)


class PluginHost(_CorePluginHost):
    """A :class:`framework.plugins.PluginHost` with :data:`BUILTIN_PLUGINS` registered."""

    def __init__(
        self,
        *,
        builtin: Iterable[str] = BUILTIN_PLUGINS,
        disabled: Iterable[str] = (),
        entry_points: bool = True,
        extra: Iterable[object] = (),
    ) -> None:
        super().__init__(builtin=builtin, disabled=disabled, entry_points=entry_points, extra=extra)
