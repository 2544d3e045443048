"""LISTEN through the TCP layer (RFC 9293 §3.10.7.2): SYN-ACK format, RST/ACK handling, the
backlog (RFC 4987), and the receive-side checks of malformed segments (§3.1-3.2, MUST-2..7,
MUST-64, MUST-14/15)."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, FIN, PSH, RST, SYN
from tests.layers.tcp.helpers import (
    LOCAL_PORT,
    PEER_WINDOW,
    RECV,
    REMOTE_ADDR,
    REMOTE_PORT,
    REMOTE_SEQ,
    SEND,
    LayerHarness,
    data,
    tcp_bytes,
)

S = TcpState
ISS = 5_000_000


def listening(**tcp: object) -> LayerHarness:
    h = LayerHarness(initial_sequence=ISS, **tcp)
    h.tcp.listen(LOCAL_PORT)
    return h


SYN_SEG = replace(SEND, seq=REMOTE_SEQ, ack=0, flags=SYN, window=65535)


def mss_option(mss: int) -> bytes:
    return struct.pack("!BBH", 2, 4, mss)


class TestNonSynToListener:
    @pytest.mark.parametrize("flags", [RST, RST | ACK, RST | SYN])
    def test_rst_is_ignored(self, flags: int) -> None:
        """RFC 9293 §3.10.7.2 (E7): "first, check for a RST": an incoming RST in LISTEN is ignored."""
        h = listening()
        assert h.inject(replace(SEND, seq=1, ack=2, flags=flags), t=0.0) == []
        assert h.drops("rst_to_listener") == 1
        assert h.tcp.connections == {}

    @pytest.mark.parametrize("flags", [ACK, ACK | PSH, ACK | FIN, ACK | SYN])
    def test_ack_is_answered_with_rst_seq_seg_ack(self, flags: int) -> None:
        """RFC 9293 §3.10.7.2 (E7): "second, check for an ACK": any acknowledgment in LISTEN gets
        <SEQ=SEG.ACK><CTL=RST>."""
        h = listening()
        out = h.inject(replace(SEND, seq=77, ack=123456, flags=flags, payload=b"x"), t=0.0)
        assert out == [replace(RECV, seq=123456, ack=0, flags=RST, window=0)]
        assert h.tcp.connections == {}

    @pytest.mark.parametrize("flags", [0, FIN, PSH])
    def test_other_segments_without_syn_are_dropped(self, flags: int) -> None:
        """RFC 9293 §3.10.7.2: "any other control or text-bearing segment (not containing SYN) must have an ACK ...
        drop it"."""
        h = listening()
        assert h.inject(replace(SEND, seq=1, ack=0, flags=flags, payload=b"abc"), t=0.0) == []
        assert h.drops("no_syn_to_listener") == 1

    def test_syn_fin_is_dropped_without_reply(self) -> None:
        """RFC 9293 §3.10.7.2 / conformance probe (§5.2): SYN+FIN is malformed and dropped, as Linux does."""
        h = listening()
        assert h.inject(replace(SYN_SEG, flags=SYN | FIN), t=0.0) == []
        assert h.drops("syn_fin") == 1
        assert h.tcp.connections == {}


