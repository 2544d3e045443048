"""ECN (RFC 3168 §6.1): negotiation, marking, echo and the sender's response."""

from __future__ import annotations

from dataclasses import replace

from framework.simulation import Simulation
from layers.ipv4.wire import Ipv4Repr
from layers.tcp.policy import TcpOptions
from layers.tcp.wire import ACK, CWR, ECE, SYN, TcpRepr
from plugins.ecn import CE, ECT0, Ecn
from tests.layers.tcp.helpers import data, make_stack, tcp_layer

SERVER = bytes([10, 0, 0, 2])


def _frames(stack: object) -> list[tuple[Ipv4Repr, TcpRepr]]:
    out = []
    for frame in stack.frames_to_send(now=0.0):  # type: ignore[attr-defined]
        ip, payload = Ipv4Repr.parse(memoryview(frame))
        out.append((ip, TcpRepr.parse(payload, None)))
    return out


class TestNegotiation:
    def test_ecn_setup_syn_has_ece_and_cwr_and_no_ect(self) -> None:
        """RFC 3168 §6.1.1: an ECN-setup SYN sets ECE and CWR and is not ECN-capable itself."""
        stack = make_stack(features={"ecn": {}})
        tcp_layer(stack).connect(SERVER, 80, now=0.0)
        [(ip, syn)] = _frames(stack)
        assert syn.flags & SYN and syn.flags & (ECE | CWR) == ECE | CWR
        assert ip.tos & 3 == 0

    def test_syn_without_the_feature_has_no_ecn_flags(self) -> None:
        """RFC 3168 §6.1.1: without ECN the SYN carries neither ECE nor CWR."""
        stack = make_stack()
        tcp_layer(stack).connect(SERVER, 80, now=0.0)
        [(_, syn)] = _frames(stack)
        assert not syn.flags & (ECE | CWR)

    def _handshake(self, client: dict[str, object], server: dict[str, object]) -> tuple[object, object]:
        sim = Simulation()
        a, b = make_stack("10.0.0.1/24", features=client), make_stack("10.0.0.2/24", features=server)
        sim.wire(a, b)
        listener = tcp_layer(b).listen(80)
        conn = tcp_layer(a).connect(SERVER, 80, now=0.0)
        sim.run(condition=lambda: bool(listener.accept_queue), until=5.0)
        return conn, listener.accept()

    def test_both_sides_enabled_negotiates(self) -> None:
        """RFC 3168 §6.1.1: an ECN-setup SYN answered by an ECN-setup SYN-ACK puts ECN in use on both sides."""
        conn, server = self._handshake({"ecn": {}}, {"ecn": {}})
        assert all(next(e for e in c.extensions if e.name == "ecn").active for c in (conn, server))  # type: ignore[attr-defined]

    def test_server_without_ecn_answers_without_ece(self) -> None:
        """RFC 3168 §6.1.1: a host not using ECN sends a plain SYN-ACK; the client then does not use ECN."""
        conn, _ = self._handshake({"ecn": {}}, {})
        assert not next(e for e in conn.extensions if e.name == "ecn").active  # type: ignore[attr-defined]

    def test_client_without_ecn_gets_a_plain_syn_ack(self) -> None:
        """RFC 3168 §6.1.1: an ECN-setup SYN-ACK is sent only in reply to an ECN-setup SYN."""
        _, server = self._handshake({}, {"ecn": {}})
        assert not next(e for e in server.extensions if e.name == "ecn").active  # type: ignore[attr-defined]


class _Conn:
    """The little of a connection Ecn needs, for tests of the policy alone."""

    def __init__(self) -> None:
        from layers.tcp.congestion import CongestionControl

        self.snd_una = 1000
        self.snd_max = 11000
        self.cc = CongestionControl(1000)
        self.cc.cwnd = 10_000


