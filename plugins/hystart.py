"""HyStart++ (RFC 9406): leave slow start before it overshoots, from the growth of the RTT.

Slow start doubles cwnd every round trip until a loss (RFC 5681 §3.1), so it usually ends by
overflowing the bottleneck's queue and losing a window's worth of segments. HyStart++ watches
the smallest RTT of each round (RFC 9406 §4.2): when it grows by more than ``RttThresh``
(1/8 of the previous round's, clamped to 4-16 ms) the queue is building, and the connection
moves to Conservative Slow Start (CSS: a quarter of the growth). If the RTT falls back below
the baseline the exit was spurious and slow start resumes; after ``css_rounds`` rounds of CSS,
``ssthresh = cwnd`` and congestion avoidance begins. Loss or ECN during either ends it the
usual way.

It works with any congestion-control algorithm: the connection asks this policy how many of
the newly acknowledged bytes to credit to the algorithm's slow-start growth, and the policy
sets ``ssthresh`` when CSS ends. Only the initial slow start uses it (RFC 9406 §4.2: later slow
starts, after a timeout, are standard). It needs an RTT sample on most ACKs, which the
timestamps feature gives (RFC 7323 §4); with Karn timing alone (one sample a round) it rarely
reaches ``n_rtt_sample`` and changes nothing.

Off by default; enable per connection with ``features={"hystart": {}}`` or
``--feature hystart``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from framework.plugins import hookimpl
from framework.registry import Registry
from layers.tcp.congestion import CongestionControlProtocol
from layers.tcp.extensions import add_feature
from layers.tcp.policy import DecisionLog, TcpSetup, decision_log
from layers.tcp.seq import seq_ge
from layers.tcp.view import RttView

NAME = "hystart"
INITIAL_SSTHRESH = 1 << 30  # RFC 5681 §3.1: "arbitrarily high" (the built-in algorithms' value)


@dataclass(slots=True)
class HyStartSettings:
    min_rtt_thresh: float = field(default=0.004, metadata={"min": 0.0, "max": 1.0})
    """MIN_RTT_THRESH (RFC 9406 §4.3): the smallest RTT growth, in seconds, that ends slow start."""

    max_rtt_thresh: float = field(default=0.016, metadata={"min": 0.0, "max": 1.0})
    """MAX_RTT_THRESH: the largest RTT growth threshold, in seconds."""

    min_rtt_divisor: int = field(default=8, metadata={"min": 1, "max": 1024})
    """MIN_RTT_DIVISOR: the threshold is the last round's minimum RTT divided by this."""

    n_rtt_sample: int = field(default=8, metadata={"min": 1, "max": 1000})
    """N_RTT_SAMPLE: RTT samples a round needs before its minimum counts."""

    css_growth_divisor: int = field(default=4, metadata={"min": 2, "max": 64})
    """CSS_GROWTH_DIVISOR: CSS grows cwnd this many times slower than slow start."""

    css_rounds: int = field(default=5, metadata={"min": 1, "max": 100})
    """CSS_ROUNDS: rounds of CSS before congestion avoidance."""

    def problems(self) -> list[tuple[str, str]]:
        if self.min_rtt_thresh > self.max_rtt_thresh:
            return [("min_rtt_thresh", "must not exceed max_rtt_thresh")]
        return []