class TestSynToListener:
    def test_syn_ack_carries_iss_ack_mss_and_window(self) -> None:
        """RFC 9293 §3.10.7.2 (E1, MUST-14): SYN -> <SEQ=ISS><ACK=SEG.SEQ+1><CTL=SYN,ACK>, MSS = MTU-40, window =
        free space."""
        h = listening(recv_buffer=4000)
        out = h.inject(SYN_SEG, t=0.0)
        assert out == [replace(RECV, seq=ISS, ack=REMOTE_SEQ + 1, flags=SYN | ACK, window=4000, mss=1460)]
        conn = h.tcp.connections[(REMOTE_ADDR, REMOTE_PORT, LOCAL_PORT)]
        assert conn.state is S.SYN_RECEIVED

    def test_mss_follows_the_link_mtu(self) -> None:
        """RFC 9293 §3.7.1, RFC 6691: the advertised MSS is the MTU minus the fixed IPv4 and TCP headers."""
        h = listening(mtu=1000)
        [synack] = h.inject(SYN_SEG, t=0.0)
        assert synack.mss == 960

    def test_window_is_capped_at_65535_without_window_scaling(self) -> None:
        """RFC 9293 §3.1 / RFC 7323 §2.2: the SYN-ACK's window field is unscaled, so at most 65535."""
        h = listening()  # the default receive buffer is 64 KiB
        [synack] = h.inject(SYN_SEG, t=0.0)
        assert synack.window == 65535

    def test_syn_data_is_not_acknowledged(self) -> None:
        """RFC 9293 §3.10.7.2, E10: data on a SYN is not delivered before ESTABLISHED; our SYN-ACK acknowledges only
        the SYN."""
        h = listening()
        [synack] = h.inject(replace(SYN_SEG, payload=b"early data"), t=0.0)
        assert synack.ack == REMOTE_SEQ + 1

    def test_accept_returns_only_established_connections(self) -> None:
        """RFC 9293 §3.10.7.4 (E1): accept() returns nothing for a half-open TCB, the connection once the ACK
        arrives."""
        h = LayerHarness(initial_sequence=ISS)
        listener = h.tcp.listen(LOCAL_PORT)
        h.inject(SYN_SEG, t=0.0)
        assert listener.accept() is None
        h.inject(replace(SEND, seq=REMOTE_SEQ + 1, ack=ISS + 1), t=0.001)
        conn = listener.accept()
        assert conn is not None and conn.state is S.ESTABLISHED
        assert conn.snd_wnd == PEER_WINDOW

    def test_mss_option_only_on_syn(self) -> None:
        """RFC 9293 §3.7.1, MUST-65 (T10): the MSS option is sent only on SYN segments, never on data."""
        h = listening()
        conn, synack = h.handshake()
        assert synack.mss == 1460
        conn.send(b"hello", h.now)
        h.user(conn)
        [seg] = h.output(t=0.0)
        assert seg.payload == b"hello" and seg.mss is None

    def test_many_parallel_handshakes_on_one_port(self) -> None:
        """RFC 9293 MUST-41/42 (E11): a LISTEN keeps accepting while other TCBs on its port are in SYN states."""
        h = LayerHarness(initial_sequence=ISS)
        listener = h.tcp.listen(LOCAL_PORT, backlog=100)
        for i in range(50):
            h.inject(replace(SYN_SEG, src_port=30000 + i), t=0.0)
        assert len(listener.embryonic) == 50
        for i in range(50):
            h.inject(replace(SEND, src_port=30000 + i, seq=REMOTE_SEQ + 1, ack=ISS + 1), t=0.01)
        accepted = []
        while (c := listener.accept()) is not None:
            accepted.append(c.remote[1])
        assert sorted(accepted) == list(range(30000, 30050))

    def test_syn_to_subnet_broadcast_is_ignored(self) -> None:
        """RFC 9293 MUST-57 (E12): segments to a broadcast address are discarded (here by IPv4), no SYN-ACK."""
        h = listening()
        assert h.inject(SYN_SEG, t=0.0, dst=b"\x0a\x00\x00\xff") == []
        assert h.tcp.connections == {}


class TestBacklog:
    def test_full_syn_queue_drops_syns_and_the_retransmitted_syn_is_accepted_later(self) -> None:
        """RFC 4987 §3.2: with SYN cookies off, a full SYN queue drops the SYN without RST; once the half-open
        connection completes, the retransmission succeeds."""
        h = LayerHarness(initial_sequence=ISS, syncookies="never", syn_backlog=1)
        listener = h.tcp.listen(LOCAL_PORT)
        [synack] = h.inject(replace(SYN_SEG, src_port=40001), t=0.0)
        assert synack.flags == SYN | ACK
        # Client 2's SYN while client 1 is half-open: dropped silently.
        assert h.inject(replace(SYN_SEG, src_port=40002), t=0.0) == []
        assert h.drops("backlog_full") == 1
        # Client 1 completes and leaves the SYN queue (it waits in the accept queue).
        h.inject(replace(SEND, src_port=40001, seq=REMOTE_SEQ + 1, ack=ISS + 1), t=0.1)
        # Client 2's first retransmission (RFC 6298: 1 s) is answered.
        [synack2] = h.inject(replace(SYN_SEG, src_port=40002), t=1.0)
        assert synack2.flags == SYN | ACK and synack2.ack == REMOTE_SEQ + 1
        h.inject(replace(SEND, src_port=40002, seq=REMOTE_SEQ + 1, ack=ISS + 1), t=1.1)
        assert [c.remote[1] for c in iter(listener.accept, None)] == [40001, 40002]

    def test_full_accept_queue_drops_syns_until_the_application_accepts(self) -> None:
        """RFC 4987 §3.2: completed connections nobody accepted fill the accept queue (the backlog); further
        SYNs are dropped without RST, also with SYN cookies on, until accept() makes room."""
        h = LayerHarness(initial_sequence=ISS)
        listener = h.tcp.listen(LOCAL_PORT, backlog=1)
        h.inject(replace(SYN_SEG, src_port=40001), t=0.0)
        h.inject(replace(SEND, src_port=40001, seq=REMOTE_SEQ + 1, ack=ISS + 1), t=0.1)
        assert h.inject(replace(SYN_SEG, src_port=40002), t=1.0) == []
        assert h.drops("accept_queue_full") == 1
        first = listener.accept()
        assert first is not None and first.remote[1] == 40001
        [synack2] = h.inject(replace(SYN_SEG, src_port=40002), t=3.0)
        assert synack2.flags == SYN | ACK

    def test_rst_from_the_peer_frees_the_syn_queue_slot(self) -> None:
        """RFC 9293 §3.10.7.4: a RST in SYN-RECEIVED after a passive open removes the embryonic TCB and its
        slot in the SYN queue."""
        h = LayerHarness(initial_sequence=ISS, syncookies="never", syn_backlog=1)
        listener = h.tcp.listen(LOCAL_PORT)
        h.inject(SYN_SEG, t=0.0)
        assert h.inject(replace(SEND, seq=REMOTE_SEQ + 1, ack=0, flags=RST), t=0.1) == []
        assert not listener.embryonic and listener.accept() is None
        assert h.tcp.connections == {}
        [synack] = h.inject(replace(SYN_SEG, src_port=40009), t=0.2)
        assert synack.flags == SYN | ACK


