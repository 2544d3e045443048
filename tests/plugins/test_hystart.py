"""HyStart++ (RFC 9406): the policy alone with explicit RTT samples, and wired on a simulated path."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from structlog.testing import LogCapture

from layers.tcp.policy import decision_log
from plugins.hystart import INITIAL_SSTHRESH, HyStartPlusPlus, HyStartSettings
from tcpstack.testing import StackPair

MSS = 1448


@dataclass
class FakeCc:
    cwnd: int = 10 * MSS
    ssthresh: int = INITIAL_SSTHRESH
    mss: int = MSS


@dataclass
class FakeRtt:
    samples: int = 0
    latest: float = 0.0


class Driver:
    """Feeds a HyStart++ policy rounds of ACKs: each round ends when SND.UNA passes the round's SND.MAX."""

    def __init__(self, **settings: object) -> None:
        self.hs = HyStartPlusPlus(HyStartSettings(**settings), decision_log("c", "hystart"))  # type: ignore[arg-type]
        self.cc, self.rtt = FakeCc(), FakeRtt()
        self.una, self.nxt, self.now = 0, 0, 0.0

    def round(self, rtts: list[float]) -> list[int]:
        """One round: the sender has sent len(rtts) segments; each ACK carries one RTT sample. Returns the
        credited bytes per ACK (cwnd grows by them, as the algorithm's slow start would)."""
        # By the round's last ACK the sender has sent on (slow start): the next round's first ACK ends it.
        self.nxt = self.una + (len(rtts) + 1) * MSS
        credits = []
        for r in rtts:
            self.una += MSS
            self.now += 0.001
            self.rtt.samples += 1
            self.rtt.latest = r
            c = self.hs.credit(self.cc, self.rtt, MSS, self.una, self.nxt, self.now)
            self.cc.cwnd += min(c, 2 * MSS)
            credits.append(c)
        return credits


