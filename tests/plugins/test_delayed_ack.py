"""Delayed ACK (RFC 1122 §4.2.3.2; RFC 9293 §3.8.6.3 SHLD-18, MUST-40, SHLD-19; RFC 5681 §4.2).

Three levels (design notes C8): the :class:`DelayedAck` policy alone, one sans-IO connection
driven at explicit times, and the wiring through stacks and plugin hosts. No clock exists in
the core, so every time here is an explicit float.
"""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from framework.errors import ConfigError
from framework.settings import validate_settings
from layers.tcp.policy import AckPolicy, TcpOptions, TcpSetup
from plugins.delayed_ack import DelayedAck, DelayedAckSettings
from tcpstack.plugins import PluginHost, hookimpl
from tests.layers.tcp.helpers import RECV, REMOTE_PORT, SEND, LayerHarness, data, recv, recv_nothing, send, tcp_layer
from tests.plugins.helpers import L1, R1, established_with, make_stack, stack_from_host

PEER = socket.inet_aton("10.0.0.2")


def policy(timeout: float = 0.04, segments: int = 2, mss: int = 1000) -> DelayedAck:
    return DelayedAck(DelayedAckSettings(timeout=timeout, segments=segments), mss)


# ====================================================================== 1. the policy alone


class TestPolicy:
    def test_lone_segment_waits_at_most_the_timeout(self) -> None:
        """RFC 1122 §4.2.3.2 (MUST-40): the ACK of a lone segment is due *timeout* after it arrived."""
        assert policy(timeout=0.04).on_data(100, now=1.0) == pytest.approx(1.04)

    def test_second_full_segment_is_acked_at_once(self) -> None:
        """RFC 9293 §3.8.6.3 SHLD-19: an ACK for at least every second full-sized segment."""
        p = policy(mss=1000)
        assert p.on_data(1000, now=0.0) == pytest.approx(0.04)
        assert p.on_data(1000, now=0.01) is None

    def test_small_segments_keep_waiting(self) -> None:
        """RFC 1122 §4.2.3.2: only full-sized segments force the ACK; small ones wait for the deadline."""
        p = policy(mss=1000)
        for i in range(10):
            assert p.on_data(50, now=i * 0.001) is not None

    def test_full_segment_less_its_options_counts_as_full(self) -> None:
        """RFC 5681 §2 and RFC 6691 §2: the peer's full-sized segment is our MSS less its options (1448 with
        timestamps), so two of them are ACKed at once."""
        p = policy(mss=1460)
        assert p.on_data(1448, now=0.0) is not None
        assert p.on_data(1448, now=0.001) is None

    def test_segments_setting_sets_the_count(self) -> None:
        """RFC 1122 §4.2.3.2: ``segments = 3`` ACKs at once only at the third full-sized segment."""
        p = policy(segments=3, mss=1000)
        assert p.on_data(1000, now=0.0) is not None
        assert p.on_data(1000, now=0.001) is not None
        assert p.on_data(1000, now=0.002) is None

    def test_ack_sent_resets_the_count(self) -> None:
        """RFC 9293 §3.8.6.3: counting starts again after any ACK left (pure or piggy-backed)."""
        p = policy(mss=1000)
        assert p.on_data(1000, now=0.0) is not None
        p.on_ack_sent()
        assert p.on_data(1000, now=0.1) == pytest.approx(0.14)
        assert p.on_data(1000, now=0.11) is None

    @pytest.mark.parametrize("timeout", [0.0, -0.1, 0.5, 0.6, 5.0])
    def test_timeout_outside_zero_to_half_a_second_is_rejected(self, timeout: float) -> None:
        """RFC 1122 §4.2.3.2 (MUST-40): "the delay MUST be less than 0.5 seconds", and more than 0."""
        problems: list[str] = []
        assert validate_settings(DelayedAckSettings, {"timeout": timeout}, "features.delayed_ack", problems) is None
        assert problems == ["features.delayed_ack.timeout: must be more than 0 and less than 0.5 s (RFC 1122 §4.2.3.2)"]

    @pytest.mark.parametrize("timeout", [0.001, 0.04, 0.2, 0.499])
    def test_timeout_inside_the_range_is_accepted(self, timeout: float) -> None:
        """RFC 1122 §4.2.3.2: any delay in (0, 0.5) s is valid."""
        problems: list[str] = []
        obj = validate_settings(DelayedAckSettings, {"timeout": timeout}, "features.delayed_ack", problems)
        assert problems == [] and obj is not None and obj.timeout == timeout

    def test_segments_out_of_range_is_rejected(self) -> None:
        """RFC 9293 SHLD-19: ``segments`` is a count of at least one full-sized segment."""
        problems: list[str] = []
        assert validate_settings(DelayedAckSettings, {"segments": 0}, "features.delayed_ack", problems) is None
        assert problems == ["features.delayed_ack.segments: 0 is out of range [1, 16]"]


