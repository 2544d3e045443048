"""Decision logs: every policy says at debug level why it acted (``tcp.decision`` events that
name the connection, the plugin and the RFC), so a user can read why an ACK was delayed."""

from __future__ import annotations

from layers.tcp.congestion import CongestionControl
from layers.tcp.policy import decision_log
from plugins.delayed_ack import DelayedAck, DelayedAckSettings
from plugins.nagle import Nagle, NagleSettings


def _decisions(log_output: object) -> list[dict[str, object]]:
    return [e for e in log_output.entries if e["event"] == "tcp.decision"]  # type: ignore[attr-defined]


def test_delayed_ack_logs_delay_and_immediate_ack(log_output) -> None:
    """RFC 1122 §4.2.3.2 / RFC 9293 §3.8.6.3: a delayed ACK and the second-segment ACK are both logged."""
    p = DelayedAck(DelayedAckSettings(timeout=0.04), mss=1460, log=decision_log("c1", "delayed_ack"))
    assert p.on_data(1448, now=1.0) == 1.04
    assert p.on_data(1448, now=1.01) is None
    first, second = _decisions(log_output)
    assert first["decision"] == "ACK delayed" and first["deadline"] == 1.04 and first["conn"] == "c1"
    assert first["plugin"] == "delayed_ack" and "RFC 1122" in str(first["rfc"])
    assert second["decision"] == "ACK now" and second["t"] == 1.01


def test_nagle_logs_held_segment(log_output) -> None:
    """RFC 896 / RFC 9293 §3.7.4: a short segment held by Nagle is logged with the bytes in flight."""
    p = Nagle(NagleSettings(), log=decision_log("c2", "nagle"))
    assert not p.may_send_small(10, in_flight=100, now=2.0)
    [e] = _decisions(log_output)
    assert e["conn"] == "c2" and e["plugin"] == "nagle" and e["t"] == 2.0


def test_congestion_reduction_is_logged(log_output) -> None:
    """RFC 5681 §3.1: a retransmission timeout that collapses cwnd to one segment is logged."""
    cc = CongestionControl(1000)
    cc.log = decision_log("c3", "reno")
    cc.on_timeout(in_flight=8000, now=3.0)
    [e] = _decisions(log_output)
    assert e["decision"] == "cwnd reduced" and e["cwnd"] == 1000 and e["ssthresh"] == 4000
    assert e["reason"] == "retransmission timeout" and e["conn"] == "c3"
