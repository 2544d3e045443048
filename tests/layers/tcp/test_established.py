"""ESTABLISHED: segment acceptance (RFC 9293 §3.10.7.4 "First", Table 6), trimming, the ACK
field ("Fifth"), text ("Seventh"), out-of-order data and ACK generation (RFC 5681 §4.2,
MUST-58/59), on the sans-IO connection."""

from __future__ import annotations

from dataclasses import replace

import pytest

from layers.tcp.events import ConnectionClosed, ConnectionFailed, DataReceived, SendSpaceAvailable
from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, PSH, RST
from tests.layers.tcp.helpers import (
    L1,
    R1,
    RECV,
    SEND,
    data,
    established,
    events,
    recv,
    recv_nothing,
    send,
)

S = TcpState
DATA = replace(SEND, seq=R1, ack=L1)
ACK_ONLY = replace(RECV, seq=L1, ack=R1)


class TestInOrderData:
    def test_data_is_delivered_and_acked(self) -> None:
        """RFC 9293 §3.10.7.4 "Seventh": in-order text is delivered; <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> with the
        window left."""
        conn = established()
        send(conn, t=0.0, seg=replace(DATA, payload=b"abc"))
        assert recv(conn, t=0.0) == [replace(ACK_ONLY, ack=R1 + 3, window=61)]
        assert events(conn) == [DataReceived()]
        assert conn.read() == b"abc"
        assert conn.bytes_received == 3

    def test_successive_segments_are_concatenated(self) -> None:
        """RFC 9293 §3.8: TCP delivers a byte stream: three segments read back as one sequence."""
        conn = established()
        for i, chunk in enumerate([b"one ", b"two ", b"three"]):
            send(conn, t=0.1 * i, seg=replace(DATA, seq=R1 + conn.bytes_received, payload=chunk))
            recv(conn, t=0.1 * i)
        assert conn.read() == b"one two three"

    def test_our_data_is_sent_with_push_and_freed_when_acked(self) -> None:
        """RFC 9293 §3.9.1.2, MUST-60/61: a write leaves with PSH on its last segment; the ACK frees the buffer."""
        conn = established()
        assert conn.send(b"hello", 0.0) == 5
        assert recv(conn, t=0.0) == [replace(ACK_ONLY, flags=ACK | PSH, payload=b"hello")]
        send(conn, t=0.1, seg=replace(DATA, ack=L1 + 5))
        recv_nothing(conn, t=0.1)
        assert events(conn) == [SendSpaceAvailable()]
        assert (conn.snd_una, len(conn.sndbuf), conn.bytes_sent) == (L1 + 5, 0, 5)

    def test_send_buffer_accepts_only_its_capacity(self) -> None:
        """RFC 9293 §3.9.1.2: SEND takes what fits in the 64-byte buffer; the rest waits for the caller."""
        conn = established()
        assert conn.send(data(100), 0.0) == 64
        assert conn.send(b"x", 0.0) == 0


