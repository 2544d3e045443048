"""Window scaling (RFC 7323 §2; checklist H1, H2).

Three levels (design notes C8): :func:`shift_for` alone, one sans-IO connection negotiating with
a peer that does or does not offer the option, and the wiring (per-connection switch, a
transfer between two simulated stacks with 1 MiB buffers).
"""

from __future__ import annotations

import socket
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from layers.tcp.policy import TcpOptions
from plugins.window_scaling import MAX_SHIFT, WindowScaling, shift_for
from tests.layers.tcp.helpers import SEND, data, decode, recv, recv_nothing, send, tcp_layer
from tests.plugins.helpers import L1, R1, closed_with, established_with, make_stack, transfer

PEER = socket.inet_aton("10.0.0.2")
MIB = 1 << 20


def ack(**kw: object) -> object:
    """A segment from the peer acknowledging our SYN (seq R1 unless given)."""
    return replace(SEND, **{"seq": R1, "ack": L1, **kw})


# ====================================================================== 1. shift_for alone


class TestShiftFor:
    def test_examples(self) -> None:
        """RFC 7323 §2.3: the smallest shift that fits the receive buffer into 16 bits."""
        assert [shift_for(b) for b in (1, 65535, 65536, 131071, 131072, 1 << 19, MIB)] == [0, 0, 1, 1, 2, 4, 5]

    def test_capped_at_fourteen(self) -> None:
        """RFC 7323 §2.3: the shift count MUST be limited to 14."""
        assert shift_for(1 << 30) == MAX_SHIFT == 14

    @given(st.integers(min_value=1, max_value=1 << 30))
    def test_smallest_shift_that_fits(self, buffer: int) -> None:
        """RFC 7323 §2.3: ``buffer >> shift`` fits 16 bits and one less would not (unless capped at 14)."""
        s = shift_for(buffer)
        assert 0 <= s <= 14
        assert buffer >> s <= 0xFFFF or s == 14
        assert s == 0 or buffer >> (s - 1) > 0xFFFF


# ====================================================================== 2. on one connection


class TestNegotiation:
    def test_syn_carries_the_shift_of_the_receive_buffer_and_an_unscaled_window(self) -> None:
        """RFC 7323 §2.2-2.3: our SYN offers shift_for(recv_buffer); the window of a SYN is never scaled."""
        for buffer, shift in ((MIB, 5), (1 << 19, 4), (64, 0)):
            conn = closed_with({"window_scaling": {}}, passive=False, recv_buffer=buffer)
            conn.open_active(0.0)
            [syn] = recv(conn, t=0.0)
            assert (syn.wscale, syn.window) == (shift, min(buffer, 65535))

    def test_shift_setting_forces_the_offer(self) -> None:
        """RFC 7323 §2.3: ``shift`` forces the offered shift count."""
        conn = closed_with({"window_scaling": {"shift": 7}}, passive=False, recv_buffer=MIB)
        conn.open_active(0.0)
        assert recv(conn, t=0.0)[0].wscale == 7

    def test_without_the_feature_no_option_is_sent(self) -> None:
        """RFC 7323 §2.2: the option is an offer a TCP may make; without the feature our SYN has none."""
        conn = closed_with({}, passive=False, recv_buffer=MIB)
        conn.open_active(0.0)
        assert recv(conn, t=0.0)[0].wscale is None

    def test_syn_ack_carries_the_option_only_if_the_syn_had_it(self) -> None:
        """RFC 7323 §2.2: a SYN-ACK may carry Window Scale only if the peer's SYN did."""
        _, offered = established_with({"window_scaling": {}}, peer_wscale=7, recv_buffer=MIB)
        _, not_offered = established_with({"window_scaling": {}}, recv_buffer=MIB)
        assert offered.wscale == 5 and offered.window == 65535
        assert not_offered.wscale is None and not_offered.window == 65535

    def test_both_offered_scaling_is_in_force(self) -> None:
        """RFC 7323 §2.2: with both SYNs carrying the option, each side shifts by the other's count."""
        for active in (False, True):
            conn, _ = established_with({"window_scaling": {}}, active=active, peer_wscale=7, recv_buffer=MIB)
            assert (conn.snd_wscale, conn.rcv_wscale) == (7, 5)

    def test_peer_without_the_option_means_no_scaling_either_way(self) -> None:
        """RFC 7323 §2.2: scaling is used only when both offered; otherwise both shifts are 0."""
        for active in (False, True):
            conn, _ = established_with({"window_scaling": {}}, active=active, recv_buffer=MIB)
            assert (conn.snd_wscale, conn.rcv_wscale) == (0, 0)
            send(conn, t=0.0, seg=ack(window=1000))
            assert conn.snd_wnd == 1000  # the peer's window is taken as is
            send(conn, t=0.0, seg=ack(seq=R1, payload=b"x", window=1000))
            [seg] = recv(conn, t=0.0)
            assert seg.window == 65535  # our 1 MiB buffer cannot be advertised unscaled

    def test_our_offer_without_the_feature_on_the_peer_is_ignored(self) -> None:
        """RFC 7323 §2.2: a Window Scale option on a SYN we answer without the feature is not used."""
        conn, synack = established_with({}, peer_wscale=7, recv_buffer=MIB)
        assert synack.wscale is None and (conn.snd_wscale, conn.rcv_wscale) == (0, 0)

    def test_peer_shift_above_fourteen_is_used_as_fourteen(self) -> None:
        """RFC 7323 §2.3: a received shift.cnt above 14 MUST be used as 14."""
        conn, _ = established_with({"window_scaling": {}}, peer_wscale=15, recv_buffer=MIB)
        assert conn.snd_wscale == 14
        ext = next(e for e in conn.extensions if isinstance(e, WindowScaling))
        assert ext.peer_shift == 14 and ext.active
        send(conn, t=0.0, seg=ack(window=3))
        assert conn.snd_wnd == 3 << 14

    def test_syn_ack_window_is_not_scaled(self) -> None:
        """RFC 7323 §2.2: the window field of the SYN-ACK is taken unscaled, later ones are shifted."""
        conn, _ = established_with({"window_scaling": {}}, active=True, peer_wscale=7, peer_window=1000)
        assert conn.snd_wnd == 1000
        send(conn, t=0.0, seg=ack(window=1000))
        assert conn.snd_wnd == 128_000