class HyStartPlusPlus:
    """The HyStart++ state of one connection (RFC 9406 §4.2's variables, in seconds)."""

    __slots__ = (
        "css_baseline",
        "css_rounds_done",
        "cur_round_min",
        "done",
        "in_css",
        "initial_ssthresh",
        "last_round_min",
        "log",
        "samples",
        "seen",
        "settings",
        "window_end",
    )

    def __init__(
        self, settings: HyStartSettings, log: DecisionLog | None = None, initial_ssthresh: int = INITIAL_SSTHRESH
    ) -> None:
        self.settings = settings
        self.initial_ssthresh = initial_ssthresh  # the algorithm's: a lower ssthresh means a later slow start
        self.log = log if log is not None else decision_log("?", NAME)
        self.last_round_min = math.inf  # lastRoundMinRTT
        self.cur_round_min = math.inf  # currentRoundMinRTT
        self.css_baseline = math.inf  # cssBaselineMinRtt
        self.samples = 0  # rttSampleCount
        self.window_end: int | None = None  # windowEnd: a round ends when SND.UNA passes it
        self.in_css = False
        self.css_rounds_done = 0
        self.done = False
        self.seen = 0  # RTT samples of the estimator already looked at

    @property
    def css_active(self) -> bool:
        """In Conservative Slow Start now (RFC 9406 §4.2): entered and neither ended nor abandoned."""
        return self.in_css and not self.done

    def credit(
        self, cc: CongestionControlProtocol, rtt: RttView, acked: int, una: int, snd_nxt: int, now: float
    ) -> int:
        """An ACK of *acked* new bytes arrived in slow start (``cwnd < ssthresh``): return how
        many of them the algorithm's slow start may grow cwnd by; may end slow start by setting
        ``cc.ssthresh``."""
        if self.done:
            return acked
        if cc.ssthresh < self.initial_ssthresh:
            self.done = True  # RFC 9406 §4.2: only the initial slow start uses HyStart++
            return acked
        s = self.settings
        if self.window_end is None or seq_ge(una, self.window_end):
            # RFC 9406 §4.2: a new round: the last round's minimum is now the reference.
            if self.window_end is not None and self.in_css:
                self.css_rounds_done += 1
                if self.css_rounds_done >= s.css_rounds:
                    # CSS_ROUNDS rounds of CSS: enter congestion avoidance (ssthresh = cwnd).
                    cc.ssthresh = cc.cwnd
                    self.done = True
                    self.log.debug(
                        "tcp.decision", decision="congestion avoidance", cwnd=cc.cwnd, rfc="RFC 9406 §4.2", t=now
                    )
                    return acked
            self.last_round_min, self.cur_round_min, self.samples = self.cur_round_min, math.inf, 0
            self.window_end = snd_nxt
        latest = rtt.latest
        if rtt.samples != self.seen and latest is not None:  # (never None once a sample was taken)
            self.seen = rtt.samples
            self.cur_round_min = min(self.cur_round_min, latest)
            self.samples += 1
        enough = self.samples >= s.n_rtt_sample and self.cur_round_min < math.inf
        if not self.in_css:
            if enough and self.last_round_min < math.inf:
                thresh = max(s.min_rtt_thresh, min(self.last_round_min / s.min_rtt_divisor, s.max_rtt_thresh))
                if self.cur_round_min >= self.last_round_min + thresh:
                    # The RTT grew by more than RttThresh: a queue is building. Enter CSS.
                    self.in_css = True
                    self.css_baseline = self.cur_round_min
                    self.css_rounds_done = 0
                    self.log.debug(
                        "tcp.decision",
                        decision="slow start exit",
                        reason="RTT increase",
                        min_rtt=self.cur_round_min,
                        last_min_rtt=self.last_round_min,
                        threshold=thresh,
                        cwnd=cc.cwnd,
                        rfc="RFC 9406 §4.2",
                        t=now,
                    )
            return acked
        if enough and self.css_rounds_done and self.cur_round_min < self.css_baseline:
            # (Only in a round after the one that entered CSS: its minimum may still fall.)
            # The RTT fell below the baseline: the exit was spurious. Resume slow start.
            self.in_css = False
            self.css_baseline = math.inf
            self.log.debug("tcp.decision", decision="resume slow start", reason="RTT fell", rfc="RFC 9406 §4.2", t=now)
            return acked
        # CSS: a quarter of what slow start would grow by, min(N, L*SMSS) with our L = 2 (RFC 3465).
        return min(acked, 2 * cc.mss) // s.css_growth_divisor

    def on_idle_restart(self, cc: CongestionControlProtocol, cwnd_before: int) -> None:
        """RFC 5681 §4.1 cut cwnd back after an idle period: CSS would otherwise end at the small
        window. Keep what CSS learnt instead: ssthresh = the window before the restart."""
        if self.in_css and not self.done:
            cc.ssthresh = cwnd_before
            self.done = True
            self.log.debug("tcp.decision", decision="congestion avoidance", reason="idle restart", rfc="RFC 9406 §4.2")


@hookimpl
def stack_register(registry: Registry) -> None:
    add_feature(registry, NAME, HyStartSettings, doc="HyStart++: leave slow start on RTT growth (RFC 9406)")


@hookimpl
def tcp_connection_setup(setup: TcpSetup) -> None:
    settings = setup.feature(NAME, HyStartSettings)
    if settings is None:
        return
    setup.claim("slow_start", by=NAME)
    initial = setup.congestion.ssthresh if setup.congestion is not None else INITIAL_SSTHRESH
    setup.slow_start = HyStartPlusPlus(settings, decision_log(setup.info.label, NAME), initial)