class TestAcceptability:
    """RFC 9293 §3.10.7.4 Table 6 with RCV.WND = 64 and RCV.NXT = R1."""

    @pytest.mark.parametrize(
        ("offset", "length"),
        [(0, 0), (63, 0), (0, 1), (63, 5), (-3, 5)],
        ids=[
            "empty-at-nxt",
            "empty-at-last-window-byte",
            "data-at-nxt",
            "data-starting-at-edge",
            "data-straddling-nxt",
        ],
    )
    def test_acceptable_segments(self, offset: int, length: int) -> None:
        """RFC 9293 §3.10.7.4 Table 6 (S2): a segment that starts or ends inside the window is acceptable (no blind
        ACK)."""
        conn = established()
        send(conn, t=0.0, seg=replace(DATA, seq=R1 + offset, payload=data(length)))
        out = recv(conn, t=0.0)
        if length == 0:
            assert out == []  # an acceptable pure ACK is never acknowledged (A8)
        else:
            assert len(out) == 1 and out[0].seq == L1

    @pytest.mark.parametrize(
        ("offset", "length"),
        [(64, 0), (-1, 0), (-10, 5), (-5, 5), (64, 5), (1000, 10)],
        ids=["empty-past-window", "empty-old", "data-old", "data-ending-before-nxt", "data-past-window", "data-far"],
    )
    def test_unacceptable_segments_get_an_ack_and_deliver_nothing(self, offset: int, length: int) -> None:
        """RFC 9293 §3.10.7.4 Table 6 (S2): wholly old or beyond-window segments ->
        <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, dropped."""
        conn = established()
        send(conn, t=0.0, seg=replace(DATA, seq=R1 + offset, payload=data(length)))
        assert recv(conn, t=0.0) == [ACK_ONLY]
        assert conn.readable == 0 and conn.rcv_nxt == R1
        assert events(conn) == []

    def test_unacceptable_segment_does_not_process_its_ack(self) -> None:
        """RFC 9293 §3.10.7.4 "First": an unacceptable segment is dropped before its ACK field is looked at."""
        conn = established()
        conn.send(b"hello", 0.0)
        recv(conn, t=0.0)
        send(conn, t=0.1, seg=replace(DATA, seq=R1 + 200, ack=L1 + 5, payload=b"x"))
        recv(conn, t=0.1)
        assert conn.snd_una == L1

    def test_zero_window_accepts_only_empty_segments_at_rcv_nxt_but_still_processes_ack(self) -> None:
        """RFC 9293 §3.10.7.4, MUST-66 (S3): with RCV.WND = 0 data is not accepted, but the ACK field is still
        processed."""
        conn = established()
        conn.send(b"hello", 0.0)
        recv(conn, t=0.0)
        send(conn, t=0.1, seg=replace(DATA, payload=data(64)))  # fills our buffer: window 0
        assert recv(conn, t=0.1) == [replace(ACK_ONLY, seq=L1 + 5, ack=R1 + 64, window=0)]
        # Data at RCV.NXT with a zero window: text dropped, window-0 ACK, but SND.UNA advances.
        send(conn, t=0.2, seg=replace(DATA, seq=R1 + 64, ack=L1 + 5, payload=b"more"))
        assert recv(conn, t=0.2) == [replace(ACK_ONLY, seq=L1 + 5, ack=R1 + 64, window=0)]
        assert conn.snd_una == L1 + 5 and conn.readable == 64
        # An empty segment at RCV.NXT is acceptable (no reply); one past it is not.
        send(conn, t=0.3, seg=replace(DATA, seq=R1 + 64, ack=L1 + 5))
        recv_nothing(conn, t=0.3)
        send(conn, t=0.4, seg=replace(DATA, seq=R1 + 65, ack=L1 + 5))
        assert recv(conn, t=0.4) == [replace(ACK_ONLY, seq=L1 + 5, ack=R1 + 64, window=0)]

    def test_zero_window_still_processes_rst(self) -> None:
        """RFC 9293 MUST-66 (S3): with RCV.WND = 0 a RST at RCV.NXT still resets the connection."""
        conn = established()
        send(conn, t=0.1, seg=replace(DATA, payload=data(64)))
        recv(conn, t=0.1)
        events(conn)
        send(conn, t=0.2, seg=replace(SEND, seq=R1 + 64, ack=0, flags=RST))
        assert conn.state is S.CLOSED
        assert events(conn)[0] == ConnectionFailed("reset", "connection reset by peer")


class TestTrimming:
    def test_segment_straddling_rcv_nxt_delivers_only_new_bytes(self) -> None:
        """RFC 9293 §3.10.7.4 (S4): a segment covering [RCV.NXT-10, RCV.NXT+100) delivers exactly the 100 new bytes."""
        conn = established(recv_buffer=256)
        send(conn, t=0.0, seg=replace(DATA, payload=data(10)))
        recv(conn, t=0.0)
        assert conn.read() == data(10)
        send(conn, t=0.1, seg=replace(DATA, payload=data(110)))
        [ack] = recv(conn, t=0.1)
        assert ack.ack == R1 + 110
        assert conn.read() == data(100, start=10)
        assert conn.bytes_received == 110

    def test_segment_past_the_right_edge_is_trimmed(self) -> None:
        """RFC 9293 §3.10.7.4 (S4): only the part inside the window is kept; the rest must be sent again."""
        conn = established()
        send(conn, t=0.0, seg=replace(DATA, payload=data(100)))
        assert recv(conn, t=0.0) == [replace(ACK_ONLY, ack=R1 + 64, window=0)]
        assert conn.read() == data(64)

    def test_overlapping_retransmission_never_changes_delivered_bytes(self) -> None:
        """RFC 9293 §3.10.7.4 (S4): only bytes beyond RCV.NXT are new, so an overlap carrying different bytes never
        alters data already received."""
        conn = established()
        send(conn, t=0.0, seg=replace(DATA, payload=b"AAAA"))
        send(conn, t=0.0, seg=replace(DATA, payload=b"XXXXBBBB"))
        recv(conn, t=0.0)
        assert conn.read() == b"AAAABBBB"


