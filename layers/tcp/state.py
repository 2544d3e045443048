"""TCP connection states and the legal transitions between them (RFC 9293 §3.3.2, Figure 5).

Theory of operation
-------------------
Two rules, after h11's ``_state.py``:

1. Every legal state change is listed in :data:`TRANSITIONS`; the connection asks
   :func:`next_state` and a missing entry is a bug (it raises), never a silent jump.
2. This file doesn't know which side opened the connection or what arrived: the connection
   (``connection.py``) turns segments, user calls and timers into :class:`Trigger` values,
   applying the acceptability checks of RFC 9293 §3.10.7.4 first.

``docs/tcp.md`` renders this table.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final


class TcpState(enum.Enum):
    """The eleven states of RFC 9293 §3.3.2."""

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"

    # Members are singletons compared by identity: hash them by identity too, in C. Enum's own
    # __hash__ is a Python call (hash of the name), and state sets and the transition table
    # hash states on every segment and state change.
    __hash__ = object.__hash__

    @property
    def synchronized(self) -> bool:
        """RFC 9293 §3.5.2: every state from ESTABLISHED on is "synchronized"."""
        return self not in (TcpState.CLOSED, TcpState.LISTEN, TcpState.SYN_SENT, TcpState.SYN_RECEIVED)


class Trigger(enum.Enum):
    CONNECT = "connect"  # user OPEN, active
    LISTEN = "listen"  # user OPEN, passive
    RECV_SYN = "recv SYN"
    RECV_SYN_ACK = "recv SYN,ACK"
    RECV_ACK_OF_SYN = "recv ACK of SYN"
    RECV_FIN = "recv FIN"
    RECV_ACK_OF_FIN = "recv ACK of FIN"
    RECV_FIN_ACK_OF_FIN = "recv FIN that ACKs our FIN"
    RECV_RST = "recv RST"
    CLOSE = "user CLOSE"
    ABORT = "user ABORT"
    TIMEOUT = "timeout"  # retransmission give-up, user timeout, FIN-WAIT-2 timeout
    TIMEOUT_2MSL = "2MSL timeout"
    RETURN_TO_LISTEN = "RST in SYN-RECEIVED after passive open"  # RFC 9293 §3.10.7.4

    __hash__ = object.__hash__  # as TcpState's: identity, in C


S = TcpState
T = Trigger

TRANSITIONS: Final[Mapping[tuple[TcpState, Trigger], TcpState]] = {
    (S.CLOSED, T.CONNECT): S.SYN_SENT,
    (S.CLOSED, T.LISTEN): S.LISTEN,
    (S.LISTEN, T.RECV_SYN): S.SYN_RECEIVED,
    (S.LISTEN, T.CLOSE): S.CLOSED,
    (S.SYN_SENT, T.RECV_SYN_ACK): S.ESTABLISHED,
    (S.SYN_SENT, T.RECV_SYN): S.SYN_RECEIVED,  # simultaneous open, MUST-10
    (S.SYN_SENT, T.CLOSE): S.CLOSED,
    (S.SYN_RECEIVED, T.RECV_ACK_OF_SYN): S.ESTABLISHED,
    (S.SYN_RECEIVED, T.CLOSE): S.FIN_WAIT_1,  # §3.10.4: FIN after queued data
    (S.SYN_RECEIVED, T.RETURN_TO_LISTEN): S.LISTEN,
    (S.ESTABLISHED, T.CLOSE): S.FIN_WAIT_1,
    (S.ESTABLISHED, T.RECV_FIN): S.CLOSE_WAIT,
    (S.FIN_WAIT_1, T.RECV_ACK_OF_FIN): S.FIN_WAIT_2,
    (S.FIN_WAIT_1, T.RECV_FIN): S.CLOSING,  # simultaneous close
    (S.FIN_WAIT_1, T.RECV_FIN_ACK_OF_FIN): S.TIME_WAIT,  # §3.10.7.4 "Eighth"
    (S.FIN_WAIT_2, T.RECV_FIN): S.TIME_WAIT,
    (S.CLOSE_WAIT, T.CLOSE): S.LAST_ACK,  # RFC 1122 erratum folded into 9293
    (S.CLOSING, T.RECV_ACK_OF_FIN): S.TIME_WAIT,
    (S.LAST_ACK, T.RECV_ACK_OF_FIN): S.CLOSED,
    (S.TIME_WAIT, T.TIMEOUT_2MSL): S.CLOSED,
}

#: Triggers that lead to CLOSED from any state but CLOSED (reset, abort, give-up).
TO_CLOSED_FROM_ANY: Final = frozenset({T.RECV_RST, T.ABORT, T.TIMEOUT})


def next_state(state: TcpState, trigger: Trigger) -> TcpState:
    """The state after *trigger* in *state*.

    :raises KeyError: if the transition is not legal (a bug in the caller).
    """
    if trigger in TO_CLOSED_FROM_ANY and state is not S.CLOSED:
        return S.CLOSED
    return TRANSITIONS[(state, trigger)]