class TestPolicy:
    def test_receiver_echoes_ece_until_cwr(self) -> None:
        """RFC 3168 §6.1.3: after a CE-marked data segment every ACK carries ECE until a CWR segment arrives."""
        ecn, conn = Ecn(), _Conn()
        ecn.active = True
        seg = TcpRepr(1, 2, 5000, 1000, ACK, 100, b"x" * 10)
        seg.ip_ecn = CE
        ecn.accepted(conn, seg, 0.0)
        acks = [TcpRepr(2, 1, 1000, 5010, ACK, 100) for _ in range(3)]
        for a in acks:
            ecn.decorate(conn, a, 0.0)
        assert all(a.flags & ECE for a in acks)
        ecn.accepted(conn, TcpRepr(1, 2, 5010, 1000, ACK | CWR, 100, b"y"), 0.0)
        after = TcpRepr(2, 1, 1000, 5011, ACK, 100)
        ecn.decorate(conn, after, 0.0)
        assert not after.flags & ECE

    def test_sender_reduces_once_per_window_and_sends_cwr(self) -> None:
        """RFC 3168 §6.1.2: ECE halves cwnd like a loss, at most once per window; the next new data has CWR."""
        ecn, conn = Ecn(), _Conn()
        ecn.active = True
        for ack in (2000, 3000, 11000):  # all within the window outstanding at the first ECE
            ecn.accepted(conn, TcpRepr(1, 2, 5000, ack, ACK | ECE, 100), 0.0)
        assert ecn.reductions == 1
        assert conn.cc.cwnd == conn.cc.ssthresh == 5000
        first, second = (TcpRepr(2, 1, s, 0, ACK, 100, b"z" * 10) for s in (11000, 11010))
        ecn.decorate(conn, first, 0.0)
        ecn.decorate(conn, second, 0.0)
        assert first.flags & CWR and not second.flags & CWR
        ecn.accepted(conn, TcpRepr(1, 2, 5000, 11010, ACK | ECE, 100), 0.0)  # a later window
        assert ecn.reductions == 2

    def test_only_new_data_is_ect(self) -> None:
        """RFC 3168 §6.1.2, §6.1.5-6.1.6: new data is ECT(0); pure ACKs, retransmissions and probes are not."""
        ecn, conn = Ecn(), _Conn()
        ecn.active = True
        new = TcpRepr(2, 1, 11000, 0, ACK, 100, b"d")
        pure = TcpRepr(2, 1, 11000, 0, ACK, 100)
        rexmit = replace(TcpRepr(2, 1, 1000, 0, ACK, 100, b"r"))
        rexmit.rexmit = True
        for seg in (new, pure, rexmit):
            ecn.decorate(conn, seg, 0.0)
        assert (new.ip_ecn, pure.ip_ecn, rexmit.ip_ecn) == (ECT0, 0, 0)


class TestOnTheWire:
    def test_ce_marks_slow_the_sender_without_loss(self) -> None:
        """RFC 3168 §6.1: with an AQM marking 2% of ECT packets CE, the transfer completes without a single
        retransmission, and the sender reduced its window."""
        sim = Simulation()
        feats = {"ecn": {}}
        a = make_stack("10.0.0.1/24", features=feats)
        b = make_stack("10.0.0.2/24", fault={"seed": 3, "ce_mark": 0.02, "direction": "in"}, features=feats)
        sim.wire(a, b, delay=0.005, bandwidth=10e6)
        ta, tb = tcp_layer(a), tcp_layer(b)
        listener = tb.listen(80)
        conn = ta.connect(SERVER, 80, now=0.0, options=TcpOptions(features=feats, initial_window="rfc5681"))
        sim.run(condition=lambda: bool(listener.accept_queue), until=5.0)
        server = listener.accept()
        assert server is not None
        payload = data(1_000_000)
        got = bytearray()
        sent = 0

        def step() -> bool:
            nonlocal sent
            if sent < len(payload):
                n = conn.send(payload[sent : sent + 100_000], sim.now)
                sent += n
                if n:
                    ta.touch(conn)
            chunk = server.read()
            if chunk:
                got.extend(chunk)
                tb.touch(server)
            return len(got) == len(payload)

        sim.run(condition=step, until=60.0)
        ecn = next(e for e in conn.extensions if e.name == "ecn")
        assert bytes(got) == payload
        assert conn.retransmits == 0
        assert b.stats.events["fault.ce_marked"] > 0
        assert 0 < ecn.reductions <= b.stats.events["fault.ce_marked"]
