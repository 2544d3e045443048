"""The one info line per connection (``tcp.closed``): when the connection ends for the user."""

from __future__ import annotations

from dataclasses import replace

from structlog.testing import LogCapture

from layers.tcp.state import TcpState
from layers.tcp.wire import ACK
from tests.layers.tcp.helpers import SEND, last_ack, recv, send, time_wait


def _closed(log: LogCapture) -> list[dict[str, object]]:
    return [e for e in log.entries if e["event"] == "tcp.closed"]


def test_time_wait_logs_the_summary_on_entry_and_not_again(log_output: LogCapture) -> None:
    """The active closer's line comes when TIME-WAIT starts, not 2 MSL later (RFC 9293 §3.6)."""
    conn = time_wait()
    (line,) = _closed(log_output)
    assert line["state"] == "TIME-WAIT" and line["reason"] == "normal" and line["log_level"] == "info"
    assert line["bytes_in"] == conn.bytes_received and line["bytes_out"] == conn.bytes_sent
    assert {"duration", "retransmits", "srtt", "cwnd", "congestion", "features", "conn"} <= set(line)
    recv(conn, t=2 * conn.options.msl + 1)  # the 2 MSL timer deletes the TCB
    assert conn.state is TcpState.CLOSED
    assert len(_closed(log_output)) == 1


def test_passive_close_logs_the_summary_at_closed(log_output: LogCapture) -> None:
    """LAST-ACK + the ACK of our FIN: CLOSED, one line with state CLOSED."""
    conn = last_ack()
    assert _closed(log_output) == []
    send(conn, t=0.5, seg=replace(SEND, seq=conn.rcv_nxt, ack=conn.snd_max, flags=ACK))
    assert conn.state is TcpState.CLOSED
    (line,) = _closed(log_output)
    assert line["state"] == "CLOSED" and line["duration"] == 0.5
