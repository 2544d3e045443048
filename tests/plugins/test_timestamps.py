"""TCP timestamps: the option, RTTM and PAWS (RFC 7323 §3-5; checklist H3-H7).

Three levels (design notes C8): the :class:`Timestamps` clock alone, one sans-IO connection at
explicit times whose peer offers (or not) the option, and the wiring (per-connection switch,
two simulated stacks). The peer's TSvals are chosen by each test.
"""

from __future__ import annotations

import socket
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from layers.tcp.connection import TcpConnection
from layers.tcp.events import ConnectionFailed
from layers.tcp.policy import TcpOptions
from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, FIN, RST, SYN
from plugins.timestamps import PAWS_IDLE, Timestamps
from tests.layers.tcp.helpers import SEND, data, decode, events, recv, recv_nothing, send, tcp_layer
from tests.plugins.helpers import L1, R1, closed_with, established_with, make_stack, transfer

S = TcpState
PEER = socket.inet_aton("10.0.0.2")
PEER_TS = 1000  # the peer's TSval on its SYN


def ts_conn(features: dict[str, Any] | None = None, **kw: Any) -> tuple[TcpConnection, Timestamps, int]:
    """ESTABLISHED with timestamps negotiated (the peer's SYN had TSval 1000); returns the connection, its
    extension and our TSval at t=0 (what the peer echoes)."""
    feats: dict[str, Any] = {"timestamps": {}}
    feats.update(features or {})
    conn, synack = established_with(feats, peer_ts=PEER_TS, **kw)
    ext = next(e for e in conn.extensions if isinstance(e, Timestamps))
    assert synack.ts is not None
    return conn, ext, synack.ts[0]


def seg(offset: int = 0, payload: bytes = b"", *, ts: tuple[int, int] | None, **kw: Any) -> Any:
    """A segment from the peer at R1 + *offset*, acknowledging our SYN."""
    return replace(SEND, **{"seq": R1 + offset, "ack": L1, "payload": payload, "ts": ts, **kw})


# ====================================================================== 1. the clock alone


class TestClock:
    def test_one_millisecond_ticks_with_an_offset(self) -> None:
        """RFC 7323 §5.4: TSval is a clock of 1 ms ticks (here) plus a per-connection offset (§7.1)."""
        ext = Timestamps(strict=True)
        ext.offset = 12345
        assert ext.tsval(0.0) == 12345
        assert ext.tsval(1.2345) - ext.tsval(0.0) == 1234

    def test_clock_wraps_modulo_two_to_the_32(self) -> None:
        """RFC 7323 §5.4: TSval is a 32-bit unsigned value that wraps."""
        ext = Timestamps(strict=True)
        ext.offset = 0xFFFF_FFFF
        assert ext.tsval(0.002) == 1

    @given(st.floats(0, 1e6), st.floats(0, 1e3))
    def test_monotonic(self, t: float, dt: float) -> None:
        """RFC 7323 §5.4 (checklist H7): the clock never runs backwards (modulo 2**32)."""
        ext = Timestamps(strict=True)
        ext.offset = 0xFFFF_0000
        assert (ext.tsval(t + dt) - ext.tsval(t)) & 0xFFFF_FFFF < 1 << 31

    def test_offset_differs_per_connection(self) -> None:
        """RFC 7323 §7.1: a per-connection offset, so TSvals do not reveal uptime or link connections."""
        a = closed_with({"timestamps": {}}, passive=False, iss=1)
        b = closed_with({"timestamps": {}}, passive=False, iss=2)
        for c in (a, b):
            c.open_active(5.0)
        [syn_a], [syn_b] = recv(a, t=5.0), recv(b, t=5.0)
        assert syn_a.ts is not None and syn_b.ts is not None and syn_a.ts[0] != syn_b.ts[0]


# ====================================================================== 2. on one connection


