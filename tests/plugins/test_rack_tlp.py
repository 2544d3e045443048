"""RACK-TLP (RFC 8985): the RACK state alone, then tail losses and short flights between two
simulated stacks, with and without the feature."""

from __future__ import annotations

from framework.simulation import Simulation
from layers.middleware.fault import FaultInjector
from layers.tcp.policy import TcpOptions
from plugins.rack_tlp import Rack
from tests.layers.tcp.helpers import LayerHarness, data, make_stack, tcp_layer

SERVER = bytes([10, 0, 0, 2])


class TestRackState:
    def test_segment_sent_before_a_delivered_one_is_lost_after_rtt_plus_reo_wnd(self) -> None:
        """RFC 8985 §6.2: A sent before B; when B is delivered, A is lost once RACK.rtt + reo_wnd has passed
        since A was sent, and the reorder timer names that moment before then."""
        rack = Rack(0.25)
        rack.on_sent(0, 1000, 0.000, False)  # A
        rack.on_sent(1000, 2000, 0.010, False)  # B
        rack.on_ack(0, [(1000, 2000)], 0.110, min_rtt=0.1)  # B SACKed: RACK.rtt = 0.1
        lost, again = rack.detect_loss(0.110, min_rtt=0.1, srtt=0.1)
        assert lost == [] and again is not None and abs(again - 0.125) < 1e-9  # 0 + 0.1 + 0.025
        lost, again = rack.detect_loss(0.125, min_rtt=0.1, srtt=0.1)
        assert [(s.start, s.end) for s in lost] == [(0, 1000)] and again is None

    def test_segments_sent_after_the_delivered_one_are_not_judged(self) -> None:
        """RFC 8985 §6.2 step 5: only segments sent before the most recently delivered one can be lost."""
        rack = Rack(0.25)
        rack.on_sent(0, 1000, 0.0, False)
        rack.on_sent(1000, 2000, 0.01, False)
        rack.on_ack(1000, [], 0.1, min_rtt=0.1)  # A delivered cumulatively
        lost, again = rack.detect_loss(10.0, min_rtt=0.1, srtt=0.1)
        assert lost == [] and again is None

    def test_fast_ack_of_a_retransmission_is_not_an_rtt_sample(self) -> None:
        """RFC 8985 §6.2 step 2: a retransmitted segment acknowledged faster than min_RTT does not update RACK."""
        rack = Rack(0.25)
        rack.on_sent(0, 1000, 0.0, False)
        rack.on_sent(0, 1000, 1.0, True)  # retransmitted at 1.0
        rack.on_ack(1000, [], 1.01, min_rtt=0.1)  # 10 ms later: the original's ACK
        assert rack.xmit_ts == -1.0


