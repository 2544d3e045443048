"""RST processing and blind in-window attacks (RFC 9293 §3.5.2-3, §3.10.7.4 "Second"/"Fourth";
RFC 5961 §3-4, §7), ABORT (§3.10.5), and the response matrix of the checklist (§5.1)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

import pytest

from layers.tcp.connection import TcpConnection
from layers.tcp.events import ConnectionClosed, ConnectionFailed
from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, PSH, RST, SYN
from tests.layers.tcp.helpers import (
    L1,
    R1,
    RECV,
    REMOTE_SEQ,
    SEND,
    close_wait,
    closing,
    data,
    established,
    events,
    fin_wait_1,
    fin_wait_2,
    last_ack,
    recv,
    recv_nothing,
    send,
    syn_received,
    syn_sent,
    time_wait,
)

S = TcpState
RESET = ConnectionFailed("reset", "connection reset by peer")

# State constructor -> events a RST at RCV.NXT produces (checklist §5.1, first row).
SYNCHRONIZED: list[tuple[Callable[[], TcpConnection], list[object]]] = [
    (established, [RESET, ConnectionClosed()]),
    (fin_wait_1, [RESET, ConnectionClosed()]),
    (fin_wait_2, [RESET, ConnectionClosed()]),
    (close_wait, [RESET, ConnectionClosed()]),
    (closing, [ConnectionClosed()]),  # CLOSING / LAST-ACK: delete the TCB; the user already closed
    (last_ack, [ConnectionClosed()]),
    (partial(time_wait, rfc1337=False), []),  # ConnectionClosed was given on entering TIME-WAIT
]
IDS = [getattr(f, "__name__", "time_wait") for f, _ in SYNCHRONIZED]


def rst(conn: TcpConnection, offset: int = 0, *, flags: int = RST, payload: bytes = b"") -> object:
    return replace(SEND, seq=(conn.rcv_nxt + offset) & 0xFFFFFFFF, ack=conn.snd_max, flags=flags, payload=payload)


class TestRstMatrix:
    @pytest.mark.parametrize("flags", [RST, RST | ACK], ids=["rst", "rst-ack"])
    @pytest.mark.parametrize(("make", "expected"), SYNCHRONIZED, ids=IDS)
    def test_rst_at_rcv_nxt_closes(self, make: Callable[[], TcpConnection], expected: list[object], flags: int) -> None:
        """RFC 9293 §3.10.7.4 "Second", RFC 5961 §3.2 (R2, R6): a RST exactly at RCV.NXT resets;
        CLOSING/LAST-ACK/TIME-WAIT just delete the TCB."""
        conn = make()
        send(conn, t=0.5, seg=rst(conn, flags=flags))
        assert conn.state is S.CLOSED
        recv_nothing(conn, t=0.5)  # never answer a RST (R10)
        assert events(conn) == expected
        assert conn.get_timer() is None

    @pytest.mark.parametrize(("make", "expected"), SYNCHRONIZED, ids=IDS)
    def test_rst_in_window_but_not_at_rcv_nxt_gets_challenge_ack(
        self, make: Callable[[], TcpConnection], expected: list[object]
    ) -> None:
        """RFC 5961 §3.2 (R2): a RST in the window but not at RCV.NXT -> <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>; the
        connection stays."""
        conn = make()
        state = conn.state
        send(conn, t=0.5, seg=rst(conn, 1))
        [ack] = recv(conn, t=0.5)
        assert (ack.flags, ack.seq, ack.ack) == (ACK, conn.snd_max, conn.rcv_nxt)
        assert conn.state is state and events(conn) == []

    @pytest.mark.parametrize("offset", [-1, 64, 5000, -5000])
    @pytest.mark.parametrize(("make", "expected"), SYNCHRONIZED, ids=IDS)
    def test_rst_outside_window_is_dropped_silently(
        self, make: Callable[[], TcpConnection], expected: list[object], offset: int
    ) -> None:
        """RFC 9293 §3.5.3 (R1): a RST outside the window is dropped without any reply (no ACK for an unacceptable
        RST)."""
        conn = make()
        state = conn.state
        send(conn, t=0.5, seg=rst(conn, offset))
        recv_nothing(conn, t=0.5)
        assert conn.state is state

    def test_rst_in_passive_syn_received_is_quiet(self) -> None:
        """RFC 9293 §3.10.7.4 "Second", MUST-11 (R6): passive SYN-RECEIVED -> back to LISTEN; no failure for a
        never-seen connection."""
        conn = syn_received()
        send(conn, t=0.5, seg=rst(conn))
        assert conn.state is S.CLOSED and events(conn) == [ConnectionClosed()]

    def test_rst_in_syn_sent_depends_on_its_ack(self) -> None:
        """RFC 9293 §3.10.7.3 (checklist §5.1, SYN-SENT column): valid only if its ACK acknowledges our SYN."""
        conn = syn_sent()
        send(conn, t=0.5, seg=replace(SEND, seq=0, ack=L1, flags=RST))  # ACK bit off: ignored
        assert conn.state is S.SYN_SENT
        send(conn, t=0.5, seg=replace(SEND, seq=0, ack=L1, flags=RST | ACK))
        assert conn.state is S.CLOSED


class TestOtherMatrixRows:
    @pytest.mark.parametrize(("make", "expected"), SYNCHRONIZED, ids=IDS)
    def test_ack_of_unsent_data_is_acked_and_dropped(self, make: Callable[[], TcpConnection], expected: object) -> None:
        """RFC 9293 §3.10.7.4 "Fifth" (checklist §5.1, "ACK > SND.NXT"): in every synchronized state -> ACK, drop."""
        conn = make()
        state = conn.state
        send(conn, t=0.5, seg=replace(SEND, seq=conn.rcv_nxt, ack=conn.snd_max + 100))
        [ack] = recv(conn, t=0.5)
        assert (ack.flags, ack.seq, ack.ack) == (ACK, conn.snd_max, conn.rcv_nxt)
        assert conn.state is state

    @pytest.mark.parametrize(("make", "expected"), SYNCHRONIZED, ids=IDS)
    def test_data_outside_the_window_is_acked_and_dropped(
        self, make: Callable[[], TcpConnection], expected: object
    ) -> None:
        """RFC 9293 §3.10.7.4 "First" (checklist §5.1, "data outside window"): in every synchronized state -> ACK,
        drop."""
        conn = make()
        state = conn.state
        send(conn, t=0.5, seg=replace(SEND, seq=conn.rcv_nxt + 1000, ack=conn.snd_max, payload=b"far away"))
        [ack] = recv(conn, t=0.5)
        assert (ack.flags, ack.seq, ack.ack) == (ACK, conn.snd_max, conn.rcv_nxt)
        assert conn.state is state and conn.readable == 0


class TestResetDetails:
    def test_rst_with_payload_is_accepted(self) -> None:
        """RFC 9293 §3.5.3, SHLD-2 (R8): a RST may carry data (a diagnostic); it resets all the same."""
        conn = established()
        send(conn, t=0.5, seg=rst(conn, payload=b"diagnostic: go away"))
        assert conn.state is S.CLOSED
        assert events(conn)[0] == RESET
        assert conn.readable == 0

    def test_reset_flushes_both_queues(self) -> None:
        """RFC 9293 §3.10.7.4 "Second" (R6): "all segment queues should be flushed"."""
        conn = established()
        conn.send(b"pending", 0.0)
        recv(conn, t=0.0)
        send(conn, t=0.1, seg=replace(SEND, seq=R1, ack=L1, payload=b"unread"))
        send(conn, t=0.1, seg=replace(SEND, seq=R1 + 6, ack=0, flags=RST))
        assert conn.readable == 0 and len(conn.sndbuf) == 0

    def test_no_send_space_event_survives_a_reset_in_the_same_batch(self) -> None:
        """RFC 9293 §3.10.7.4 "Second": a reset flushes the send queue, so a SendSpaceAvailable queued by an ACK
        earlier in the batch is dropped: the user hears reset, then closed, and is never invited to send on a CLOSED
        TCB."""
        conn = established()
        conn.send(b"0123456789", 0.0)
        recv(conn, t=0.0)
        send(conn, t=0.1, seg=[replace(SEND, seq=R1, ack=L1 + 10), replace(SEND, seq=R1, ack=0, flags=RST)])
        assert events(conn) == [RESET, ConnectionClosed()]

    def test_ack_bit_and_ack_value_of_a_rst_are_irrelevant_in_synchronized_states(self) -> None:
        """RFC 9293 §3.10.7.4 "Second": only the sequence number validates a RST in synchronized states."""
        conn = established()
        send(conn, t=0.5, seg=replace(SEND, seq=R1, ack=0xDEADBEEF, flags=RST | ACK | PSH))
        assert conn.state is S.CLOSED


class TestBlindAttacks:
    def test_syn_in_established_gets_challenge_ack_and_the_connection_survives(self) -> None:
        """RFC 5961 §4.2, RFC 9293 §3.10.7.4 "Fourth" (R3): a SYN in a synchronized state -> challenge ACK, no reset."""
        conn = established()
        send(conn, t=0.5, seg=replace(SEND, seq=R1 + 10, ack=0, flags=SYN))
        assert recv(conn, t=0.5) == [replace(RECV, seq=L1, ack=R1)]
        assert conn.state is S.ESTABLISHED and events(conn) == []
        send(conn, t=0.6, seg=replace(SEND, seq=R1, ack=L1, payload=b"still here"))
        recv(conn, t=0.6)
        assert conn.read() == b"still here"

    @pytest.mark.parametrize("seq", [REMOTE_SEQ - 1000, REMOTE_SEQ + 1, REMOTE_SEQ + 100_000])
    def test_syn_at_any_sequence_number_gets_an_ack(self, seq: int) -> None:
        """RFC 5961 §4.2 (R3): a SYN with any sequence number (in or out of window) gets an ACK and is dropped."""
        conn = established()
        send(conn, t=0.5, seg=replace(SEND, seq=seq, ack=0, flags=SYN))
        assert recv(conn, t=0.5) == [replace(RECV, seq=L1, ack=R1)]
        assert conn.state is S.ESTABLISHED

    def test_half_open_discovery(self) -> None:
        """RFC 9293 §3.5.2 Figures 9-10 with RFC 5961: a rebooted peer's SYN -> challenge ACK -> its RST at SEG.ACK
        resets us."""
        conn = established()
        conn.send(b"abc", 0.0)
        recv(conn, t=0.0)
        send(conn, t=0.5, seg=replace(SEND, seq=777, ack=0, flags=SYN))  # the peer forgot everything
        [challenge] = recv(conn, t=0.5)
        # The peer, in SYN-SENT, finds the ACK unacceptable: <SEQ=SEG.ACK><CTL=RST>.
        send(conn, t=0.6, seg=replace(SEND, seq=challenge.ack, ack=0, flags=RST))
        assert conn.state is S.CLOSED and events(conn)[0] == RESET

    def test_challenge_acks_are_rate_limited_per_connection(self) -> None:
        """RFC 5961 §7 (R5): at most challenge_acks_per_second challenge ACKs per second, counted per connection."""
        conn = established(challenge_acks_per_second=10)
        other = established(challenge_acks_per_second=10)
        sent = 0
        for i in range(100):
            send(conn, t=0.5 + i * 0.001, seg=rst(conn, 1 + i % 50))
            sent += len(recv(conn, t=0.5 + i * 0.001))
        assert sent == 10
        assert conn.state is S.ESTABLISHED
        # The budget is per connection: another connection still answers.
        send(other, t=0.6, seg=rst(other, 1))
        assert len(recv(other, t=0.6)) == 1
        # A second later the budget is back.
        send(conn, t=1.6, seg=rst(conn, 1))
        assert len(recv(conn, t=1.6)) == 1

    def test_syn_challenge_acks_share_the_rate_limit(self) -> None:
        """RFC 5961 §7 (R5): challenge ACKs for in-window SYNs count against the same per-connection limit."""
        conn = established(challenge_acks_per_second=3)
        answers = 0
        for i in range(10):
            send(conn, t=0.5, seg=replace(SEND, seq=R1 + 1 + i, ack=0, flags=SYN))
            answers += len(recv(conn, t=0.5))
        assert answers == 3


class TestAbort:
    @pytest.mark.parametrize("make", [established, fin_wait_1, fin_wait_2, close_wait, syn_received])
    def test_abort_sends_rst_at_snd_nxt(self, make: Callable[[], TcpConnection]) -> None:
        """RFC 9293 §3.10.5 (R9): ABORT in SYN-RECEIVED, ESTABLISHED, FIN-WAIT-1/2, CLOSE-WAIT sends
        <SEQ=SND.NXT><CTL=RST>."""
        conn = make()
        snd_nxt = conn.snd_max
        conn.abort(1.0)
        assert recv(conn, t=1.0) == [replace(RECV, seq=snd_nxt, ack=0, flags=RST, window=0)]
        assert conn.state is S.CLOSED and conn.get_timer() is None

    @pytest.mark.parametrize("make", [syn_sent, closing, last_ack, time_wait])
    def test_abort_without_rst(self, make: Callable[[], TcpConnection]) -> None:
        """RFC 9293 §3.10.5: ABORT in SYN-SENT, CLOSING, LAST-ACK, TIME-WAIT deletes the TCB without a RST."""
        conn = make()
        conn.abort(1.0)
        recv_nothing(conn, t=1.0)
        assert conn.state is S.CLOSED

    def test_abort_with_data_in_flight_uses_the_highest_sequence_sent(self) -> None:
        """RFC 9293 §3.10.5 (R9): the RST carries SND.NXT, the next sequence number after all data sent, and queues
        are flushed."""
        conn = established()
        conn.send(data(40), 0.0)
        recv(conn, t=0.0)
        conn.send(data(10), 0.0)  # a second write: 50 bytes in flight in all
        recv(conn, t=0.0)
        conn.abort(0.5)
        assert recv(conn, t=0.5) == [replace(RECV, seq=L1 + 50, ack=0, flags=RST, window=0)]
        assert len(conn.sndbuf) == 0