class TestNegotiation:
    def test_syn_carries_the_option(self) -> None:
        """RFC 7323 §3.2: the option is sent on a SYN, TSecr zero."""
        conn = closed_with({"timestamps": {}}, passive=False)
        conn.open_active(0.25)
        [syn] = recv(conn, t=0.25)
        ext = next(e for e in conn.extensions if isinstance(e, Timestamps))
        assert syn.flags == SYN and syn.ts == (ext.tsval(0.25), 0)

    def test_syn_ack_echoes_only_an_offer(self) -> None:
        """RFC 7323 §3.2: a SYN-ACK carries the option only if the SYN did, echoing its TSval."""
        _, offered = established_with({"timestamps": {}}, peer_ts=PEER_TS)
        _, not_offered = established_with({"timestamps": {}})
        assert offered.ts is not None and offered.ts[1] == PEER_TS
        assert not_offered.ts is None

    def test_not_negotiated_means_no_option_and_the_full_mss(self) -> None:
        """RFC 7323 §3.2: without the peer's offer no segment carries the option and the MSS is not reduced."""
        conn, _ = established_with({"timestamps": {}}, peer_mss=1460)
        assert conn.snd_mss == 1460
        conn.send(b"abc", 0.1)
        [out] = recv(conn, t=0.1)
        assert out.ts is None
        send(conn, t=0.2, seg=seg(0, b"xyz", ts=None))  # no option: fine, it was never negotiated
        [a] = recv(conn, t=0.2)
        assert a.ack == R1 + 3

    def test_active_open_with_a_syn_ack_without_the_option(self) -> None:
        """RFC 7323 §3.2: the option is used only if both SYNs carried it."""
        conn, _ = established_with({"timestamps": {}}, active=True)
        conn.send(b"abc", 0.1)
        assert recv(conn, t=0.1)[0].ts is None

    def test_effective_mss_shrinks_by_twelve(self) -> None:
        """RFC 9293 §3.7.1 (MUST-16) and RFC 7323 §3.2: the option takes 12 bytes of every segment's payload."""
        conn, _, _ = ts_conn(peer_mss=1460, peer_window=65535, send_buffer=8192)
        assert conn.snd_mss == conn.info.mss == conn.cc.mss == 1448
        conn.send(data(3000), 0.0)
        segs = recv(conn, t=0.0)
        assert [len(s.payload) for s in segs] == [1448, 1448, 104]
        assert all(20 + 20 + s.options_len() + len(s.payload) <= 1500 for s in segs)
        assert 20 + 20 + segs[0].options_len() + 1448 == 1500


class TestOnEverySegment:
    def test_data_and_acks_carry_tsval_and_tsecr(self) -> None:
        """RFC 7323 §3.2: once negotiated, every non-RST segment carries TSval (our clock) and TSecr (TS.Recent)."""
        conn, ext, _ = ts_conn()
        conn.send(b"abc", 0.5)
        [d] = recv(conn, t=0.5)
        assert d.ts == (ext.tsval(0.5), PEER_TS)
        assert ext.tsval(0.5) - ext.tsval(0.0) == 500
        send(conn, t=0.7, seg=seg(0, b"xy", ts=(PEER_TS + 700, ext.tsval(0.5))))
        [a] = recv(conn, t=0.7)
        assert a.ack == R1 + 2 and a.ts == (ext.tsval(0.7), PEER_TS + 700)

    def test_fin_carries_it_and_rst_does_not(self) -> None:
        """RFC 7323 §3.2: the option is on every segment but a RST."""
        conn, _, _ = ts_conn()
        conn.shutdown(0.1)
        [fin] = recv(conn, t=0.1)
        assert fin.flags & FIN and fin.ts is not None
        conn.abort(0.2)
        [rst] = recv(conn, t=0.2)
        assert rst.flags & RST and rst.ts is None

    def test_segment_without_the_option_is_dropped_once_negotiated(self) -> None:
        """RFC 7323 §3.2 (checklist H3): a non-RST segment without the option SHOULD be silently dropped."""
        conn, ext, _ = ts_conn()
        send(conn, t=0.1, seg=seg(0, b"abc", ts=None))
        recv_nothing(conn, t=0.1)
        assert conn.readable == 0 and conn.rcv_nxt == R1 and ext.no_option_drops == 1

    def test_segment_without_the_option_is_accepted_when_configured(self) -> None:
        """RFC 7323 §3.2 SHOULD, relaxed (``drop_without_option = false``, as Linux): the segment is accepted."""
        conn, ext, _ = ts_conn({"timestamps": {"drop_without_option": False}})
        send(conn, t=0.1, seg=seg(0, b"abc", ts=None))
        [a] = recv(conn, t=0.1)
        assert a.ack == R1 + 3 and conn.read() == b"abc" and ext.no_option_drops == 0
        assert a.ts == (ext.tsval(0.1), PEER_TS)  # TS.Recent is not changed by a segment without one