class TestAckField:
    def test_ack_of_unsent_data_is_answered_and_the_segment_dropped(self) -> None:
        """RFC 9293 §3.10.7.4 "Fifth" (S5): SEG.ACK > SND.NXT -> send an ACK, drop the segment (its text too)."""
        conn = established()
        send(conn, t=0.0, seg=replace(DATA, ack=L1 + 100, payload=b"abc"))
        assert recv(conn, t=0.0) == [ACK_ONLY]
        assert conn.readable == 0 and conn.snd_una == L1

    def test_very_old_ack_is_answered_and_dropped(self) -> None:
        """RFC 5961 §5.2, MAY-12 (R4): SEG.ACK < SND.UNA - MAX.SND.WND -> ACK and drop; the data is not delivered."""
        conn = established()
        send(conn, t=0.0, seg=replace(DATA, ack=(L1 - (1 << 30)) & 0xFFFFFFFF, payload=b"abc"))
        assert recv(conn, t=0.0) == [ACK_ONLY]
        assert conn.readable == 0

    def test_old_duplicate_ack_still_delivers_the_text(self) -> None:
        """RFC 9293 §3.10.7.4 "Fifth" (S5): SEG.ACK < SND.UNA (within MAX.SND.WND) is a duplicate: ignore the ACK,
        keep the text."""
        conn = established()
        send(conn, t=0.0, seg=replace(DATA, ack=L1 - 1, payload=b"abc"))
        assert recv(conn, t=0.0) == [replace(ACK_ONLY, ack=R1 + 3, window=61)]
        assert conn.read() == b"abc" and conn.snd_una == L1

    def test_stale_window_update_from_a_reordered_ack_is_ignored(self) -> None:
        """RFC 9293 §3.10.7.4 (S6): SND.WND changes only if SND.WL1 < SEG.SEQ or (= and SND.WL2 =< SEG.ACK)."""
        conn = established()
        conn.send(data(20), 0.0)
        recv(conn, t=0.0)
        send(conn, t=0.1, seg=replace(DATA, ack=L1 + 20, window=300))
        send(conn, t=0.1, seg=replace(DATA, ack=L1 + 10, window=100))  # older ACK, reordered
        assert conn.snd_wnd == 300

    def test_window_from_an_older_sequence_number_is_ignored(self) -> None:
        """RFC 9293 §3.10.7.4 (S6): a segment with SEG.SEQ < SND.WL1 (reordered data) does not update the window."""
        conn = established()
        send(conn, t=0.0, seg=replace(DATA, seq=R1 + 5, payload=b"67890", window=300))  # arrives first
        send(conn, t=0.0, seg=replace(DATA, seq=R1, payload=b"12345", window=100))
        recv(conn, t=0.0)
        assert conn.snd_wnd == 300
        assert conn.read() == b"1234567890"

    def test_newer_segment_may_shrink_the_window(self) -> None:
        """RFC 9293 §3.10.7.4 (S6): a newer ACK updates SND.WND even downwards (the sender must cope, MUST-34)."""
        conn = established()
        send(conn, t=0.0, seg=replace(DATA, window=100))
        assert conn.snd_wnd == 100