def _transfer(
    features: dict[str, object],
    size: int,
    *,
    drop_nth: int | None = None,
    drop_len: int | None = None,
    until: float = 120.0,
) -> tuple[bool, float, object]:
    """Send *size* bytes 10.0.0.1 -> 10.0.0.2 over a 20 ms path, dropping the *drop_nth* data segment
    (or the first datagram of *drop_len* bytes)."""
    sim = Simulation()
    a = make_stack("10.0.0.1/24", fault={"seed": 1})
    b = make_stack("10.0.0.2/24")
    sim.wire(a, b, delay=0.01)
    ta, tb = tcp_layer(a), tcp_layer(b)
    listener = tb.listen(80, options=TcpOptions(features=features, recv_buffer=1 << 20, initial_window="rfc5681"))
    conn = ta.connect(
        SERVER, 80, now=0.0, options=TcpOptions(features=features, recv_buffer=1 << 20, initial_window="rfc5681")
    )
    sim.run(condition=lambda: bool(listener.accept_queue), until=5.0)
    server = listener.accept()
    assert server is not None
    fault = a.layer("fault")
    assert isinstance(fault, FaultInjector)
    if drop_nth is not None:
        fault.add_rule("drop", direction="out", nth=drop_nth, match=lambda d: len(d) > 100)
    if drop_len is not None:
        fault.add_rule("drop", direction="out", match=lambda d: len(d) == drop_len)
        # ... and the full segment just before it, so no SACK can reveal the tail loss.
        fault.add_rule("drop", direction="out", nth=size // 1448, match=lambda d: len(d) == 1500)
    payload = data(size)
    conn.send(payload, sim.now)
    ta.touch(conn)
    start = sim.now
    got = bytearray()

    def step() -> bool:
        chunk = server.read()
        if chunk:
            got.extend(chunk)
            tb.touch(server)
        return len(got) == size

    sim.run(condition=step, until=until)
    return bytes(got) == payload, sim.now - start, conn


FEATURES = {"sack": {}, "timestamps": {}}


class TestTailLossProbe:
    def test_lost_last_segment_is_repaired_by_a_probe_not_the_rto(self) -> None:
        """RFC 8985 §7: when the last two segments of a flight are lost (no SACK can reveal it), a tail loss
        probe ~2*SRTT later brings the ACK that repairs them, well before the retransmission timeout."""
        size = 20 * 1448 + 100  # the tail: one 100-byte segment (20 + 32 header bytes with timestamps)
        ok1, with_tlp, conn = _transfer({**FEATURES, "rack_tlp": {}}, size, drop_len=152)
        ok2, without, _ = _transfer(FEATURES, size, drop_len=152)
        assert ok1 and ok2
        assert conn.loss_detector.probes >= 1  # type: ignore[attr-defined]
        assert with_tlp < without  # the RTO (at least 200 ms + backoff) is slower than 2*SRTT (~40 ms)


class TestRack:
    def test_loss_with_too_few_duplicate_acks_is_found_by_time(self) -> None:
        """RFC 8985 §6: a loss followed by only two segments (two duplicate ACKs, below DupThresh) is detected
        by time (RACK) instead of waiting for the RTO."""
        size = 4 * 1460
        ok1, with_rack, conn = _transfer({**FEATURES, "rack_tlp": {"tlp": False}}, size, drop_nth=2)
        ok2, without, _ = _transfer(FEATURES, size, drop_nth=2)
        assert ok1 and ok2
        assert conn.loss_detector.lost_marked >= 1  # type: ignore[attr-defined]
        assert with_rack < without

    def test_no_sack_means_no_rack(self) -> None:
        """RFC 8985 §3: RACK-TLP needs SACK; without it the feature installs nothing."""
        _, _, conn = _transfer({"rack_tlp": {}}, 1000)
        assert conn.loss_detector is None  # type: ignore[attr-defined]


class TestReorderingWindow:
    def test_reo_wnd_is_zero_in_recovery_until_reordering_is_seen(self) -> None:
        """RFC 8985 §6.2 steps 3-4: without observed reordering, reo_wnd is 0 during recovery; once a segment is
        delivered below RACK.end_seq it is min_RTT/4 again."""
        rack = Rack(0.25)
        assert rack.reo_wnd(0.1, 0.1, in_recovery=True) == 0.0
        assert rack.reo_wnd(0.1, 0.1) == 0.025
        rack.on_sent(0, 1000, 0.0, False)
        rack.on_sent(1000, 2000, 0.0, False)
        rack.on_ack(0, [(1000, 2000)], 0.1, min_rtt=0.1)
        rack.on_ack(2000, [], 0.11, min_rtt=0.1)  # the lower segment arrives after the higher one
        assert rack.reordering_seen
        assert rack.reo_wnd(0.1, 0.1, in_recovery=True) == 0.025

    def test_dsack_widens_reo_wnd_and_16_recoveries_reset_it(self) -> None:
        """RFC 8985 §6.2 step 4: a D-SACK (spurious retransmission) widens the window, at most SRTT; after 16
        recoveries without one it is back to min_RTT/4."""
        rack = Rack(0.25)
        rack.on_dsack()
        rack.on_dsack()  # once per round of recoveries
        assert rack.reo_wnd(0.1, 1.0) == 0.05
        assert rack.reo_wnd(0.1, 0.03) == 0.03  # capped at SRTT
        for _ in range(16):
            rack.on_recovery()
        assert rack.reo_wnd(0.1, 1.0) == 0.025


def test_a_closed_connection_keeps_no_rack_or_probe_timer() -> None:
    """RFC 9293 §3.10.5: ABORT deletes the TCB: get_timer() of a CLOSED connection is None, also with a tail loss
    probe armed (the PTO and RACK timers are cleared with the others)."""
    h = LayerHarness(features={"sack": {}, "rack_tlp": {}})
    h.tcp.listen(80)
    conn, _ = h.handshake(80, mss=1460, window=65535, options=bytes([4, 2, 1, 1]))  # SACK-permitted
    conn.send(b"x" * 3000, h.now)
    h.user(conn)
    assert h.output(t=0.0) and conn.get_timer() is not None
    conn.abort(0.0)
    assert conn.get_timer() is None