class TestEchoRules:
    def test_delayed_ack_echoes_the_earliest_unacknowledged_segment(self) -> None:
        """RFC 7323 §4.3 (checklist H4): with a delayed ACK, TSecr is the TSval of the earliest segment it covers."""
        conn, ext, ours = ts_conn({"delayed_ack": {"timeout": 0.04}})
        send(conn, t=0.010, seg=seg(0, b"a", ts=(2001, ours)))
        send(conn, t=0.020, seg=seg(1, b"b", ts=(2002, ours)))
        recv_nothing(conn, t=0.03)
        [a] = recv(conn, t=0.05)
        assert a.ack == R1 + 2 and a.ts == (ext.tsval(0.05), 2001)

    def test_out_of_order_echoes_the_last_in_sequence_segment(self) -> None:
        """RFC 7323 §4.3 (checklist H4): a duplicate ACK for out-of-order data echoes the last in-sequence
        segment, and the ACK for data filling the hole echoes the segment that filled it."""
        conn, _, ours = ts_conn()
        send(conn, t=0.1, seg=seg(0, b"A", ts=(2001, ours)))
        assert recv(conn, t=0.1)[0].ts[1] == 2001  # type: ignore[index]
        send(conn, t=0.2, seg=seg(2, b"C", ts=(2003, ours)))  # B is missing
        [dup] = recv(conn, t=0.2)
        assert dup.ack == R1 + 1 and dup.ts is not None and dup.ts[1] == 2001
        send(conn, t=0.3, seg=seg(1, b"B", ts=(2002, ours)))
        [full] = recv(conn, t=0.3)
        assert full.ack == R1 + 3 and full.ts is not None and full.ts[1] == 2002
        assert conn.read() == b"ABC"

    def test_old_duplicate_does_not_move_ts_recent(self) -> None:
        """RFC 7323 §4.3 (2): TS.Recent is updated only from SEG.TSval >= TS.Recent."""
        conn, ext, ours = ts_conn()
        send(conn, t=0.1, seg=seg(0, b"A", ts=(2001, ours)))
        recv(conn, t=0.1)
        send(conn, t=0.2, seg=seg(0, b"A", ts=(2001, ours)))  # a retransmission of A, same TSval
        [a] = recv(conn, t=0.2)
        assert a.ack == R1 + 1 and ext.ts_recent == 2001


