"""CUBIC congestion control (RFC 9438), as a pluggable algorithm named ``cubic``.

Windows are kept in bytes like the rest of the stack (RFC 5681 §3) and converted to segments
for the cubic function, whose constants are defined in segments (RFC 9438 §4.1).

- §4.2: ``W_cubic(t) = C*(t - K)**3 + W_max`` with ``C = 0.4``;
  ``K = cbrt((W_max - cwnd_epoch) / C)``.
- §4.3: the Reno-friendly region: ``W_est`` grows by ``alpha_cubic`` segments per window, with
  ``alpha_cubic = 3 * (1 - beta) / (1 + beta)``; cwnd follows ``W_est`` when it is larger.
- §4.4-4.5: in the concave and convex regions cwnd moves toward ``target = W_cubic(t + RTT)``,
  clamped to ``[cwnd, 1.5 * cwnd]``, by ``(target - cwnd) / cwnd`` per acknowledged segment.
- §4.6: on congestion ``ssthresh = cwnd * beta_cubic`` with ``beta_cubic = 0.7``.
- §4.7: fast convergence: ``W_max = cwnd * (1 + beta) / 2`` when the window shrank since the
  previous congestion event.
- §4.8: after a timeout, start a new epoch from slow start.
- Slow start below ssthresh is RFC 5681's (with byte counting), as §4.10 allows; HyStart++
  (RFC 9406) is the separate ``hystart`` feature, which works with any algorithm.
"""

from __future__ import annotations

from framework.plugins import hookimpl
from framework.registry import Registry
from layers.tcp.congestion import CongestionControl
from layers.tcp.extensions import add_congestion_control

C = 0.4  # RFC 9438 §4.2
BETA = 0.7  # RFC 9438 §4.6
ALPHA = 3 * (1 - BETA) / (1 + BETA)  # RFC 9438 §4.3


class Cubic(CongestionControl):
    """RFC 9438 CUBIC on top of the RFC 5681 framework of :class:`CongestionControl`."""

    name = "cubic"

    __slots__ = (
        "_acked_frac",
        "after_timeout",
        "cwnd_epoch",
        "epoch_start",
        "fast_convergence",
        "k",
        "w_est",
        "w_max",
    )

    def __init__(self, mss: int, *, fast_convergence: bool = True) -> None:
        super().__init__(mss)
        self.fast_convergence = fast_convergence
        self.w_max = 0.0  # segments
        self.k = 0.0
        self.epoch_start: float | None = None
        self.cwnd_epoch = 0.0
        self.w_est = 0.0
        self._acked_frac = 0.0
        self.after_timeout = False

    def _w_cubic(self, t: float) -> float:
        return C * (t - self.k) ** 3 + self.w_max

    def on_ack(self, acked: int, in_flight: int, now: float, rtt: float | None = None) -> None:
        mss = self.mss
        if self.cwnd < self.ssthresh:
            self.cwnd += min(acked, 2 * mss)  # RFC 5681 slow start with RFC 3465 byte counting
            return
        cwnd_seg = self.cwnd / mss
        if self.epoch_start is None:
            # RFC 9438 §4.2: a new congestion-avoidance epoch starts at the first ACK.
            self.epoch_start = now
            self.cwnd_epoch = cwnd_seg
            self.w_est = cwnd_seg
            if self.after_timeout:
                # RFC 9438 §4.8: the first congestion avoidance after a timeout starts with
                # K = 0 and W_max = the window at its beginning.
                self.after_timeout = False
                self.w_max = cwnd_seg
                self.k = 0.0
            elif self.w_max < cwnd_seg:
                self.w_max = cwnd_seg
                self.k = 0.0
            else:
                self.k = ((self.w_max - cwnd_seg) / C) ** (1 / 3)
        t = now - self.epoch_start
        segs = acked / mss
        # §4.3 Reno-friendly estimate.
        self.w_est += ALPHA * segs / cwnd_seg
        # §4.4: the target one RTT ahead, clamped.
        target = self._w_cubic(t + (rtt if rtt else 0.0))
        target = max(cwnd_seg, min(target, 1.5 * cwnd_seg))
        if self._w_cubic(t) < self.w_est:
            new = self.w_est  # Reno-friendly region
        else:
            new = cwnd_seg + (target - cwnd_seg) / cwnd_seg * segs
        self.cwnd = max(int(new * mss), self.cwnd)

    def _reduce(self) -> None:
        cwnd_seg = self.cwnd / self.mss
        # §4.7 fast convergence.
        if self.fast_convergence and cwnd_seg < self.w_max:
            self.w_max = cwnd_seg * (1 + BETA) / 2
        else:
            self.w_max = cwnd_seg
        self.epoch_start = None

    def on_loss(self, in_flight: int, now: float) -> None:
        """Three duplicate ACKs: RFC 9438 §4.6 multiplicative decrease by beta_cubic."""
        self._reduce()
        self.ssthresh = max(int(self.cwnd * BETA), 2 * self.mss)
        self.cwnd = self.ssthresh + 3 * self.mss  # RFC 5681 §3.2 step 3 inflation
        self.decided("loss", "RFC 9438 §4.6", now)

    def on_timeout(self, in_flight: int, now: float) -> None:
        """RFC 9438 §4.8: reduce as on loss, then restart from one segment in slow start."""
        self._reduce()
        self.ssthresh = max(int(self.cwnd * BETA), 2 * self.mss)
        self.cwnd = self.mss
        self.after_timeout = True
        self.decided("retransmission timeout", "RFC 9438 §4.8", now)

    def on_ecn(self, in_flight: int, now: float) -> None:
        """RFC 9438 §4.6: an ECN echo is a congestion event like a loss (beta_cubic, a new epoch)."""
        self._reduce()
        self.ssthresh = max(int(self.cwnd * BETA), 2 * self.mss)
        self.cwnd = self.ssthresh
        self.decided("ECN echo", "RFC 9438 §4.6; RFC 3168 §6.1.2", now)

    def on_recovery_end(self, in_flight: int) -> None:
        """Full ACK: deflate as RFC 6582 §3.2 step 3 says, then start a new epoch."""
        super().on_recovery_end(in_flight)
        self.epoch_start = None


def _cubic(mss: int, settings: object) -> Cubic:
    return Cubic(mss)


@hookimpl
def stack_register(registry: Registry) -> None:
    add_congestion_control(registry, "cubic", _cubic, doc="RFC 9438 CUBIC with fast convergence")
