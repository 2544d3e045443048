"""The Linux TUN device: the only module that imports pytun.

Two facts from python-pytun shape it (docs/architecture.md):

- its default flags are ``IFF_TUN`` *without* ``IFF_NO_PI``, which would prefix every frame
  with 4 bytes of packet information, so we always pass ``IFF_TUN | IFF_NO_PI``;
- ``TunTapDevice.read`` raises ``pytun.Error`` rather than ``BlockingIOError``, so we set
  ``O_NONBLOCK`` on the descriptor and use :func:`os.read` / :func:`os.write` directly.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import struct

import pytun

from framework.errors import LinkError
from layers.link.handler import VNET_HDR_LEN  # struct virtio_net_hdr, one definition

# <linux/if_tun.h>
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
IFF_MULTI_QUEUE = 0x0100
TUNSETQUEUE = 0x400454D9
IFF_DETACH_QUEUE = 0x0400
MAX_GSO_FRAME = 65535  # an IPv4 datagram's largest size: what one offloaded read may hold


def device_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def device_multi_queue(name: str) -> bool | None:
    """Whether the existing TUN device *name* was made with ``multi_queue`` (``None``: unknown)."""
    try:
        with open(f"/sys/class/net/{name}/tun_flags") as f:
            return bool(int(f.read().strip(), 16) & IFF_MULTI_QUEUE)
    except (OSError, ValueError):
        return None


def multi_queue_recipe(name: str) -> str:
    return f"ip link del {name}; ip tuntap add dev {name} mode tun multi_queue"


def device_mtu(name: str) -> int | None:
    try:
        with open(f"/sys/class/net/{name}/mtu") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


class TunLink:
    """A non-blocking TUN device carrying bare IP datagrams.

    :param device: interface name; attached to if it exists, else created when *create*.
    :param mtu: expected MTU; an existing device must already have it, a created one gets it.
    :param create: create the device if it does not exist (needs CAP_NET_ADMIN).
    :param kernel_address: give the kernel's side this ``address/prefix`` and bring it up.
    :param offload: open with ``IFF_VNET_HDR`` and turn on checksum and TCPv4 segmentation
        offload (``TUNSETOFFLOAD``): every frame read or written then starts with a 10-byte
        ``virtio_net_hdr`` (handled by the link layer, :mod:`layers.link.handler`), and reads
        may return TCP super-segments of up to 64 KB.
    :param multi_queue: open one queue of a ``multi_queue`` device (``IFF_MULTI_QUEUE``; a
        created device is made multi-queue); ``None``: as the existing device was made (the
        kernel refuses a mismatch), single-queue for a created one. ``True`` on a device made
        without it is a one-line error with the command that makes one.
    :raises LinkError: with a one-line explanation of what went wrong and how to fix it.
    """

    def __init__(
        self,
        device: str,
        *,
        mtu: int = 1500,
        create: bool = False,
        kernel_address: str | None = None,
        offload: bool = False,
        multi_queue: bool | None = None,
    ) -> None:
        if not os.path.exists("/dev/net/tun"):
            raise LinkError("/dev/net/tun does not exist: this kernel or container has no TUN support")
        existed = device_exists(device)
        if not existed and not create:
            raise LinkError(
                f"TUN device {device!r} does not exist: create it with "
                f"'ip tuntap add dev {device} mode tun', or pass --create"
            )
        if existed:
            current = device_mtu(device)
            if current is not None and current != mtu:
                raise LinkError(f"TUN device {device!r} has MTU {current}, but the configuration says {mtu}")
        mq = device_multi_queue(device) if existed else None
        if multi_queue and mq is False:
            raise LinkError(
                f"TUN device {device!r} was made without multi_queue, which --workers needs: "
                f"'{multi_queue_recipe(device)}'"
            )
        self.multi_queue = bool(mq if multi_queue is None else multi_queue)
        try:
            flags = pytun.IFF_TUN | pytun.IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
            flags |= IFF_MULTI_QUEUE if self.multi_queue else 0
            self._dev = pytun.TunTapDevice(name=device, flags=flags)
        except pytun.Error as exc:
            raise LinkError(_explain(device, exc)) from None
        except OSError as exc:
            raise LinkError(_explain(device, exc)) from None
        self.name: str = self._dev.name
        self.created = not existed
        self.mtu = mtu
        try:
            if self.created:
                self._dev.mtu = mtu
            if kernel_address is not None:
                iface = ipaddress.IPv4Interface(kernel_address)
                self._dev.addr = str(iface.ip)
                self._dev.netmask = str(iface.netmask)
                self._dev.up()
        except (pytun.Error, OSError) as exc:
            self._dev.close()
            raise LinkError(_explain(device, exc)) from None
        self._fd: int = self._dev.fileno()
        self.offload = offload
        self._read_size = VNET_HDR_LEN + MAX_GSO_FRAME if offload else mtu
        try:
            # TSO without CSUM is EINVAL; both together make the kernel hand over partial
            # checksums and super-segments, and accept them from us. Without offload, say so too:
            # the setting belongs to the device and outlives the process that set it, so a
            # persistent device would otherwise keep a previous run's offload.
            fcntl.ioctl(self._fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 if offload else 0)
        except OSError as exc:
            if offload:
                self._dev.close()
                raise LinkError(f"TUN device {device!r}: cannot turn on offload (TUNSETOFFLOAD): {exc}") from None
        os.set_blocking(self._fd, False)
        self.tx_errors = 0

    def fileno(self) -> int:
        return self._fd

    def read_available(self, limit: int = 64) -> list[bytes]:
        frames: list[bytes] = []
        fd, size = self._fd, self._read_size
        read = os.read
        for _ in range(limit):
            try:
                frames.append(read(fd, size))
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EINTR):
                    break
                raise
        return frames

    def write(self, frame: bytes) -> bool:
        try:
            os.write(self._fd, frame)
            return True
        except OSError:  # EAGAIN (queue full), EINVAL (malformed), EIO (device down)
            self.tx_errors += 1
            return False

    def detach_queue(self) -> None:
        """Take this descriptor's queue out of a multi-queue device (``TUNSETQUEUE``): the kernel
        sends it nothing, and the open descriptor keeps the device alive."""
        fcntl.ioctl(self._fd, TUNSETQUEUE, struct.pack("16sH22x", b"", IFF_DETACH_QUEUE))

    def close(self) -> None:
        if self.offload:
            try:
                fcntl.ioctl(self._fd, TUNSETOFFLOAD, 0)  # leave a persistent device as we found it
            except OSError:
                pass
        self._dev.close()


def _explain(device: str, exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if code is None and exc.args and isinstance(exc.args[0], int):
        code = exc.args[0]
    if code in (errno.EPERM, errno.EACCES):
        return f"permission denied opening TUN device {device!r}: run as root or with CAP_NET_ADMIN"
    if code == errno.EBUSY:
        return f"TUN device {device!r} is busy: another process is attached to it"
    if code == errno.EINVAL:
        return f"TUN device {device!r} cannot be opened as a TUN device (is it a TAP or another kind?)"
    return f"cannot open TUN device {device!r}: {exc}"