class TestAckGeneration:
    def test_batch_of_segments_gets_one_ack(self) -> None:
        """RFC 9293 MUST-58/59 (S7): five in-order segments processed before output -> one cumulative ACK, not five."""
        conn = established()
        for i in range(5):
            send(conn, t=0.0, seg=replace(DATA, seq=R1 + 10 * i, payload=data(10, start=10 * i)))
        assert recv(conn, t=0.0) == [replace(ACK_ONLY, ack=R1 + 50, window=14)]
        assert conn.read() == data(50)

    def test_pure_ack_is_never_acked(self) -> None:
        """RFC 9293 §3.4 (A8): an acceptable segment with no data, SYN or FIN gets no reply."""
        conn = established()
        send(conn, t=0.0, seg=DATA)
        recv_nothing(conn, t=0.0)
        send(conn, t=0.1, seg=replace(DATA, window=1000))  # window update
        recv_nothing(conn, t=0.1)
        conn.send(b"x", 0.2)
        recv(conn, t=0.2)
        send(conn, t=0.3, seg=replace(DATA, ack=L1 + 1))  # ACK of our data
        recv_nothing(conn, t=0.3)

    def test_out_of_order_segments_are_queued_and_delivered_once_when_the_gap_fills(self) -> None:
        """RFC 9293 SHLD-31, RFC 5681 §4.2 (A1, A2): seg2, seg3 get immediate duplicate ACKs; seg1 fills the gap,
        one cumulative ACK follows and every byte is read once, in order."""
        conn = established()
        send(conn, t=0.0, seg=replace(DATA, seq=R1 + 10, payload=data(10, start=10)))
        assert recv(conn, t=0.0) == [ACK_ONLY]
        send(conn, t=0.1, seg=replace(DATA, seq=R1 + 20, payload=data(10, start=20)))
        assert recv(conn, t=0.1) == [ACK_ONLY]
        assert conn.readable == 0 and events(conn) == []
        send(conn, t=0.2, seg=replace(DATA, seq=R1 + 10, payload=data(10, start=10)))  # duplicate of seg2
        assert recv(conn, t=0.2) == [ACK_ONLY]
        send(conn, t=0.3, seg=replace(DATA, payload=data(10)))
        assert recv(conn, t=0.3) == [replace(ACK_ONLY, ack=R1 + 30, window=34)]
        assert events(conn) == [DataReceived()]
        assert conn.read() == data(30)
        assert conn.read() == b""

    def test_each_out_of_order_segment_in_a_batch_gets_its_own_duplicate_ack(self) -> None:
        """RFC 5681 §4.2, §3.2 (A2, CC6): three out-of-order segments in one receive batch -> three duplicate ACKs (same
        ACK and window), so a sender without SACK can fast-retransmit; in-order data still aggregates (MUST-58)."""
        conn = established()
        for i in range(1, 4):
            send(conn, t=0.0, seg=replace(DATA, seq=R1 + 10 * i, payload=data(10, start=10 * i)))
        assert recv(conn, t=0.0) == [ACK_ONLY, ACK_ONLY, ACK_ONLY]
        send(conn, t=0.1, seg=replace(DATA, payload=data(10)))
        send(conn, t=0.1, seg=replace(DATA, seq=R1 + 40, payload=data(10, start=40)))
        assert recv(conn, t=0.1) == [replace(ACK_ONLY, ack=R1 + 50, window=14)]
        assert conn.read() == data(50)

    def test_reverse_order_delivery(self) -> None:
        """RFC 9293 SHLD-31 (A1): segments arriving in reverse order are queued and reassembled exactly."""
        conn = established()
        for i in reversed(range(6)):
            send(conn, t=0.0, seg=replace(DATA, seq=R1 + 10 * i, payload=data(10, start=10 * i)))
        *dups, ack = recv(conn, t=0.0)
        assert dups == [ACK_ONLY] * 5  # one duplicate ACK per out-of-order segment (RFC 5681 §4.2)
        assert ack.ack == R1 + 60
        assert conn.read() == data(60)

    def test_pure_ack_updates_nothing_but_send_state(self) -> None:
        """RFC 9293 §3.10.7.4: a segment that only acknowledges our data moves SND.UNA and queues SendSpaceAvailable."""
        conn = established()
        conn.send(b"0123456789", 0.0)
        recv(conn, t=0.0)
        send(conn, t=0.1, seg=replace(DATA, ack=L1 + 4))
        assert conn.snd_una == L1 + 4 and len(conn.sndbuf) == 6
        assert events(conn) == [SendSpaceAvailable()]


class TestEstablishedToClosed:
    def test_state_and_events_after_reset(self) -> None:
        """RFC 9293 MUST-12 (R7): the user can tell a reset from a normal close: ConnectionFailed("reset") then
        ConnectionClosed."""
        conn = established()
        send(conn, t=0.0, seg=replace(SEND, seq=R1, ack=0, flags=RST))
        assert events(conn) == [ConnectionFailed("reset", "connection reset by peer"), ConnectionClosed()]
