"""The UDP layer's plugin (``layers.udp.handler``): registers the ``udp`` layer type. The layer
itself is :mod:`layers.udp.layer`."""

from __future__ import annotations

from framework.plugins import hookimpl
from framework.registry import Registry
from layers.udp.layer import Endpoint, UdpLayer
from layers.udp.settings import UdpSettings
from layers.udp.wire import PROTO_UDP


def _udp(name: str, settings: UdpSettings) -> UdpLayer:
    return UdpLayer(name, settings)


@hookimpl
def stack_register(registry: Registry) -> None:
    registry.add_layer(
        "udp",
        _udp,
        UdpSettings,
        doc="UDP (RFC 768, RFC 1122 §4.1) with endpoints, port unreachable and ICMP errors",
        requires=("ipv4",),
        passes_up=False,  # it consumes every datagram: a layer above it would never see one
        accepts={"ip.protocol": [PROTO_UDP]},
    )


__all__ = ["Endpoint", "UdpLayer", "UdpSettings"]
