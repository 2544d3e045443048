"""The TCP layer's plugin (``layers.tcp.handler``): registers the ``tcp`` layer, its hook
specifications and the kinds of extension TCP defines, and binds every TCP layer to the plugin
host once the stack is assembled. The layer itself is :mod:`layers.tcp.layer` (compiled when a
compiled build exists, which a module of ``@hookimpl`` functions cannot be); its names are
re-exported here, where they have always been imported from.
"""

from __future__ import annotations

from framework.plugins import PluginHost, hookimpl
from framework.registry import Registry
from framework.stack import Stack
from layers.tcp import extensions, hookspecs
from layers.tcp.layer import Listener, TcpLayer
from layers.tcp.settings import TcpSettings, check_settings
from layers.tcp.wire import PROTO_TCP


def _tcp(name: str, settings: TcpSettings) -> TcpLayer:
    return TcpLayer(name, settings)


@hookimpl
def stack_addhooks(host: PluginHost) -> None:
    host.add_hookspecs(hookspecs)  # tcp_connection_setup


@hookimpl
def stack_register(registry: Registry) -> None:
    registry.add_layer(
        "tcp",
        _tcp,
        TcpSettings,
        doc="TCP (RFC 9293) with listeners, RST handling and timers",
        requires=("ipv4",),
        passes_up=False,  # it consumes every segment: a layer above it would never see one
        accepts={"ip.protocol": [PROTO_TCP]},
        check=check_settings,
    )
    # The kinds of extension TCP defines (plugins add to them: layers.tcp.extensions).
    extensions.features(registry)
    extensions.congestion_controls(registry)


@hookimpl
def stack_configured(stack: Stack) -> None:
    for handler in stack.pipeline.handlers:
        if isinstance(handler, TcpLayer) and stack.host is not None:
            handler.bind(stack.host)
            handler.install_early_demux(stack)


__all__ = ["Listener", "TcpLayer", "TcpSettings"]