class TestMalformedSegments:
    def test_bad_checksum_syn_is_dropped(self) -> None:
        """RFC 9293 §3.1, MUST-3 (T2): a segment with a wrong checksum is silently dropped."""
        h = listening()
        raw = bytearray(tcp_bytes(SYN_SEG))
        raw[16] ^= 0x01
        assert h.inject(bytes(raw), t=0.0) == []
        assert h.drops("bad_checksum") == 1
        assert h.tcp.connections == {}

    def test_bad_checksum_data_is_neither_acked_nor_delivered(self) -> None:
        """RFC 9293 MUST-3 (T2): bad-checksum data on an established connection -> no ACK, not delivered."""
        h = listening()
        conn, synack = h.handshake()
        seg = replace(SEND, seq=REMOTE_SEQ + 1, ack=synack.seq + 1, payload=b"corrupt")
        raw = bytearray(tcp_bytes(seg))
        raw[-1] ^= 0x40  # flip a payload bit, keep the old checksum
        assert h.inject(bytes(raw), t=0.1) == []
        assert conn.readable == 0
        assert h.drops("bad_checksum") == 1

    def test_checksum_covers_the_pseudo_header(self) -> None:
        """RFC 9293 §3.1 (T1): the checksum includes the source address, so a segment checksummed for another source
        is dropped."""
        h = listening()
        raw = tcp_bytes(SYN_SEG, src=b"\x0a\x00\x00\x09")  # computed as if from 10.0.0.9
        assert h.inject(raw, t=0.0) == []  # but sent from 10.0.0.2
        assert h.drops("bad_checksum") == 1

    @pytest.mark.parametrize("doff", [0, 4, 6, 15])
    def test_bad_data_offset_is_dropped(self, doff: int) -> None:
        """RFC 9293 §3.1 (T5): a data offset below 5 words or past the end of the segment is malformed and dropped."""
        h = listening()
        assert h.inject(tcp_bytes(SYN_SEG, data_offset=doff), t=0.0) == []
        assert h.drops("bad_data_offset") == 1

    def test_truncated_header_is_dropped(self) -> None:
        """RFC 9293 §3.1: fewer than 20 bytes cannot be a TCP header."""
        h = listening()
        assert h.inject(tcp_bytes(SYN_SEG)[:19], t=0.0) == []
        assert h.drops("truncated") == 1

    @pytest.mark.timeout(10)
    @pytest.mark.parametrize(
        "options",
        [
            b"\x02\x00\x05\xb4",  # MSS with length 0
            b"\x02\x01\x05\xb4",  # MSS with length 1
            b"\x01\x01\x01\xfd\x00\x00\x00\x00",  # unknown kind, length 0
            b"\xfd\x09\x00\x00",  # length 9 runs past a 4-byte option space
            b"\x01\x01\x01\x02",  # MSS kind as the last byte: no room for a length
        ],
    )
    def test_illegal_option_length_is_dropped_without_looping(self, options: bytes) -> None:
        """RFC 9293 §3.1, MUST-7 (T7): an option length of 0, 1 or past the header is malformed: drop, never loop."""
        h = listening()
        assert h.inject(SYN_SEG, t=0.0, options=options) == []
        assert h.drops("bad_option") == 1
        assert h.tcp.connections == {}

    def test_reserved_bits_are_ignored(self) -> None:
        """RFC 9293 §3.1 (T4): reserved bits set on receipt do not change processing."""
        h = listening()
        [synack] = h.inject(tcp_bytes(SYN_SEG, reserved=0x0F), t=0.0)
        assert synack.flags == SYN | ACK