# ====================================================================== 2. on one connection


def payload_seg(offset: int, n: int, **kw: object) -> object:
    return replace(SEND, seq=R1 + offset, ack=L1, payload=data(n, offset), **kw)


class TestOnConnection:
    def test_lone_segment_is_acked_at_the_deadline_not_before(self) -> None:
        """RFC 1122 §4.2.3.2: a lone data segment is ACKed when the delay expires, not before."""
        conn, _ = established_with({"delayed_ack": {"timeout": 0.01}})
        send(conn, t=0.0, seg=payload_seg(0, 3))
        recv_nothing(conn, t=0.0)
        assert conn.get_timer() == pytest.approx(0.01)
        recv_nothing(conn, t=0.0099)
        assert recv(conn, t=0.01) == [replace(RECV, seq=L1, ack=R1 + 3, window=61)]
        recv_nothing(conn, t=0.02)

    def test_without_the_feature_the_ack_leaves_at_once(self) -> None:
        """RFC 9293 §3.10.7.4 (the default AckPolicy): without delayed ACK, in-order data is ACKed at once."""
        conn, _ = established_with({})
        send(conn, t=0.0, seg=payload_seg(0, 3))
        assert recv(conn, t=0.0) == [replace(RECV, seq=L1, ack=R1 + 3, window=61)]

    def test_deadline_counts_from_the_first_unacknowledged_segment(self) -> None:
        """RFC 1122 §4.2.3.2 (MUST-40): later small segments do not push the ACK past 0.5 s from the first."""
        conn, _ = established_with({"delayed_ack": {"timeout": 0.4}})
        for i in range(4):
            send(conn, t=i * 0.1, seg=payload_seg(i, 1))
            recv_nothing(conn, t=i * 0.1)
        assert conn.get_timer() == pytest.approx(0.4)
        assert recv(conn, t=0.4) == [replace(RECV, seq=L1, ack=R1 + 4, window=60)]

    def test_two_full_segments_are_acked_at_once(self) -> None:
        """RFC 9293 §3.8.6.3 SHLD-19: the second full-sized segment is ACKed at once, without the timer."""
        conn, _ = established_with({"delayed_ack": {}}, recv_buffer=8192)
        send(conn, t=0.0, seg=payload_seg(0, 1460))
        recv_nothing(conn, t=0.0)
        send(conn, t=0.001, seg=payload_seg(1460, 1460))
        [ack] = recv(conn, t=0.001)
        assert ack.ack == R1 + 2920 and not ack.payload
        assert conn.get_timer() is None

    def test_two_full_timestamped_segments_are_acked_at_once(self) -> None:
        """RFC 9293 SHLD-19 with RFC 7323 §3.2: segments of MSS - 12 bytes are the peer's full-sized ones."""
        conn, synack = established_with({"delayed_ack": {}, "timestamps": {}}, peer_ts=500, recv_buffer=8192)
        ecr = synack.ts[0] if synack.ts else 0
        send(conn, t=0.0, seg=payload_seg(0, 1448, ts=(501, ecr)))
        recv_nothing(conn, t=0.0)
        send(conn, t=0.001, seg=payload_seg(1448, 1448, ts=(502, ecr)))
        [ack] = recv(conn, t=0.001)
        assert ack.ack == R1 + 2896
        assert ack.ts is not None and ack.ts[1] == 501  # RFC 7323 §4.3: the earliest unacknowledged

    def test_bulk_receive_acks_every_second_segment(self) -> None:
        """RFC 5681 §4.2 (checklist A4): a stream of full-sized segments gets one ACK per two segments."""
        conn, _ = established_with({"delayed_ack": {}}, recv_buffer=1 << 16)
        acks = []
        for i in range(10):
            t = i * 0.002
            send(conn, t=t, seg=payload_seg(i * 1460, 1460))
            acks += recv(conn, t=t)
            conn.read()
        assert [a.ack - R1 for a in acks] == [2920, 5840, 8760, 11680, 14600]

    def test_out_of_order_data_is_acked_at_once(self) -> None:
        """RFC 5681 §4.2: an out-of-order segment gets an immediate duplicate ACK despite delayed ACK."""
        conn, _ = established_with({"delayed_ack": {"timeout": 0.2}})
        send(conn, t=0.0, seg=payload_seg(10, 10))
        assert recv(conn, t=0.0) == [replace(RECV, seq=L1, ack=R1, window=64)]

    def test_data_filling_a_hole_is_acked_at_once(self) -> None:
        """RFC 5681 §4.2: a segment that fills a gap is ACKed at once, covering everything now in order."""
        conn, _ = established_with({"delayed_ack": {"timeout": 0.2}})
        send(conn, t=0.0, seg=payload_seg(10, 10))
        recv(conn, t=0.0)
        send(conn, t=0.001, seg=payload_seg(0, 10))
        assert recv(conn, t=0.001) == [replace(RECV, seq=L1, ack=R1 + 20, window=44)]

    def test_window_update_that_matters_is_sent_at_once(self) -> None:
        """RFC 9293 §3.8.6.2.2: reading a full buffer reopens the window, which is advertised at once."""
        conn, _ = established_with({"delayed_ack": {"timeout": 0.2}})
        send(conn, t=0.0, seg=payload_seg(0, 64))
        recv_nothing(conn, t=0.0)
        assert conn.read() == data(64)
        assert recv(conn, t=0.001) == [replace(RECV, seq=L1, ack=R1 + 64, window=64)]

    def test_ack_piggybacked_on_data_cancels_the_delayed_ack(self) -> None:
        """RFC 1122 §4.2.3.2: an ACK carried by our data satisfies the pending delayed ACK."""
        conn, _ = established_with({"delayed_ack": {"timeout": 0.04}})
        send(conn, t=0.0, seg=payload_seg(0, 3))
        recv_nothing(conn, t=0.0)
        conn.send(b"reply", 0.01)
        [seg] = recv(conn, t=0.01)
        assert seg.payload == b"reply" and seg.ack == R1 + 3
        recv_nothing(conn, t=0.05)  # no separate ACK at the old deadline (0.04)
        assert conn.ack_policy.on_data(1, 0.02) == pytest.approx(0.06)  # counting restarted


