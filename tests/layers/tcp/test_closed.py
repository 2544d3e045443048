"""CLOSED (no TCB) through the TCP layer: RST generation (RFC 9293 §3.10.7.1), ISNs and
ephemeral ports for active opens (RFC 6528, RFC 6056), connect() argument checks, demux."""

from __future__ import annotations

import itertools
import socket
from dataclasses import replace

import pytest

from framework.errors import InvalidStateError
from layers.tcp.seq import seq_diff, seq_gt
from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, FIN, PSH, RST, SYN
from tests.layers.tcp.helpers import (
    LOCAL_PORT,
    RECV,
    REMOTE_ADDR,
    REMOTE_PORT,
    SEND,
    LayerHarness,
    data,
    frame,
)

S = TcpState


class TestRstToClosedPort:
    def test_ack_bearing_segment_gets_rst_with_seq_seg_ack(self) -> None:
        """RFC 9293 §3.10.7.1 (E8): if the ACK bit is on, answer <SEQ=SEG.ACK><CTL=RST>."""
        h = LayerHarness()
        out = h.inject(replace(SEND, seq=100, ack=5000, payload=b"hello"), t=0.0)
        assert out == [replace(RECV, seq=5000, ack=0, flags=RST, window=0)]
        assert h.stack.stats.events["tcp.rst_sent_no_tcb"] == 1

    def test_syn_gets_rst_ack_acknowledging_the_syn(self) -> None:
        """RFC 9293 §3.10.7.1 (E8): ACK bit off: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, the SYN counting one."""
        h = LayerHarness()
        out = h.inject(replace(SEND, seq=1000, ack=0, flags=SYN), t=0.0)
        assert out == [replace(RECV, seq=0, ack=1001, flags=RST | ACK, window=0)]

    def test_fin_with_data_without_ack_gets_rst_ack_covering_data_and_fin(self) -> None:
        """RFC 9293 §3.10.7.1 (E8): FIN (ACK bit off) + 10 bytes to a closed port -> RST,ACK with ACK = seq + 11."""
        h = LayerHarness()
        out = h.inject(replace(SEND, seq=7000, ack=0, flags=FIN, payload=data(10)), t=0.0)
        assert out == [replace(RECV, seq=0, ack=7011, flags=RST | ACK, window=0)]

    def test_segment_with_no_flags_gets_rst_ack(self) -> None:
        """RFC 9293 §3.10.7.1 (E8): any non-RST segment without ACK, even with no flags, is answered."""
        h = LayerHarness()
        out = h.inject(replace(SEND, seq=0xFFFFFFFF, ack=0, flags=0, payload=b"x"), t=0.0)
        assert out == [replace(RECV, seq=0, ack=0, flags=RST | ACK, window=0)]  # wraps mod 2**32

    @pytest.mark.parametrize("flags", [RST, RST | ACK, RST | PSH | ACK, RST | SYN, RST | FIN])
    def test_rst_is_never_answered(self, flags: int) -> None:
        """RFC 9293 §3.10.7.1 (R10): "An incoming segment containing a RST is discarded"; never a RST for a RST."""
        h = LayerHarness()
        assert h.inject(replace(SEND, seq=1, ack=2, flags=flags, payload=b"data"), t=0.0) == []
        assert h.drops("rst_no_tcb") == 1
        assert h.tcp.connections == {}

    def test_closed_listener_port_answers_with_rst(self) -> None:
        """RFC 9293 §3.10.7.1: after the listener is removed the port is CLOSED again and SYNs get RST."""
        h = LayerHarness()
        listener = h.tcp.listen(LOCAL_PORT)
        h.tcp.unlisten(listener)
        out = h.inject(replace(SEND, seq=5, ack=0, flags=SYN), t=0.0)
        assert out == [replace(RECV, seq=0, ack=6, flags=RST | ACK, window=0)]

    def test_rst_goes_back_to_the_sender(self) -> None:
        """RFC 9293 §3.10.7.1: the RST is addressed to the segment's source address and port, from ours."""
        h = LayerHarness()
        h.stack.receive_frame(frame(replace(SEND, seq=1, ack=2)), now=0.0)
        [(ip, seg)] = h.output_frames(t=0.0)
        assert (ip.src, ip.dst) == (socket.inet_aton("10.0.0.1"), REMOTE_ADDR)
        assert (seg.src_port, seg.dst_port) == (LOCAL_PORT, REMOTE_PORT)