class TestRttm:
    def test_sample_from_tsecr_even_for_a_retransmission(self) -> None:
        """RFC 7323 §4.1-4.2 (checklist H5): the ACK of a retransmitted segment gives an RTT sample from TSecr
        (no Karn ambiguity); without timestamps Karn's rule gives none."""
        conn, ext, _ = ts_conn()
        conn.send(b"abc", 0.0)
        [first] = recv(conn, t=0.0)
        assert conn.get_timer() == pytest.approx(1.0)
        [again] = recv(conn, t=1.0)
        assert again.payload == b"abc" and again.ts is not None and first.ts is not None
        assert again.ts[0] == first.ts[0] + 1000
        before = ext.samples
        send(conn, t=1.25, seg=seg(0, ts=(PEER_TS + 1250, again.ts[0]), ack=L1 + 3))
        assert ext.samples == before + 1 and conn.rtt.latest == pytest.approx(0.25)

        plain, _ = established_with({})
        plain.send(b"abc", 0.0)
        recv(plain, t=0.0)
        recv(plain, t=1.0)
        samples = plain.rtt.samples
        send(plain, t=1.25, seg=replace(SEND, seq=R1, ack=L1 + 3))
        assert plain.rtt.samples == samples  # Karn (RFC 6298 §3): no sample

    def test_every_ack_of_new_data_gives_a_sample(self) -> None:
        """RFC 7323 §4.1: RTTM samples every ACK of new data, not one segment per RTT as Karn timing does."""
        conn, ext, _ = ts_conn()
        sent = []
        for i in range(3):
            conn.send(b"x", i * 0.01)
            sent += recv(conn, t=i * 0.01)
        assert len(sent) == 3
        before = ext.samples
        for i, s in enumerate(sent):
            assert s.ts is not None
            send(conn, t=0.1 + i * 0.01, seg=seg(0, ts=(PEER_TS + 100 + i, s.ts[0]), ack=L1 + i + 1))
            assert conn.rtt.latest == pytest.approx(0.1)
        assert ext.samples == before + 3

    def test_ack_of_nothing_new_gives_no_sample(self) -> None:
        """RFC 7323 §4.1: only an ACK that acknowledges new data is timed."""
        conn, ext, ours = ts_conn()
        before = ext.samples
        send(conn, t=0.5, seg=seg(0, b"abc", ts=(PEER_TS + 500, ours)))
        assert ext.samples == before


class TestPaws:
    def test_older_tsval_in_window_is_acked_and_dropped(self) -> None:
        """RFC 7323 §5.3 R1 (checklist H6): a segment whose TSval is older than TS.Recent is answered with an
        ACK and dropped, even if its sequence numbers are in the window."""
        conn, ext, ours = ts_conn({"delayed_ack": {}})
        send(conn, t=0.1, seg=seg(0, b"new", ts=(5000, ours)))
        conn.read()
        recv(conn, t=0.2)
        send(conn, t=0.3, seg=seg(3, b"old", ts=(4000, ours)))  # in window, but TSval 4000 < 5000
        [a] = recv(conn, t=0.3)  # at once, despite delayed ACK
        assert a.flags == ACK and a.ack == R1 + 3 and a.ts is not None and a.ts[1] == 5000
        assert conn.readable == 0 and ext.paws_drops == 1

    def test_wrapped_tsval_is_newer(self) -> None:
        """RFC 7323 §5.3: TSvals compare modulo 2**32, so a wrapped clock is newer, not older."""
        conn, synack = established_with({"timestamps": {}}, peer_ts=0xFFFF_FF00)
        ext = next(e for e in conn.extensions if isinstance(e, Timestamps))
        ours = synack.ts[0] if synack.ts else 0
        send(conn, t=0.1, seg=seg(0, b"a", ts=(0xFFFF_FFF0, ours)))
        recv(conn, t=0.1)
        send(conn, t=0.2, seg=seg(1, b"b", ts=(5, ours)))
        [a] = recv(conn, t=0.2)
        assert a.ack == R1 + 2 and ext.paws_drops == 0 and ext.ts_recent == 5
        send(conn, t=0.3, seg=seg(2, b"c", ts=(0xFFFF_FFF8, ours)))  # from before the wrap: old
        [b] = recv(conn, t=0.3)
        assert b.ack == R1 + 2 and ext.paws_drops == 1

    def test_ts_recent_expires_after_24_days_idle(self) -> None:
        """RFC 7323 §5.5: after 24 days idle TS.Recent is invalid: the segment is accepted despite an older
        TSval, and TS.Recent is replaced by it (R3), so later ACKs echo the new clock."""
        conn, ext, ours = ts_conn()
        send(conn, t=0.1, seg=seg(0, b"a", ts=(5000, ours)))
        recv(conn, t=0.1)
        later = 0.1 + PAWS_IDLE + 1.0
        send(conn, t=later, seg=seg(1, b"b", ts=(4000, ours)))
        [a] = recv(conn, t=later)
        assert a.ack == R1 + 2 and ext.paws_drops == 0 and ext.ts_recent == 4000
        assert a.ts is not None and a.ts[1] == 4000
        send(conn, t=later + 0.1, seg=seg(2, b"c", ts=(3999, ours)))  # TS.Recent is valid again: PAWS
        assert recv(conn, t=later + 0.1)[0].ack == R1 + 2 and ext.paws_drops == 1

    def test_rst_is_not_subject_to_paws(self) -> None:
        """RFC 7323 §5.3 (checklist H6): PAWS never applies to a RST; one at RCV.NXT with an old TSval resets."""
        conn, ext, ours = ts_conn()
        send(conn, t=0.1, seg=seg(0, b"a", ts=(5000, ours)))
        recv(conn, t=0.1)
        send(conn, t=0.2, seg=seg(1, ts=(1, ours), flags=RST))
        assert conn.state is S.CLOSED and ext.paws_drops == 0
        assert any(isinstance(e, ConnectionFailed) and e.reason == "reset" for e in events(conn))

    def test_rst_without_the_option_is_accepted(self) -> None:
        """RFC 7323 §3.2: only non-RST segments need the option; a RST without it still resets."""
        conn, ext, _ = ts_conn()
        send(conn, t=0.2, seg=seg(0, ts=None, flags=RST))
        assert conn.state is S.CLOSED and ext.no_option_drops == 0