class TestOptionsOnSyn:
    def handshake_and_send(self, h: LayerHarness, options: bytes, n: int) -> list[int]:
        conn, _ = h.handshake(window=65535, options=options)
        conn.send(data(n), h.now)
        h.user(conn)
        return [len(s.payload) for s in h.output(t=0.0)]

    def test_unknown_option_is_skipped_and_mss_still_honoured(self) -> None:
        """RFC 9293 §3.2, MUST-6 (T6): an unknown option with a length (kind 253, len 4) is skipped; the MSS after it
        counts."""
        h = listening()
        sizes = self.handshake_and_send(h, b"\xfd\x04\xab\xcd" + mss_option(1000), 3000)
        assert sizes == [1000, 1000, 1000]

    def test_unaligned_mss_after_one_nop_is_honoured(self) -> None:
        """RFC 9293 MUST-64 (T8): options need not be aligned: NOP then MSS 1000 at offset 1 is honoured."""
        h = listening()
        sizes = self.handshake_and_send(h, b"\x01" + mss_option(1000) + b"\x00", 2500)
        assert sizes == [1000, 1000, 500]

    def test_runs_of_nop_and_eol_padding(self) -> None:
        """RFC 9293 §3.2, MUST-4/5 (T6): NOPs and an EOL with zero padding after it are understood."""
        h = listening()
        sizes = self.handshake_and_send(h, b"\x01\x01\x01" + mss_option(700) + b"\x00\x00\x00\x00\x00", 1400)
        assert sizes == [700, 700]

    def test_options_after_eol_are_ignored(self) -> None:
        """RFC 9293 §3.2, MUST-4: EOL ends the option list, so an MSS after it is not read (536 applies)."""
        h = listening()
        sizes = self.handshake_and_send(h, b"\x00\x00\x00\x00" + mss_option(1000), 1000)
        assert sizes == [536, 464]

    def test_no_mss_option_means_536(self) -> None:
        """RFC 9293 §3.7.1, MUST-15 (T11): without an MSS option we send segments of at most 536 bytes."""
        h = listening()
        sizes = self.handshake_and_send(h, b"", 2000)
        assert sizes == [536, 536, 536, 392]

    def test_peer_mss_above_ours_is_capped_by_our_mtu(self) -> None:
        """RFC 9293 §3.7.1, MUST-16 (T12): Eff.snd.MSS = min(SendMSS + 20, MMS_S) - 20: never more than MTU - 40."""
        h = listening(mtu=1000)
        sizes = self.handshake_and_send(h, mss_option(9000), 2000)
        assert sizes == [960, 960, 80]

    def test_timestamps_option_does_not_shrink_mss_when_we_send_no_options(self) -> None:
        """RFC 9293 §3.7.1 (T12): our data segments carry no options (timestamps are off in these tests), so MSS
        1000 carries 1000 bytes."""
        h = listening()
        ts = b"\x01\x01\x08\x0a" + struct.pack("!II", 1, 0)
        sizes = self.handshake_and_send(h, mss_option(1000) + ts, 1000)
        assert sizes == [1000]

    @pytest.mark.parametrize("mss", [0, 1])
    def test_tiny_mss_does_not_break_the_connection(self, mss: int) -> None:
        """RFC 9293 §3.7.1 (checklist §5.2 probe): an MSS option of 0 is treated as absent (536) and MSS 1 still
        works with ``min_snd_mss = 1`` (the letter of MUST-15), no division by zero."""
        h = listening(min_snd_mss=1)
        sizes = self.handshake_and_send(h, mss_option(mss), 4)
        assert sum(sizes) == 4
        assert max(sizes) == (4 if mss == 0 else 1)

    @pytest.mark.parametrize(("mss", "sizes"), [(1, [48, 48, 4]), (47, [48, 48, 4]), (60, [60, 40])])
    def test_tiny_mss_is_raised_to_the_floor(self, mss: int, sizes: list[int]) -> None:
        """As Linux's tcp_min_snd_mss (CVE-2019-11479): by default a peer's MSS below 48 cannot make us send one
        segment per byte or two; 48 and above are honoured."""
        h = listening()
        assert self.handshake_and_send(h, mss_option(mss), 100) == sizes
