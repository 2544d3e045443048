"""Settings of the ``udp`` layer (``[[layers]] type = "udp"``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class UdpSettings:
    verify_checksum: bool = True
    """Verify the checksum of datagrams that carry one (RFC 1122 §4.1.3.4: MUST). Turn off only
    behind a link that guarantees it."""

    port_unreachable: bool = True
    """Answer a datagram to a port no endpoint has with ICMP Port Unreachable (RFC 1122 §4.1.3.1:
    SHOULD); the network layer rate-limits these and never sends one where its rules forbid."""

    receive_queue: int = field(default=256, metadata={"min": 1, "max": 1 << 20})
    """Datagrams an endpoint holds that its application has not taken yet; more are dropped and
    counted (``udp.receive_queue_full``), as a full socket buffer drops them."""

    port_seed: int | None = None
    """Seed of the ephemeral port choice (RFC 6056 §3.2: random); default random."""