# ====================================================================== 3. wiring


class TestWiring:
    def test_on_by_default_and_off_for_one_connection(self) -> None:
        """RFC 7323 §3.2: the default set offers timestamps in the SYN; ``features={"timestamps": None}`` does
        not, on that connection only."""
        stack = make_stack(default_features=True)
        tcp = tcp_layer(stack)
        tcp.connect(PEER, 80, now=0.0)
        tcp.connect(PEER, 81, now=0.0, options=TcpOptions(features={"timestamps": None}))
        syns = {s.dst_port: s for s in (decode(f)[1] for f in stack.frames_to_send(now=0.0))}
        assert syns[80].ts is not None and syns[81].ts is None

    def test_settings_from_the_stack_configuration(self) -> None:
        """RFC 7323 §3.2: ``drop_without_option`` set in the tcp layer's features reaches every connection."""
        tcp = tcp_layer(make_stack(features={"timestamps": {"drop_without_option": False}}))
        conn = tcp.connect(PEER, 80, now=0.0)
        [ext] = [e for e in conn.extensions if isinstance(e, Timestamps)]
        assert ext.strict is False

    def test_transfer_between_two_stacks(self) -> None:
        """RFC 7323 §3.2 and §4.1: between two stacks every segment but RSTs carries the option, the data
        segments are MSS - 12 bytes, and the RTT estimate is the path's (10 ms) from TSecr samples."""
        kw = {"features": {"timestamps": {}}}
        a, b = make_stack(**kw), make_stack("10.0.0.2/24", **kw)
        sim, client, server = transfer(a, b, data(200_000), delay=0.005)
        assert all(seg.ts is not None for _, _, seg in sim.tap if not seg.flags & RST)
        assert {len(s.payload) for _, s in sim.data_segments(a)[:-1]} == {1448}
        assert client.conn is not None and server.conn is not None
        ext = next(e for e in client.conn.extensions if isinstance(e, Timestamps))
        acks = {s.ack for _, s in sim.pure_acks(b)}  # each distinct ACK of new data is one sample
        assert ext.samples >= len(acks) - 1 >= 5
        assert client.conn.rtt.srtt == pytest.approx(0.010, abs=0.002)