# ====================================================================== 3. wiring


class TestWiring:
    def test_on_by_default_and_off_for_one_connection(self) -> None:
        """docs/plugins.md (RFC 1122 §4.2.3.2): the default set delays ACKs; ``features={"delayed_ack": None}``
        turns it off on one connection of the same stack only."""
        stack = make_stack(default_features=True)
        tcp = tcp_layer(stack)
        plain = tcp.connect(PEER, 80, now=0.0, options=TcpOptions(features={"delayed_ack": None}))
        default = tcp.connect(PEER, 81, now=0.0)
        assert type(plain.ack_policy) is AckPolicy and "delayed_ack" not in plain.features
        assert isinstance(default.ack_policy, DelayedAck) and default.ack_policy.timeout == 0.04

    def test_listener_enables_it_for_its_connections_only(self) -> None:
        """RFC 1122 §4.2.3.2: a listener's ``features`` delay the ACKs of the connections it accepts; another
        listener of the same stack ACKs at once."""
        h = LayerHarness()  # default_features = false
        h.tcp.listen(80, options=TcpOptions(features={"delayed_ack": {"timeout": 0.01}}))
        h.tcp.listen(81)
        delayed, synack80 = h.handshake(80, remote_port=REMOTE_PORT)
        plain, synack81 = h.handshake(81, remote_port=REMOTE_PORT + 1)
        assert isinstance(delayed.ack_policy, DelayedAck) and type(plain.ack_policy) is AckPolicy
        out = h.inject(
            replace(SEND, dst_port=81, src_port=REMOTE_PORT + 1, seq=R1, ack=synack81.seq + 1, payload=b"x"), t=0.1
        )
        assert [s.ack for s in out] == [R1 + 1]
        assert h.inject(replace(SEND, dst_port=80, seq=R1, ack=synack80.seq + 1, payload=b"x"), t=0.1) == []
        assert [(round(t, 6), s.ack) for t, s in h.advance(0.2)] == [(0.11, R1 + 1)]

    def test_two_plugins_claiming_ack_policy_is_a_plugin_error(self) -> None:
        """docs/hooks.md (``TcpSetup.claim``): two plugins setting ack_policy on one connection is a PluginError
        naming both, not last-wins, found when the configuration or the call names them (not on every SYN);
        with delayed ACK off the other plugin owns the slot alone."""

        class QuickAck:
            @hookimpl
            def tcp_connection_setup(self, setup: TcpSetup) -> None:
                setup.claim("ack_policy", by="quickack")
                setup.ack_policy = AckPolicy()

        host = PluginHost(entry_points=False, extra=[QuickAck()])
        both = r"'(delayed_ack|quickack)' and '(quickack|delayed_ack)' both want to set ack_policy"
        # As the stack's default: the configuration is refused (a trial setup), not every connection later.
        with pytest.raises(ConfigError, match=r"layers\[2\]\.features: " + both):
            stack_from_host(host, features={"delayed_ack": {}})
        # For one connection: the call is refused before anything is built.
        tcp = tcp_layer(stack_from_host(host))
        with pytest.raises(ValueError, match=both):
            tcp.connect(PEER, 80, now=0.0, options=TcpOptions(features={"delayed_ack": {}}))
        assert tcp.connections == {}  # nothing half-built is left behind
        conn = tcp.connect(PEER, 80, now=0.0)
        assert type(conn.ack_policy) is AckPolicy and conn.setup.claims == {"ack_policy": "quickack"}
