"""Link layers for raw IP framing: a TUN device (``tun``) and an in-memory link (``memory``).

A TUN device opened with ``IFF_NO_PI`` carries bare IP datagrams, so the link handler in the
core is thin: it only knows the MTU (the largest datagram the link carries, RFC 1122 §3.3.3
MMS_S/EMTU_R) and passes packets through. Opening the device is the I/O edge's job
(:mod:`framework.io.tun`), driven by these settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from framework.context import Context
from framework.handler import BaseHandler
from framework.packet import Packet
from framework.plugins import hookimpl
from framework.registry import Registry

_IFNAME = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")


def _check_ifname(value: str) -> str | None:
    return None if _IFNAME.match(value) else "must be 1-15 characters of letters, digits, '_', '.', '-'"


@dataclass(slots=True)
class TunSettings:
    device: str = field(default="tun0", metadata={"check": _check_ifname})
    """Name of the TUN device. An existing (e.g. persistent, ``ip tuntap add``) device is
    attached to; a missing one is an error unless ``create`` is true."""

    mtu: int = field(default=1500, metadata={"min": 576, "max": 65535})
    """Largest IP datagram the link carries (RFC 1122 §3.3.3). Set on the device when it is
    created; must match an existing device's MTU."""

    create: bool = False
    """Create the device if it does not exist (needs CAP_NET_ADMIN). Off by default, so a
    mistyped name is an error instead of a new, unconfigured device."""

    kernel_address: str | None = None
    """If set (``"10.0.0.1/24"``), bring the device up and give the kernel's side this address.
    Handy for a device the stack creates itself; needs CAP_NET_ADMIN."""


@dataclass(slots=True)
class MemorySettings:
    mtu: int = field(default=1500, metadata={"min": 576, "max": 65535})
    """Largest IP datagram the in-memory link carries."""


class RawIpLink(BaseHandler):
    """Bottom of the pipeline for links that carry bare IP datagrams (TUN, memory)."""

    def __init__(self, name: str, mtu: int, settings: TunSettings | MemorySettings) -> None:
        self.name = name
        self.mtu = mtu
        self.settings = settings

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        if not len(pkt.payload):
            ctx.drop("link", "empty")
            return None
        ctx.stats.events["frames_in"] += 1
        return pkt

    def send(self, pkt: Packet, ctx: Context) -> Packet | None:
        if len(pkt) > self.mtu:  # never hand the link more than it carries (RFC 1122 §3.3.3)
            ctx.drop("link", "too_big")
            return None
        return pkt


def _tun(name: str, settings: TunSettings) -> RawIpLink:
    return RawIpLink(name, settings.mtu, settings)


def _memory(name: str, settings: MemorySettings) -> RawIpLink:
    return RawIpLink(name, settings.mtu, settings)


@hookimpl
def stack_register(registry: Registry) -> None:
    registry.add_layer("tun", _tun, TunSettings, doc="Linux TUN device carrying bare IP datagrams")
    registry.add_layer("memory", _memory, MemorySettings, doc="in-memory link for tests and simulation")
