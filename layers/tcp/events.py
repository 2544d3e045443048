"""What a connection tells its user (past-tense nouns, h11 style).

Events queue on the connection (:meth:`TcpConnection.next_event`); the TCP layer hands them to
a listener object at the end of each batch (the asyncio adapter is one), never from inside
segment processing.
"""

from __future__ import annotations

from dataclasses import dataclass

from framework.netlayer import NetError


@dataclass(slots=True)
class TcpEvent:
    """Base of every connection event."""


@dataclass(slots=True)
class Connected(TcpEvent):
    """The handshake completed (ESTABLISHED)."""


@dataclass(slots=True)
class DataReceived(TcpEvent):
    """In-order bytes became readable (read them with ``conn.read()``)."""


@dataclass(slots=True)
class EofReceived(TcpEvent):
    """The peer's FIN arrived in order: it will send nothing more."""


@dataclass(slots=True)
class SendSpaceAvailable(TcpEvent):
    """Acknowledged data freed space in the send buffer."""


@dataclass(slots=True)
class ConnectionFailed(TcpEvent):
    """The connection ended abnormally: ``reason`` is ``"refused"``, ``"reset"``,
    ``"timeout"``, ``"unreachable"`` or ``"aborted"``."""

    reason: str
    detail: str = ""


@dataclass(slots=True)
class SoftError(TcpEvent):
    """An ICMP soft error concerning this connection (RFC 9293 §3.9.2.2, MUST-56: reported,
    never fatal); on IPv4 ``error`` is an ICMP error record."""

    error: NetError


@dataclass(slots=True)
class ConnectionClosed(TcpEvent):
    """The connection is over for the user: it reached CLOSED, or TIME-WAIT (where the TCB
    only guards the 4-tuple for 2*MSL). No more events follow."""
