"""Two stacks joined by a simulated wire, with the seeded ``fault`` middleware (drop, duplicate,
reorder, corrupt, delay) between the memory link and ipv4 on one or both sides. The property
(RFC 9293 §1, §3.4, §3.6): every byte is delivered exactly once and in order in both
directions, both connections end CLOSED or TIME-WAIT with no failure, and no stack ever counts
an internal error. Virtual time and steps are bounded, so a stall fails instead of hanging."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from framework.simulation import Simulation
from layers.tcp.handler import TcpLayer
from layers.tcp.policy import TcpOptions
from layers.tcp.state import TcpState
from tests.layers.tcp.helpers import App, data, make_stack, tcp_layer

S = TcpState
CI = bool(os.environ.get("CI"))
VIRTUAL_LIMIT = 900.0  # seconds of simulated time (R2 is 100 s; a stall ends long before this)
MAX_STEPS = 400_000
SERVER = socket.inet_aton("10.0.0.2")


# Under faults on both stacks (up to 10 % drops and 5 % corruption each way, on each side) a
# round trip fails up to ~40 % of the time, so nine lost retransmissions of one segment in a row
# (the default R2 of 100 s with backoff) happen in a few runs per thousand: the stack then gives
# up as RFC 9293 §3.8.3 (MUST-20) requires, which is correct behaviour but not what this property
# tests. Faulty pairs cap the RTO at 1 s and retry for 600 s, so giving up needs hundreds of
# losses in a row; a real stall still fails (no progress until VIRTUAL_LIMIT).
def _patient(layer: TcpLayer) -> TcpOptions:
    return replace(layer.settings.default_options(), max_rto=1.0, retries_timeout=600.0, syn_retries_timeout=600.0)


@dataclass
class Outcome:
    client: App
    server: App
    sim: Simulation
    steps: int
    stacks: tuple[Any, Any]

    def describe(self) -> str:
        c, s = self.client, self.server
        return (
            f"t={self.sim.now:.3f} steps={self.steps} client={c.conn} sent={c.sent} got={len(c.received)} eof={c.eof} "
            f"fail={c.failures} | server={s.conn} sent={s.sent} got={len(s.received)} eof={s.eof} fail={s.failures}"
        )


def run_pair(
    *,
    size_c2s: int,
    size_s2c: int,
    client_fault: dict[str, Any] | None = None,
    server_fault: dict[str, Any] | None = None,
    close_after_eof: tuple[bool, bool] = (False, False),
    delay: float = 0.002,
    bandwidth: float | None = 20e6,
) -> Outcome:
    sim = Simulation()
    a = make_stack("10.0.0.1/24", fault=client_fault)
    b = make_stack("10.0.0.2/24", fault=server_fault)
    sim.wire(a, b, delay=delay, bandwidth=bandwidth)
    ta, tb = tcp_layer(a), tcp_layer(b)
    server = App(sim, tb, data(size_s2c, start=3), close_after_eof=close_after_eof[1])
    faulty = client_fault is not None or server_fault is not None
    tb.listen(80, on_accept=server.attach, options=_patient(tb) if faulty else None)
    client = App(sim, ta, data(size_c2s), close_after_eof=close_after_eof[0])
    client.attach(ta.connect(SERVER, 80, now=0.0, options=_patient(ta) if faulty else None))

    def finished() -> bool:
        if client.failures or server.failures:
            return True
        ends = (S.CLOSED, S.TIME_WAIT)
        return bool(
            client.eof
            and server.eof
            and client.conn is not None
            and server.conn is not None
            and client.conn.state in ends
            and server.conn.state in ends
        )

    steps = sim.run(until=VIRTUAL_LIMIT, condition=finished, max_steps=MAX_STEPS)
    return Outcome(client, server, sim, steps, (a, b))


def check(out: Outcome, size_c2s: int, size_s2c: int) -> None:
    """The pair property: exact delivery both ways, clean ends, no internal errors."""
    info = out.describe()
    assert not out.client.failures and not out.server.failures, info
    assert out.server.conn is not None, info
    assert bytes(out.server.received) == data(size_c2s), info
    assert bytes(out.client.received) == data(size_s2c, start=3), info
    assert out.client.eof and out.server.eof, info
    assert out.client.conn is not None and out.client.conn.state in (S.CLOSED, S.TIME_WAIT), info
    assert out.server.conn.state in (S.CLOSED, S.TIME_WAIT), info
    for stack in out.stacks:
        assert stack.stats.drops[("stack", "internal_error")] == 0, info


class TestCleanPair:
    @pytest.mark.parametrize(("c2s", "s2c"), [(0, 0), (1, 0), (0, 1), (1000, 1000), (300_000, 0), (0, 300_000)])
    def test_transfer_without_faults(self, c2s: int, s2c: int) -> None:
        """RFC 9293 §3.6: data both ways then FINs: exact delivery and clean ends, 0 B to 300 KB."""
        out = run_pair(size_c2s=c2s, size_s2c=s2c)
        check(out, c2s, s2c)
        # The side that closed first waits in TIME-WAIT; the other ends CLOSED.
        assert {out.client.conn.state, out.server.conn.state} <= {S.CLOSED, S.TIME_WAIT}  # type: ignore[union-attr]

    def test_simultaneous_open_between_two_stacks(self) -> None:
        """RFC 9293 §3.5 Figure 8, MUST-10 (E5): both sides OPEN actively to each other at once: one connection
        results."""
        sim = Simulation()
        a, b = make_stack("10.0.0.1/24"), make_stack("10.0.0.2/24")
        sim.wire(a, b, delay=0.01)
        ta, tb = tcp_layer(a), tcp_layer(b)
        ca = ta.connect(SERVER, 5000, local_port=6000, now=0.0)
        cb = tb.connect(socket.inet_aton("10.0.0.1"), 6000, local_port=5000, now=0.0)
        sim.run(until=5.0, condition=lambda: ca.state is cb.state is S.ESTABLISHED)
        assert ca.state is S.ESTABLISHED and cb.state is S.ESTABLISHED
        ca.send(b"ping", sim.now)
        ta.touch(ca)
        sim.run(until=sim.now + 1.0, condition=lambda: cb.readable == 4)
        assert cb.read() == b"ping"

    def test_lost_syn_is_retransmitted_after_the_initial_rto(self) -> None:
        """RFC 6298 (2.1), (5.4) (design notes C8): the first SYN is lost; the retransmission at 1 s completes the
        handshake."""
        sim = Simulation()
        a, b = make_stack("10.0.0.1/24", fault={}), make_stack("10.0.0.2/24")
        sim.wire(a, b, delay=0.001)
        fault = a.layer("fault")
        fault.drop_next(direction="out")  # type: ignore[attr-defined]
        ta, tb = tcp_layer(a), tcp_layer(b)
        tb.listen(80)
        conn = ta.connect(SERVER, 80, now=0.0)
        sim.run(until=0.9)
        assert conn.state is S.SYN_SENT
        assert a.get_timer() == pytest.approx(1.0)
        sim.run(until=1.1)
        assert conn.state is S.ESTABLISHED

    def test_lost_final_ack_and_syn_ack(self) -> None:
        """RFC 9293 §3.10.7.4, conformance probe (§5.2): losing the SYN-ACK and then the final ACK still ends
        ESTABLISHED on both sides."""
        sim = Simulation()
        a, b = make_stack("10.0.0.1/24", fault={}), make_stack("10.0.0.2/24", fault={})
        sim.wire(a, b, delay=0.001)
        b.layer("fault").drop_next(direction="out")  # type: ignore[attr-defined]  # the SYN-ACK
        a.layer("fault").add_rule("drop", direction="out", nth=2)  # type: ignore[attr-defined]  # the final ACK
        ta, tb = tcp_layer(a), tcp_layer(b)
        listener = tb.listen(80)
        conn = ta.connect(SERVER, 80, now=0.0)
        sim.run(until=10.0)
        accepted = listener.accept()
        assert conn.state is S.ESTABLISHED
        assert accepted is not None and accepted.state is S.ESTABLISHED


RATE = st.floats(0.0, 0.10, allow_nan=False)
SIZE = st.sampled_from([0, 1, 536, 1460, 65536]) | st.integers(0, 300_000)
FAULT = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31),
        "drop": RATE,
        "duplicate": RATE,
        "reorder": RATE,
        "corrupt": st.floats(0.0, 0.05, allow_nan=False),
        "delay": st.floats(0.0, 0.05, allow_nan=False),
        "delay_time": st.sampled_from([0.001, 0.01, 0.05, 0.3]),
        "direction": st.sampled_from(["both", "in", "out"]),
    }
)


class TestFaultyPair:
    @settings(
        max_examples=300 if CI else 30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=not CI,  # locally the same examples every run; CI explores new ones
    )
    @given(
        size_c2s=SIZE,
        size_s2c=SIZE,
        sides=st.sampled_from(["client", "server", "both"]),
        client_fault=FAULT,
        server_fault=FAULT,
        close_after_eof=st.tuples(st.booleans(), st.booleans()),
        wire=st.sampled_from([(0.0001, None), (0.002, 20e6), (0.05, 1e6)]),  # (delay s, bandwidth B/s)
    )
    @example(
        size_c2s=300_000,
        size_s2c=300_000,
        sides="both",
        client_fault={
            "seed": 1,
            "drop": 0.1,
            "duplicate": 0.1,
            "reorder": 0.1,
            "corrupt": 0.05,
            "delay": 0.05,
            "delay_time": 0.05,
            "direction": "both",
        },
        server_fault={
            "seed": 2,
            "drop": 0.1,
            "duplicate": 0.1,
            "reorder": 0.1,
            "corrupt": 0.05,
            "delay": 0.05,
            "delay_time": 0.3,
            "direction": "both",
        },
        close_after_eof=(True, False),
        wire=(0.002, 20e6),
    )  # regression: both sides in go-back-N once deadlocked on pure ACKs below the peer's RCV.NXT
    def test_every_byte_once_in_order_both_ways(
        self,
        size_c2s: int,
        size_s2c: int,
        sides: str,
        client_fault: dict[str, Any],
        server_fault: dict[str, Any],
        close_after_eof: tuple[bool, bool],
        wire: tuple[float, float | None],
    ) -> None:
        """RFC 9293 §1, §3.4-3.6, §3.8: with loss up to 10 %, duplication, reordering, corruption and delay, every byte
        arrives exactly once and in order both ways, and both sides close cleanly (CLOSED or TIME-WAIT)."""
        out = run_pair(
            size_c2s=size_c2s,
            size_s2c=size_s2c,
            client_fault=client_fault if sides in ("client", "both") else None,
            server_fault=server_fault if sides in ("server", "both") else None,
            close_after_eof=close_after_eof,
            delay=wire[0],
            bandwidth=wire[1],
        )
        check(out, size_c2s, size_s2c)
