"""Congestion window validation (RFC 9438 §5.8, RFC 7661 §4.2): cwnd grows only while it limits the
sender, so an application-limited or receive-window-limited flow keeps a cwnd that says something about
the path. Two stacks on a simulated wire (the plugin-author kit's StackPair), explicit virtual time."""

from __future__ import annotations

import pytest

from layers.tcp.congestion import initial_window
from layers.tcp.sender import cwnd_in_use
from tcpstack.testing import StackPair


@pytest.mark.parametrize("algorithm", ["reno", "cubic"])
def test_application_limited_sender_keeps_its_initial_window(algorithm: str) -> None:
    """100 bytes per RTT for 200 RTTs: every byte is acknowledged, yet cwnd never grows (it would have
    grown by each ACKed byte in slow start before validation)."""
    pair = StackPair(delay=0.01)
    conn = pair.open(congestion_control=algorithm)
    client = conn.client_conn
    iw = client.cc.cwnd
    for _ in range(200):
        conn.send(b"x" * 100)
        pair.run_for(0.05)
    assert len(conn.server.received) == 20_000
    assert client.cc.cwnd == iw == initial_window(client.snd_mss, "rfc5681")


@pytest.mark.parametrize("algorithm", ["reno", "cubic"])
def test_bulk_sender_still_grows_cwnd(algorithm: str) -> None:
    """The same pair writing 2 MB at once is cwnd-limited: slow start grows cwnd far beyond IW."""
    pair = StackPair(delay=0.01)
    conn = pair.open(congestion_control=algorithm)
    iw = conn.client_conn.cc.cwnd
    conn.send(bytes(2_000_000))
    assert pair.run_for(30.0, condition=lambda: len(conn.server.received) == 2_000_000)
    assert conn.client_conn.cc.cwnd > 20 * iw


def test_receive_window_limited_sender_stops_growing_near_twice_the_flight() -> None:
    """A 16 KiB receive buffer bounds the flight; slow start stops once cwnd is twice the largest
    flight, instead of inflating cwnd by every ACKed byte of a 2 MB transfer."""
    pair = StackPair(delay=0.01, server_tcp={"recv_buffer": 16384})
    conn = pair.open(congestion_control="reno")
    conn.send(bytes(2_000_000))
    assert pair.run_for(60.0, condition=lambda: len(conn.server.received) == 2_000_000)
    client = conn.client_conn
    assert client.cc.cwnd <= 2 * 16384 + 2 * client.snd_mss, client.cc.cwnd


def test_a_blocked_sender_in_slow_start_grows_even_with_a_small_flight() -> None:
    """Linux's tcp_is_cwnd_limited: cwnd held data back (one segment after a timeout, say) counts first, so
    the next ACK grows cwnd even though the largest flight is below half of it."""
    pair = StackPair(delay=0.01)
    conn = pair.open(congestion_control="reno").client_conn
    conn._cwnd_limited, conn._max_flight = True, 100
    conn.cc.cwnd, conn.cc.ssthresh = conn.snd_mss, 1 << 30
    assert cwnd_in_use(conn)
    conn._cwnd_limited = False
    assert not cwnd_in_use(conn)