class TestWindows:
    def test_peer_scaled_window_allows_more_than_64_kib_in_flight(self) -> None:
        """RFC 7323 §2.3: the peer's window field shifted by its count is honoured: > 64 KiB in flight."""
        conn, _ = established_with(
            {"window_scaling": {}}, active=True, peer_wscale=7, peer_mss=1460, send_buffer=MIB, recv_buffer=MIB
        )
        send(conn, t=0.0, seg=ack(window=1000))  # 128 000 bytes
        conn.cc.cwnd = MIB  # congestion control is not what this test is about
        conn.send(data(200_000), 0.0)
        segs = recv(conn, t=0.0)
        assert conn.in_flight == sum(len(s.payload) for s in segs) == 87 * 1460
        assert 65535 < conn.in_flight <= 128_000

    def test_advertised_field_is_free_space_shifted_and_rounded_up(self) -> None:
        """RFC 7323 §2.3-2.4: SEG.WND is the receive window shifted right, rounded up so the edge never retracts."""
        conn, synack = established_with({"window_scaling": {}}, peer_wscale=0, recv_buffer=200_000)
        assert conn.rcv_wscale == 2 and synack.window == 65535
        send(conn, t=0.0, seg=ack(payload=data(1001)))
        [a] = recv(conn, t=0.0)
        assert (a.ack, a.window) == (R1 + 1001, 49750)  # ceil(198 999 / 4); floor would be 49749
        assert a.ack + (a.window << 2) == R1 + 200_001  # not below the 198 999 bytes free
        send(conn, t=0.001, seg=ack(seq=R1 + 1001, payload=data(3)))
        [b] = recv(conn, t=0.001)
        assert b.ack + (b.window << 2) >= a.ack + (a.window << 2)

    @given(st.lists(st.tuples(st.integers(1, 5000), st.booleans()), min_size=1, max_size=40))
    def test_right_edge_never_moves_left(self, steps: list[tuple[int, bool]]) -> None:
        """RFC 7323 §2.4 (checklist H2): whatever arrives and is read, ACK + (SEG.WND << shift) never decreases
        and is never below the window the receiver computed."""
        conn, _ = established_with({"window_scaling": {}}, peer_wscale=0, recv_buffer=150_001)
        shift = conn.rcv_wscale
        assert shift == 2
        edge = conn.rcv_adv
        t = 0.0
        for n, read in steps:
            t += 0.001
            room = conn.rcv_adv - conn.rcv_nxt
            if room > 0:
                seq = conn.rcv_nxt
                send(conn, t=t, seg=ack(seq=seq, payload=data(min(n, room))))
                window = min(conn._window_to_advertise(), 0xFFFF << shift)
                for seg in recv(conn, t=t):
                    right = seg.ack + (seg.window << shift)
                    assert right >= edge
                    assert seg.window << shift >= window
                    assert seg.window == min(-(-window // (1 << shift)), 0xFFFF)
                    edge = right
            if read:
                conn.read()
                for seg in recv(conn, t=t):
                    right = seg.ack + (seg.window << shift)
                    assert right >= edge
                    edge = right

    def test_reading_without_scaling_never_repeats_the_last_ack(self) -> None:
        """RFC 7323 §2.3 and RFC 5681 §2: unscaled, a 512 KiB buffer advertises 65535; reading frees space the
        field cannot show, so no window update (it would repeat the last ACK and look like a duplicate ACK)."""
        conn, _ = established_with({}, recv_buffer=1 << 19)
        send(conn, t=0.0, seg=ack(payload=data(1460)))
        [a] = recv(conn, t=0.0)
        assert a.window == 65535
        assert conn.read() == data(1460)
        recv_nothing(conn, t=0.001)

    def test_reading_a_nearly_full_buffer_updates_the_window_at_once(self) -> None:
        """RFC 9293 §3.8.6.2.2: a read that reopens a window the sender sees as nearly closed is advertised at
        once (the sender is blocked), scaled by our shift."""
        conn, _ = established_with({"window_scaling": {}}, peer_wscale=0, recv_buffer=150_001)
        for i in range(102):
            send(conn, t=0.0, seg=ack(seq=R1 + i * 1460, payload=data(1460)))
            recv(conn, t=0.0)
        assert conn.rcv_nxt == R1 + 148_920
        assert conn.rcv_adv - conn.rcv_nxt < 1460  # about 150 001 - 148 920: less than a segment
        conn.read()
        [update] = recv(conn, t=0.001)
        assert update.ack == R1 + 148_920 and update.window << 2 >= 150_001


# ====================================================================== 3. wiring


class TestWiring:
    def syn_of(self, **features: object) -> object:
        stack = make_stack(default_features=True, recv_buffer=MIB)
        conn = tcp_layer(stack).connect(PEER, 80, now=0.0, options=TcpOptions(recv_buffer=MIB, features=features))
        [frame] = stack.frames_to_send(now=0.0)
        assert conn.state.value == "SYN-SENT"
        return decode(frame)[1]

    def test_on_by_default_with_per_connection_override(self) -> None:
        """RFC 7323 §2.2: the default set offers scaling; ``shift`` and ``None`` change it per connection."""
        assert self.syn_of().wscale == 5
        assert self.syn_of(window_scaling={"shift": 9}).wscale == 9
        assert self.syn_of(window_scaling=None).wscale is None

    def test_transfer_with_one_mib_buffers(self) -> None:
        """RFC 7323 §2 (checklist H1): two stacks with 1 MiB buffers over a 20 ms RTT path scale their windows
        (shift 5 both ways) and keep several times 64 KiB in flight; without scaling the flight stays under 64 KiB."""
        payload = data(4_000_000)

        def run(features: dict[str, object]) -> tuple[int, float, tuple[int, int]]:
            kw = {"features": features, "recv_buffer": MIB, "send_buffer": MIB}
            a, b = make_stack(**kw), make_stack("10.0.0.2/24", **kw)
            peak = [0]

            def on_step(now: float) -> None:
                for conn in tcp_layer(a).connections.values():
                    peak[0] = max(peak[0], conn.in_flight)

            sim, client, server = transfer(a, b, payload, delay=0.01, bandwidth=50e6, on_step=on_step)
            assert client.conn is not None and server.conn is not None
            assert (client.conn.snd_wscale, client.conn.rcv_wscale) == (server.conn.rcv_wscale, server.conn.snd_wscale)
            return peak[0], sim.now, (client.conn.snd_wscale, client.conn.rcv_wscale)

        scaled_peak, scaled_time, shifts = run({"window_scaling": {}})
        plain_peak, plain_time, plain_shifts = run({})
        assert shifts == (5, 5) and plain_shifts == (0, 0)
        assert scaled_peak > 4 * 65535, scaled_peak
        assert plain_peak <= 65535, plain_peak
        assert scaled_time < plain_time / 3, (scaled_time, plain_time)