class TestActiveOpenArguments:
    @pytest.mark.parametrize(
        "addr",
        ["255.255.255.255", "10.0.0.255", "224.0.0.1", "239.255.255.250", "0.0.0.0", "240.0.0.1"],
    )
    def test_connect_to_broadcast_or_multicast_is_rejected(self, addr: str) -> None:
        """RFC 9293 §3.9.1.1, MUST-46 (E14): OPEN to a broadcast/multicast/invalid address is an error; no SYN
        leaves."""
        h = LayerHarness()
        with pytest.raises(ValueError, match="MUST-46"):
            h.tcp.connect(socket.inet_aton(addr), 80, now=0.0)
        assert h.output(t=0.0) == []
        assert h.tcp.connections == {}

    @pytest.mark.parametrize("port", [0, 65536, -1])
    def test_connect_to_bad_port_is_rejected(self, port: int) -> None:
        """RFC 9293 §3.1: ports are 1-65535 (0 is not a destination)."""
        h = LayerHarness()
        with pytest.raises(ValueError):
            h.tcp.connect(REMOTE_ADDR, port, now=0.0)

    def test_connect_to_a_used_four_tuple_is_rejected(self) -> None:
        """RFC 9293 §3.9.1.1: a connection is named by its 4-tuple; a second OPEN on one is an error."""
        h = LayerHarness()
        h.tcp.connect(REMOTE_ADDR, 80, local_port=50000, now=0.0)
        with pytest.raises(InvalidStateError):
            h.tcp.connect(REMOTE_ADDR, 80, local_port=50000, now=0.0)


class TestEphemeralPorts:
    def test_ports_are_unique_in_the_iana_range_and_not_sequential(self) -> None:
        """RFC 6056 §3.3.1 (SEC2): ports come from 49152-65535, differ per connection, and are not sequential."""
        h = LayerHarness(port_seed=None)
        ports = [h.tcp.connect(REMOTE_ADDR, 80, now=0.0).local[1] for _ in range(300)]
        assert len(set(ports)) == 300
        assert all(49152 <= p <= 65535 for p in ports)
        steps = [b - a for a, b in itertools.pairwise(ports)]
        assert sum(1 for s in steps if s == 1) < 30  # an incrementing counter would make all of them +1

    def test_different_seeds_start_at_different_ports(self) -> None:
        """RFC 6056 §3.3.1 (SEC2): the first port is drawn at random, so stacks do not all start at 49152."""
        firsts = {LayerHarness(port_seed=seed).tcp.connect(REMOTE_ADDR, 80, now=0.0).local[1] for seed in range(10)}
        assert len(firsts) >= 8

    def test_syn_leaves_from_the_chosen_port(self) -> None:
        """RFC 9293 §3.10.1: the active OPEN's SYN carries the local port the TCB was created with."""
        h = LayerHarness()
        conn = h.tcp.connect(REMOTE_ADDR, 80, now=0.0)
        [syn] = h.output(t=0.0)
        assert syn.flags == SYN and syn.src_port == conn.local[1] and syn.dst_port == 80


