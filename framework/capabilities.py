"""What a link can do, as a typed object the layers above receive when the pipeline is assembled.

The shape is smoltcp's ``DeviceCapabilities``: the link layer states its MTU and which work
its device does for the stack (checksums, cutting super-segments), and the layers above adapt
to it once, at attach time, instead of asking each other for informal attributes.

A link handler offers its capabilities as the attribute ``capabilities`` (the
:class:`OffersCapabilities` protocol). A layer above calls :func:`capabilities_below` with the
handlers below it (nearest first) in its ``attach``. Configuration checks, which build nothing,
get the same object from the layer type's registration
(``registry.add_layer(..., capabilities=settings -> LinkCapabilities)``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class LinkCapabilities:
    """What one link carries and does for the stack.

    :ivar mtu: the largest datagram the link carries, network header included (RFC 1122
        §3.3.3 EMTU_S / MMS_S + header).
    :ivar checksum_rx: inbound, the link may vouch for a frame's transport checksum: such a
        frame is marked ``Packet.csum_ok`` (it came from the local kernel with a partial sum
        and never crossed a wire), and the transport skips verifying it.
    :ivar checksum_tx: outbound, the link completes a transport checksum the transport left
        partial (``Packet.csum_partial``: only the pseudo-header sum in the checksum field).
    :ivar max_super_segment: the largest datagram the link takes as a super-segment and cuts
        into datagrams of ``mtu`` (segmentation offload, ``Packet.gso_size``); 0: none, every
        datagram must fit ``mtu``.
    """

    mtu: int
    checksum_rx: bool = False
    checksum_tx: bool = False
    max_super_segment: int = 0


@runtime_checkable
class OffersCapabilities(Protocol):
    """A handler that states the capabilities of the link below the layers above it."""

    @property
    def capabilities(self) -> LinkCapabilities: ...


def capabilities_below(below: Iterable[object]) -> LinkCapabilities | None:
    """The capabilities offered by the nearest handler in *below* (nearest first) that offers
    any, or ``None``. Called at attach time only (an ``isinstance`` against a protocol is slow)."""
    for handler in below:
        if isinstance(handler, OffersCapabilities):
            return handler.capabilities
    return None


__all__ = ["LinkCapabilities", "OffersCapabilities", "capabilities_below"]
