"""The UDP layer (RFC 768, RFC 1122 §4.1): endpoints, delivery, port unreachable, errors up.

Sans-IO: an application opens an :class:`Endpoint` with :meth:`UdpLayer.bind` (a local port,
datagrams from anyone) or :meth:`UdpLayer.connect` (a local port and one remote address and port:
datagrams from others are not its own). Received datagrams and ICMP errors queue in the endpoint
and reach its callbacks from :meth:`UdpLayer.dispatch_events` (user code runs only from there);
datagrams sent queue in the layer and leave at :meth:`UdpLayer.flush`.

The layer reaches the network layer only through :class:`~framework.netlayer.NetworkLayer`
(addresses, pseudo-header sums, headers, port unreachable): it imports no network layer.
Every rejection is counted as ``udp.<reason>``.
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import cast

from framework.context import Context
from framework.errors import ConfigError, InvalidStateError, WireError
from framework.handler import BaseHandler, PacketHandler
from framework.netlayer import NetError, NetHeader, NetworkLayer, network_layer_below
from framework.packet import Packet
from layers.udp.settings import UdpSettings
from layers.udp.wire import MAX_PAYLOAD, PROTO_UDP, UdpRepr

EPHEMERAL_LOW = 49152  # RFC 6056 §2.1: the IANA ephemeral range
EPHEMERAL_HIGH = 65535

Address = tuple[bytes, int]  # (network address, port)
DatagramCallback = Callable[[bytes, Address], None]
ErrorCallback = Callable[[NetError, Address], None]


class Endpoint:
    """One UDP endpoint: a local port and, when connected, the one remote it talks to.

    ``received`` holds ``(data, source)`` pairs until the application takes them (or, with
    ``on_datagram`` set, until the layer dispatches them); ``errors`` the ICMP errors about
    datagrams it sent, with the destination they concern (RFC 1122 §4.1.3.3).
    """

    def __init__(self, layer: UdpLayer, local: Address, remote: Address | None, queue_limit: int) -> None:
        self.layer = layer
        self.local = local
        self.remote = remote
        self.queue_limit = queue_limit
        self.received: deque[tuple[bytes, Address]] = deque()
        self.errors: deque[tuple[NetError, Address]] = deque()
        self.on_datagram: DatagramCallback | None = None
        self.on_error: ErrorCallback | None = None
        self.closed = False

    @property
    def port(self) -> int:
        return self.local[1]

    def recvfrom(self) -> tuple[bytes, Address] | None:
        """The oldest datagram received and its source, or ``None``."""
        return self.received.popleft() if self.received else None

    def sendto(self, data: bytes, remote: Address | None = None) -> None:
        """Queue *data* for *remote* (a connected endpoint: its remote, which *remote* may only
        repeat). It leaves at the layer's next flush."""
        self.layer.sendto(self, data, remote)

    def close(self) -> None:
        self.layer.close(self)