class TestInitialSequenceNumbers:
    def test_isns_differ_across_four_tuples(self) -> None:
        """RFC 6528 §3 (SEC1, MUST-8): ISN = M + F(4-tuple, secret): different tuples at one instant get different
        ISNs."""
        h = LayerHarness(isn_secret="0123456789abcdef0123456789abcdef")
        for port in range(50000, 50020):
            h.tcp.connect(REMOTE_ADDR, 80, local_port=port, now=0.0)
        isns = [s.seq for s in h.output(t=0.0)]
        assert len(isns) == 20 and len(set(isns)) == 20

    def test_isn_of_one_tuple_grows_with_the_4us_clock(self) -> None:
        """RFC 6528 §3 (SEC1, MUST-9): M is a 4-microsecond timer, so the same tuple 1 s later starts 250000 higher."""
        h = LayerHarness()
        conn = h.tcp.connect(REMOTE_ADDR, 80, local_port=50000, now=0.0)
        [first] = h.output(t=0.0)
        conn.abort(0.5)
        h.user(conn)
        h.output(t=0.5)
        assert h.tcp.connections == {}
        h.tcp.connect(REMOTE_ADDR, 80, local_port=50000, now=1.0)
        [second] = h.output(t=1.0)
        assert seq_gt(second.seq, first.seq)
        assert seq_diff(second.seq, first.seq) == 250_000

    def test_isn_depends_on_the_secret(self) -> None:
        """RFC 6528 §3 (SHLD-1): F is keyed, so another secret gives another ISN for the same tuple and time."""
        a = LayerHarness(isn_secret="00" * 16)
        b = LayerHarness(isn_secret="11" * 16)
        for h in (a, b):
            h.tcp.connect(REMOTE_ADDR, 80, local_port=50000, now=0.0)
        assert a.output(t=0.0)[0].seq != b.output(t=0.0)[0].seq

    def test_default_secret_is_random_per_stack(self) -> None:
        """RFC 6528 §3: without a configured key each stack draws its own, so ISNs are not predictable across stacks."""
        seqs = set()
        for _ in range(5):
            h = LayerHarness(isn_secret=None)
            h.tcp.connect(REMOTE_ADDR, 80, local_port=50000, now=0.0)
            seqs.add(h.output(t=0.0)[0].seq)
        assert len(seqs) == 5


class TestDemultiplexing:
    def test_connections_differing_only_in_remote_port_are_kept_apart(self) -> None:
        """RFC 9293 §3.3.1: the 4-tuple names the TCB; 50 connections from one address get each their own bytes."""
        h = LayerHarness(initial_sequence=1000)
        h.tcp.listen(LOCAL_PORT, backlog=64)
        conns = {}
        for i in range(50):
            conn, _ = h.handshake(remote_port=40000 + i, irs=i * 1000)
            conns[40000 + i] = conn
        for i in range(50):
            payload = f"connection {i:02d}".encode()
            out = h.inject(replace(SEND, src_port=40000 + i, seq=i * 1000 + 1, ack=1001, payload=payload), t=0.1)
            assert out == [replace(RECV, dst_port=40000 + i, seq=1001, ack=i * 1000 + 1 + len(payload), window=65535)]
        for i in range(50):
            assert conns[40000 + i].read() == f"connection {i:02d}".encode()
        assert len(h.tcp.connections) == 50


class TestEventDispatch:
    def test_failing_listener_does_not_cost_other_connections_their_events(self, log_output: object) -> None:
        """RFC 9293 §3.9.1 (MUST-12): every connection's user hears of its events even when another
        connection's listener raises."""
        from framework.simulation import Simulation
        from tests.layers.tcp.helpers import make_stack, tcp_layer

        sim = Simulation()
        a = make_stack("10.0.0.1/24")
        b = make_stack("10.0.0.2/24")
        sim.wire(a, b)
        ta, tb = tcp_layer(a), tcp_layer(b)
        tb.listen(80)
        seen: list[tuple[str, str]] = []

        class Bad:
            def handle_event(self, conn: object, event: object) -> None:
                raise RuntimeError("application bug")

        class Good:
            def handle_event(self, conn: object, event: object) -> None:
                seen.append((type(event).__name__, str(conn)))

        c1 = ta.connect(bytes([10, 0, 0, 2]), 80, now=0.0)
        c2 = ta.connect(bytes([10, 0, 0, 2]), 80, now=0.0)
        c1.listener, c2.listener = Bad(), Good()
        sim.run(until=1.0)
        assert ("Connected", str(c2)) in seen
        entries = log_output.entries  # type: ignore[attr-defined]
        assert any(e["event"] == "tcp.listener_failed" for e in entries)
