"""The named deadlines of one connection: the one list, one :meth:`Timers.earliest`, one
:meth:`Timers.clear`.

A deadline is an absolute time (the ``now`` the connection is given, never a clock read) or
``None``. The connection's own timers are the slots of :class:`Timers`:

``rto``
    retransmission (RFC 6298 §5), pulled in to the user timeout (RFC 9293 §3.10.8) by
    :meth:`Timers.rto_deadline`;
``persist``
    zero-window probing (RFC 9293 §3.8.6.1);
``ack``
    a delayed ACK (RFC 1122 §4.2.3.2; the ACK policy names the deadline);
``sws``
    the sender SWS-avoidance override (RFC 1122 §4.2.3.4);
``close``
    TIME-WAIT's 2 MSL (RFC 9293 §3.6) or the FIN-WAIT-2 timeout.

Plugins add timers of their own (keep-alive, RACK's reorder timer, TLP's probe timeout) as
:class:`~layers.tcp.policy.TimerPolicy` objects through :meth:`Timers.add`: each reports its
deadline and is run when it is due, either before the retransmission timer (a probe that the
RTO restarts behind, RFC 8985 §7.3) or after the connection's own timers.

Mechanism: a small object with ``__slots__`` held by the connection (``conn.timers``). The
per-segment path touches one or two slots (``timers.ack = None`` in every ACK, ``timers.rto``
when data goes out): one attribute load more than a field of the connection, measured within
noise, for a single list that ``earliest()`` and ``clear()`` cannot disagree with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from layers.tcp.policy import TimerPolicy

#: The connection's own timers, in the order :meth:`TcpConnection.handle_timer` runs them
#: (``close`` first; ``rto`` after the policy timers that run before it; ``persist`` last).
NAMES = ("close", "ack", "sws", "rto", "persist")


class Timers:
    """The deadlines of one connection (see the module docstring for what each one is)."""

    __slots__ = ("ack", "close", "early", "late", "persist", "rto", "stall_since", "sws", "user_timeout")

    def __init__(self, user_timeout: float | None) -> None:
        self.rto: float | None = None
        self.persist: float | None = None
        self.ack: float | None = None
        self.sws: float | None = None
        self.close: float | None = None
        #: when the oldest unacknowledged transmission went out (R2 and the user timeout count from it)
        self.stall_since: float | None = None
        self.user_timeout = user_timeout
        #: policy timers run before the retransmission timer, and after the connection's own
        self.early: tuple[TimerPolicy, ...] = ()
        self.late: tuple[TimerPolicy, ...] = ()

    def add(self, policy: TimerPolicy, *, before_rto: bool = False) -> None:
        """Install a plugin's timer: asked for its deadline, run when that is due."""
        if before_rto:
            self.early += (policy,)
        else:
            self.late += (policy,)

    def rto_deadline(self) -> float | None:
        """The retransmission timer, pulled in to the moment the user timeout expires (RFC 9293
        §3.10.8: the abort happens when the user timeout expires, not at the next backed-off RTO)."""
        t = self.rto
        ut = self.user_timeout
        if t is not None and ut is not None and self.stall_since is not None:
            t = min(t, self.stall_since + ut)
        return t

    def earliest(self) -> float | None:
        """The earliest deadline of all timers, the plugins' included, or ``None``."""
        best = self.rto_deadline()
        for t in (self.persist, self.ack, self.sws, self.close):
            if t is not None and (best is None or t < best):
                best = t
        for policies in (self.early, self.late):
            for p in policies:
                t = p.deadline()
                if t is not None and (best is None or t < best):
                    best = t
        return best

    def clear(self) -> None:
        """No timer of any kind is left (CLOSED, and on entering TIME-WAIT before its 2 MSL)."""
        self.rto = self.persist = self.ack = self.sws = self.close = None
        for policies in (self.early, self.late):
            for p in policies:
                p.cancel()