def test_rtt_growth_ends_slow_start_in_css_then_congestion_avoidance(log_output: LogCapture) -> None:
    """RFC 9406 §4.2: the round's minimum RTT grows by more than RttThresh (max(4 ms, min(20/8 ms, 16 ms)) =
    4 ms): Conservative Slow Start grows a quarter as fast; after CSS_ROUNDS rounds, ssthresh = cwnd."""
    d = Driver()
    assert d.round([0.020] * 10) == [MSS] * 10  # first round: no reference yet
    assert d.round([0.023] * 10) == [MSS] * 10  # +3 ms: below the 4 ms threshold
    credits = d.round([0.025] * 10)  # +5 ms over the previous round's 20 ms... of the last round: 23 -> 25
    assert credits == [MSS] * 10 and not d.hs.in_css
    d.round([0.030] * 10)  # 25 -> 30 ms: +5 ms >= 4 ms, once 8 samples are in
    assert d.hs.in_css and d.hs.css_baseline == 0.030
    assert d.round([0.031] * 10) == [MSS // 4] * 10  # CSS: a quarter of the growth
    for _ in range(3):
        d.round([0.031] * 10)
    assert d.cc.ssthresh == INITIAL_SSTHRESH
    before = d.cc.cwnd
    d.round([0.031] * 10)  # the fifth CSS round ends at this round's first ACK: ssthresh = cwnd
    assert d.hs.done and d.cc.ssthresh == before
    decisions = [e["decision"] for e in log_output.entries if e["event"] == "tcp.decision"]
    assert decisions == ["slow start exit", "congestion avoidance"]


def test_few_samples_never_end_slow_start() -> None:
    """N_RTT_SAMPLE: a round needs 8 RTT samples before its minimum counts."""
    d = Driver()
    d.round([0.020] * 7)
    d.round([0.090] * 7)
    d.round([0.200] * 7)
    assert not d.hs.in_css and d.cc.ssthresh == INITIAL_SSTHRESH


def test_a_spurious_exit_resumes_slow_start(log_output: LogCapture) -> None:
    """In CSS, a round whose minimum RTT falls below the baseline means the exit was spurious."""
    d = Driver()
    d.round([0.020] * 10)
    d.round([0.030] * 10)
    assert d.hs.in_css
    credits = d.round([0.025] * 10)  # below the 30 ms baseline once 8 samples are in
    assert not d.hs.in_css and credits[-1] == MSS
    assert [e["decision"] for e in log_output.entries if e["event"] == "tcp.decision"][-1] == "resume slow start"


def test_only_the_initial_slow_start() -> None:
    """RFC 9406 §4.2: after a loss or timeout set ssthresh, slow start is standard."""
    d = Driver()
    d.cc.ssthresh = 50 * MSS
    assert d.round([0.020] * 10) == [MSS] * 10
    assert d.round([0.090] * 10) == [MSS] * 10
    assert d.hs.done and not d.hs.in_css


def test_settings_are_checked() -> None:
    from framework.settings import validate_settings

    problems: list[str] = []
    validate_settings(HyStartSettings, {"min_rtt_thresh": 0.1, "max_rtt_thresh": 0.01}, "f", problems)
    assert problems and "min_rtt_thresh" in problems[0]


@pytest.mark.parametrize("algorithm", ["reno", "cubic"])
def test_on_a_deep_buffer_it_leaves_slow_start_before_the_first_loss(algorithm: str, log_output: LogCapture) -> None:
    """A 10 MB/s path with 20 ms RTT and a 300-frame queue: the queue's growing delay ends slow start (a
    tcp.decision from hystart) before any loss; without the feature the first event is a loss."""

    def first_event(features: dict[str, object]) -> str:
        pair = StackPair(delay=0.01, bandwidth=10e6, queue_limit=300, server_tcp={"recv_buffer": 4 << 20})
        conn = pair.open(features=features, congestion_control=algorithm, server_features=features)
        conn.send(bytes(2_000_000))
        pair.run_for(30.0, condition=lambda: len(conn.server.received) == 2_000_000)
        assert len(conn.server.received) == 2_000_000
        mine = [e for e in log_output.entries if e["event"] == "tcp.decision" and e["conn"] == conn.client_conn.label]
        log_output.entries.clear()
        return next(str(e["decision"]) for e in mine if e["plugin"] in ("hystart", algorithm))

    base = {"timestamps": {}, "sack": {}, "window_scaling": {}}
    assert first_event({**base, "hystart": {}}) == "slow start exit"
    assert first_event(base) == "cwnd reduced"


def test_css_credits_a_quarter_of_what_slow_start_would_grow() -> None:
    """RFC 9406 §4.2: in CSS, cwnd grows by min(N, L*SMSS) / CSS_GROWTH_DIVISOR: a big ACK is capped first."""
    d = Driver()
    d.cc.mss = MSS  # type: ignore[attr-defined]
    d.round([0.020] * 10)
    d.round([0.030] * 10)
    assert d.hs.in_css
    assert d.hs.credit(d.cc, d.rtt, 8 * MSS, d.una, d.nxt, 1.0) == 2 * MSS // 4


def test_a_falling_minimum_in_the_round_that_entered_css_does_not_flap() -> None:
    """The round that entered CSS may still see its minimum fall a little: no resume until a later round."""
    d = Driver()
    d.round([0.010] * 10)
    d.round([0.020] * 8 + [0.019, 0.0185])  # enters CSS at the 8th sample, then the minimum falls
    assert d.hs.in_css


def test_an_idle_restart_in_css_keeps_what_css_learnt() -> None:
    """RFC 5681 §4.1 cuts cwnd after idleness: CSS ends with ssthresh = the window before the restart."""
    d = Driver()
    d.round([0.020] * 10)
    d.round([0.030] * 10)
    before = d.cc.cwnd
    d.cc.cwnd = 10 * MSS
    d.hs.on_idle_restart(d.cc, before)
    assert d.hs.done and d.cc.ssthresh == before


def test_an_algorithm_with_its_own_initial_ssthresh_still_gets_hystart() -> None:
    d = Driver()
    d.hs.initial_ssthresh = d.cc.ssthresh = 1000 * MSS
    d.round([0.020] * 10)
    d.round([0.030] * 10)
    assert d.hs.in_css and not d.hs.done