class UdpLayer(BaseHandler):
    """The UDP pipeline handler: owns every endpoint of the stack."""

    def __init__(self, name: str, settings: UdpSettings) -> None:
        self.name = name
        self.settings = settings
        self.endpoints: dict[int, Endpoint] = {}  # by local port
        self._out: list[tuple[Endpoint, bytes, Address]] = []
        self._eventful: dict[Endpoint, None] = {}
        seed = settings.port_seed
        self._ports = random.Random(seed if seed is not None else os.urandom(8))
        self.address = b""
        self.net: NetworkLayer | None = None

    # ------------------------------------------------------------------ assembly

    def attach(self, below: Sequence[PacketHandler], above: Sequence[PacketHandler]) -> None:
        net = network_layer_below(below)
        if net is None:
            raise ConfigError(["udp: needs a network layer (ipv4) below it"])
        self.net = net
        self.address = net.local_addresses()[0]

    # ------------------------------------------------------------------ endpoints

    def bind(self, port: int = 0) -> Endpoint:
        """An endpoint on *port* (0: an ephemeral one) taking datagrams from anyone."""
        return self._open(port, None)

    def connect(self, remote: Address, port: int = 0) -> Endpoint:
        """An endpoint on *port* (0: an ephemeral one) that sends to and takes datagrams only
        from *remote*."""
        self._check_destination(remote)
        return self._open(port, remote)

    def _open(self, port: int, remote: Address | None) -> Endpoint:
        if self.net is None:
            raise InvalidStateError("udp: the layer is not attached to a network layer")
        if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise ValueError(f"udp: port {port!r} is not an integer in 0-65535")
        if port == 0:
            port = self._ephemeral_port()
        elif port in self.endpoints:
            raise InvalidStateError(f"udp: port {port} is in use")
        ep = Endpoint(self, (self.address, port), remote, self.settings.receive_queue)
        self.endpoints[port] = ep
        return ep

    def _ephemeral_port(self) -> int:
        # RFC 6056 §3.2 (algorithm 1): a random port, then the next free one.
        span = EPHEMERAL_HIGH - EPHEMERAL_LOW + 1
        start = self._ports.randrange(span)
        for i in range(span):
            port = EPHEMERAL_LOW + (start + i) % span
            if port not in self.endpoints:
                return port
        raise InvalidStateError("udp: no free ephemeral port")

    def close(self, ep: Endpoint) -> None:
        if not ep.closed:
            ep.closed = True
            if self.endpoints.get(ep.port) is ep:
                del self.endpoints[ep.port]
            self._eventful.pop(ep, None)

    def _check_destination(self, remote: Address) -> None:
        net = cast(NetworkLayer, self.net)
        if not (isinstance(remote, tuple) and len(remote) == 2):
            raise ValueError(f"udp: a destination is (address bytes, port), not {remote!r}")
        addr, port = remote
        if not isinstance(port, int) or not 1 <= port <= 0xFFFF:
            raise ValueError(f"udp: destination port {port!r} is not an integer in 1-65535")
        if not isinstance(addr, bytes) or len(addr) != len(self.address):
            raise ValueError("udp: the destination is not an address of the network layer's family")
        if net.is_broadcast(addr):
            # Broadcast needs an explicit opt-in (Linux: SO_BROADCAST), not implemented yet.
            raise ValueError("udp: sending to a broadcast address is not supported")

    # ------------------------------------------------------------------ send

    def sendto(self, ep: Endpoint, data: bytes, remote: Address | None) -> None:
        if ep.closed:
            raise InvalidStateError("udp: the endpoint is closed")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"udp: data must be bytes-like, not {type(data).__name__}")
        if ep.remote is not None:
            if remote is not None and remote != ep.remote:
                raise ValueError("udp: a connected endpoint sends only to its remote")
            remote = ep.remote
        elif remote is None:
            raise ValueError("udp: an unconnected endpoint needs a destination")
        else:
            self._check_destination(remote)
        # RFC 768 "Length" (16 bits, header included) and the IPv4 Total Length (RFC 791 §3.1).
        net = cast(NetworkLayer, self.net)
        if len(data) > MAX_PAYLOAD - net.header_len:
            raise ValueError(f"udp: {len(data)} octets do not fit in one datagram")
        self._out.append((ep, bytes(data), remote))

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    def flush(self, ctx: Context) -> None:
        if not self._out:
            return
        out, self._out = self._out, []
        net = cast(NetworkLayer, self.net)
        for ep, data, (addr, port) in out:
            src = ep.local[0]
            dgram = UdpRepr(ep.port, port, data)
            dgram.pseudo = net.pseudo_header_sum(src, addr, PROTO_UDP, 0)
            # RFC 1122 §4.1.3.4: a checksum is always computed. DF clear: a datagram above the
            # MTU is fragmented by IP (RFC 791 §3.2; RFC 1122 §4.1.3.6: no IP-level limit here).
            pkt = Packet(b"", net.make_header(src, addr, PROTO_UDP, dont_frag=False))
            pkt.push(dgram)
            ctx.stats.count("udp.datagrams_sent")
            ctx.transmit(self, pkt)

    # ------------------------------------------------------------------ receive

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        if pkt.error is not None:
            self._net_error(pkt, ctx)
            return None
        ip = cast(NetHeader, pkt.net)
        if ip is None or ip.protocol != PROTO_UDP:
            return pkt  # not ours: pass it on
        net = cast(NetworkLayer, self.net)
        raw = cast(memoryview, pkt.payload)
        # RFC 1122 §4.1.3.4: verify (MUST), unless the link vouches for it (TUN offload).
        verify = self.settings.verify_checksum and not pkt.csum_ok
        pseudo = net.pseudo_header_sum(ip.src, ip.dst, PROTO_UDP, 0) if verify else None
        try:
            dgram = UdpRepr.parse(raw, pseudo)
        except WireError as exc:
            ctx.stats.drop("udp", exc.reason)
            return None
        if not dgram.checksummed:
            ctx.stats.count("udp.no_checksum")  # RFC 768: accepted over IPv4
        ep = self.endpoints.get(dgram.dst_port)
        source = (ip.src, dgram.src_port)
        if ep is None or (ep.remote is not None and ep.remote != source):
            # RFC 1122 §4.1.3.1: no endpoint for it: SHOULD send Port Unreachable; the network
            # layer applies RFC 1122 §3.2.2's rules (no broadcast or multicast destination, no
            # non-first fragment, no error about an error) and its rate limit.
            ctx.stats.drop("udp", "no_port")
            if self.settings.port_unreachable and net.port_unreachable(ip, raw, ctx):
                ctx.stats.count("udp.port_unreachable_sent")
            return None
        if len(ep.received) >= ep.queue_limit:
            ctx.stats.drop("udp", "receive_queue_full")
            return None
        # RFC 1122 §4.1.3.5 / RFC 768 "User Interface": the data with the source address and port.
        ep.received.append((bytes(dgram.payload), source))
        ctx.stats.count("udp.datagrams_received")
        if ep.on_datagram is not None:
            self._eventful[ep] = None
        return None

    def _net_error(self, pkt: Packet, ctx: Context) -> None:
        """RFC 1122 §4.1.3.3: UDP MUST pass to the application every ICMP error the network
        layer reports. ``pkt.net`` and ``pkt.payload`` are the quoted header and datagram."""
        quoted = cast(NetHeader, pkt.net)
        data = bytes(pkt.payload[:4])
        err = pkt.error
        if len(data) < 4 or err is None:
            ctx.stats.drop("udp", "icmp_quote_short")
            return
        sport = int.from_bytes(data[0:2], "big")
        dport = int.from_bytes(data[2:4], "big")
        ep = self.endpoints.get(sport)
        dest = (quoted.dst, dport)
        # RFC 5927 §4.1 in spirit: a connected endpoint only takes errors about its own remote.
        if ep is None or (ep.remote is not None and ep.remote != dest):
            ctx.stats.drop("udp", "icmp_no_endpoint")
            return
        if len(ep.errors) >= ep.queue_limit:
            ctx.stats.drop("udp", "error_queue_full")
            return
        ep.errors.append((err, dest))
        ctx.stats.count("udp.errors_received")
        if ep.on_error is not None:
            self._eventful[ep] = None

    # ------------------------------------------------------------------ events

    def dispatch_events(self) -> None:
        """Hand queued datagrams and errors to the endpoints' callbacks."""
        if not self._eventful:
            return
        eventful, self._eventful = self._eventful, {}
        for ep in eventful:
            on_datagram, on_error = ep.on_datagram, ep.on_error
            while on_error is not None and ep.errors and not ep.closed:
                on_error(*ep.errors.popleft())
            while on_datagram is not None and ep.received and not ep.closed:
                on_datagram(*ep.received.popleft())
