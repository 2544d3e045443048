"""ICMP errors reaching TCP connections (RFC 9293 §3.9.2.2, MUST-54/56, SHLD-25/26; RFC 5927;
RFC 1191), injected as real frames into a stack and matched to the connection they quote."""

from __future__ import annotations

import struct

from framework.checksum import internet_checksum
from layers.ipv4.wire import Ipv4Repr
from layers.tcp.events import ConnectionFailed, SoftError
from layers.tcp.state import TcpState
from tests.layers.tcp.helpers import LOCAL_ADDR, REMOTE_ADDR, LayerHarness

S = TcpState


def icmp_error(quoted: bytes, type_: int, code: int, rest: bytes = b"\0\0\0\0", *, src: bytes = REMOTE_ADDR) -> bytes:
    """An IPv4 datagram from *src* to us carrying ICMP type/code quoting *quoted* (header + 8 bytes)."""
    body = bytearray(struct.pack("!BBH4s", type_, code, 0, rest) + quoted)
    csum = internet_checksum(body)
    body[2:4] = csum.to_bytes(2, "big")
    hdr = Ipv4Repr(src, LOCAL_ADDR, 1, dont_frag=False)
    buf = bytearray(20 + len(body))
    buf[20:] = body
    hdr.emit(buf, 0, len(body))
    return bytes(buf)


def our_syn(h: LayerHarness) -> tuple[object, bytes]:
    """Open a connection and return it with the first 28 bytes of the SYN it sent (IP header + 8)."""
    conn = h.tcp.connect(REMOTE_ADDR, 5000, now=0.0)
    [frame] = h.stack.frames_to_send(now=0.0)
    return conn, frame[:28]


class TestHardErrors:
    def test_port_unreachable_in_syn_sent_aborts(self) -> None:
        """RFC 9293 §3.9.2.2 (SHLD-26): Destination Unreachable (port) quoting our SYN aborts the open."""
        h = LayerHarness()
        conn, quote = our_syn(h)
        h.inject_frame(icmp_error(quote, 3, 3), t=0.1)
        assert conn.state is S.CLOSED  # type: ignore[attr-defined]
        assert ConnectionFailed("unreachable", "port_unreachable") in conn.events  # type: ignore[attr-defined]

    def test_hard_error_on_an_established_connection_is_only_reported(self) -> None:
        """RFC 9293 §3.9.2.2 / RFC 5461 (choice, as Linux): in a synchronized state a hard error is reported, not
        fatal."""
        h = LayerHarness()
        h.tcp.listen(80)
        conn, _ = h.handshake(80)
        conn.send(b"data", 0.2)
        h.tcp.touch(conn)
        [frame] = h.stack.frames_to_send(now=0.2)
        h.inject_frame(icmp_error(frame[:28], 3, 3), t=0.3)
        assert conn.state is S.ESTABLISHED
        assert any(isinstance(e, SoftError) for e in conn.events)


class TestSoftErrors:
    def test_host_unreachable_while_opening_does_not_abort(self) -> None:
        """MUST-56, SHLD-25: Destination Unreachable codes 0, 1 and 5 are soft: reported, the SYN keeps trying."""
        for code in (0, 1, 5):
            h = LayerHarness()
            conn, quote = our_syn(h)
            h.inject_frame(icmp_error(quote, 3, code), t=0.1)
            assert conn.state is S.SYN_SENT  # type: ignore[attr-defined]
            assert any(isinstance(e, SoftError) for e in conn.events)  # type: ignore[attr-defined]

    def test_time_exceeded_and_parameter_problem_do_not_abort(self) -> None:
        """MUST-56: Time Exceeded and Parameter Problem never abort a connection."""
        for type_ in (11, 12):
            h = LayerHarness()
            conn, quote = our_syn(h)
            h.inject_frame(icmp_error(quote, type_, 0), t=0.1)
            assert conn.state is S.SYN_SENT  # type: ignore[attr-defined]


class TestValidation:
    def test_quote_with_a_sequence_number_not_in_flight_is_ignored(self) -> None:
        """RFC 5927 §4.1 (IC9): an ICMP error whose quoted sequence number is not in flight is ignored."""
        h = LayerHarness()
        conn, quote = our_syn(h)
        forged = bytearray(quote)
        forged[24:28] = ((int.from_bytes(quote[24:28], "big") + 100_000) & 0xFFFFFFFF).to_bytes(4, "big")
        h.inject_frame(icmp_error(bytes(forged), 3, 3), t=0.1)
        assert conn.state is S.SYN_SENT  # type: ignore[attr-defined]
        assert not conn.events  # type: ignore[attr-defined]

    def test_error_for_an_unknown_connection_is_dropped(self) -> None:
        """RFC 9293 §3.9.2.2: an error that names no connection is counted and dropped."""
        h = LayerHarness()
        _, quote = our_syn(h)
        other = bytearray(quote)
        other[20:22] = (1234).to_bytes(2, "big")  # a source port we never used
        h.inject_frame(icmp_error(bytes(other), 3, 3), t=0.1)
        assert h.drops("icmp_no_connection") == 1


class TestPathMtu:
    def test_fragmentation_needed_lowers_the_send_mss(self) -> None:
        """RFC 1191 §6.3: Destination Unreachable code 4 with a next-hop MTU lowers the MSS to MTU - 40 and the
        data is sent again at that size."""
        h = LayerHarness()
        h.tcp.listen(80)
        conn, _ = h.handshake(80, mss=1460, window=65535)
        conn.send(bytes(3000), 0.2)
        h.tcp.touch(conn)
        frames = h.stack.frames_to_send(now=0.2)
        assert max(len(f) for f in frames) == 1500
        rest = (0).to_bytes(2, "big") + (1000).to_bytes(2, "big")  # next-hop MTU 1000
        again = h.inject_frame(icmp_error(frames[0][:28], 3, 4, rest), t=0.3)
        assert conn.snd_mss == 960
        assert again and max(len(seg.payload) for seg in again) == 960  # resent at the new size

    def test_fragmentation_needed_leaves_room_for_the_timestamps(self) -> None:
        """RFC 1191 §6.3 with RFC 7323 timestamps on every segment (MUST-16): MTU 1000 means 1000 - 40 - 12 =
        948 payload bytes, so the datagrams fit; the resend counts as a retransmission."""
        h = LayerHarness(features={"timestamps": {"drop_without_option": False}})
        h.tcp.listen(80)
        ts_opt = bytes([1, 1, 8, 10]) + (5).to_bytes(4, "big") + bytes(4)
        conn, _ = h.handshake(80, window=65535, options=bytes([2, 4, 5, 0xB4]) + ts_opt)
        assert conn.snd_mss == 1448
        conn.send(bytes(3000), 0.2)
        h.tcp.touch(conn)
        frames = h.stack.frames_to_send(now=0.2)
        rest = (0).to_bytes(2, "big") + (1000).to_bytes(2, "big")
        again = h.inject_frame(icmp_error(frames[0][:28], 3, 4, rest), t=0.3)
        assert conn.snd_mss == 948
        # 20 (IPv4) + 20 (TCP) + 12 (timestamps) + 948 = 1000: the datagrams fit the path.
        assert again and max(len(seg.payload) for seg in again) == 948 and all(seg.ts for seg in again)
        assert conn.retransmits >= 1
