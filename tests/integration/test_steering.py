"""The eBPF steering program of `tcpstack up --workers` (tcpstack/steering.py), run by the kernel
(BPF_PROG_TEST_RUN) on generated IPv4 datagrams and compared with its Python model; and the
worker -> queue map through a death and a restart. Needs root (eBPF)."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpstack.steering import Steering, expected_worker
from tcpstack.workers import port_slices

LOW, HIGH = 49152, 65535


@pytest.fixture(scope="module")
def steering_capability() -> None:
    if os.geteuid() == 0:
        return
    if os.environ.get("TCPSTACK_REQUIRE_INTEGRATION"):
        pytest.fail("the steering tests are required here but need root (eBPF)")
    pytest.skip("needs root (eBPF)")


@pytest.fixture(scope="module", params=[2, 3])
def program(request: pytest.FixtureRequest, steering_capability: None) -> Iterator[Steering]:
    s = Steering(None, request.param, LOW, HIGH)
    for worker in range(request.param):
        s.attached(worker)  # queue index == worker
    yield s
    s.close()


def datagram(proto: int, src: int, dst: int, sport: int, dport: int, flags_frag: int, options: int) -> bytes:
    ihl = 5 + options
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 0, 1, flags_frag, 64, proto, 0,
                         src.to_bytes(4, "big"), dst.to_bytes(4, "big")) + bytes(4 * options)  # fmt: skip
    return header + struct.pack("!HH", sport, dport) + bytes(16)


ports = st.one_of(st.integers(0, 65535), st.integers(LOW - 2, LOW + 2), st.integers(HIGH - 2, HIGH), st.just(80))


@settings(max_examples=400, deadline=None)
@given(
    proto=st.sampled_from([6, 17, 1, 47]),
    src=st.integers(0, 2**32 - 1),
    dst=st.integers(0, 2**32 - 1),
    sport=ports,
    dport=ports,
    flags_frag=st.one_of(st.just(0x4000), st.just(0), st.just(0x2000), st.integers(0, 0xFFFF)),
    options=st.integers(0, 3),
)
def test_the_kernel_runs_the_program_as_its_model_says(
    program: Steering, proto: int, src: int, dst: int, sport: int, dport: int, flags_frag: int, options: int
) -> None:
    d = datagram(proto, src, dst, sport, dport, flags_frag, options)
    assert program.test_run(d) == expected_worker(d, program.workers, LOW, HIGH)


def icmp(src: int, dst: int, icmp_type: int, quoted: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 1, 0, 64, 1, 0, src.to_bytes(4, "big"), dst.to_bytes(4, "big"))
    return header + struct.pack("!BBHI", icmp_type, 0, 0, 0) + quoted


@settings(max_examples=300, deadline=None)
@given(
    icmp_type=st.sampled_from([0, 3, 4, 5, 8, 11, 12]),
    qproto=st.sampled_from([6, 17, 1]),
    router=st.integers(0, 2**32 - 1),
    peer=st.integers(0, 2**32 - 1),
    ours=ports,
    theirs=ports,
    qfrag=st.sampled_from([0x4000, 0, 0x2000, 0x0010]),
    qoptions=st.integers(0, 2),
)
def test_icmp_errors_follow_the_datagram_they_quote(
    program: Steering, icmp_type: int, qproto: int, router: int, peer: int, ours: int, theirs: int, qfrag: int,
    qoptions: int,
) -> None:  # fmt: skip
    quoted = datagram(qproto, 0x0A000002, peer, ours, theirs, qfrag, qoptions)[: 20 + 4 * qoptions + 8]
    d = icmp(router, 0x0A000002, icmp_type, quoted)
    assert program.test_run(d) == expected_worker(d, program.workers, LOW, HIGH)


def test_an_icmp_error_reaches_the_worker_of_its_connection(program: Steering) -> None:
    """A 'fragmentation needed' from a router about our segment reaches the worker that owns the
    connection, for an active open (by our port's slice) and for a passive one (by the peer)."""
    for our_port, peer_port in ((port_slices(program.workers, LOW, HIGH)[-1][0], 80), (80, 40000), (7, 40002)):
        segment = datagram(6, 0x0A000002, 0x0A000001, our_port, peer_port, 0x4000, 0)
        reply = datagram(6, 0x0A000001, 0x0A000002, peer_port, our_port, 0x4000, 0)  # the peer's own segment
        error = icmp(0x0A0000FE, 0x0A000002, 3, segment[:28])
        assert program.test_run(error) == program.test_run(reply)


def test_what_each_kind_of_datagram_goes_by(program: Steering) -> None:
    n = program.workers
    for k, (low, high) in enumerate(port_slices(n, LOW, HIGH)):  # our active opens: by slice
        for port in (low, (low + high) // 2, high):
            assert program.test_run(datagram(6, 0x0A000001, 0x0A000002, 80, port, 0x4000, 0)) == k
            assert program.test_run(datagram(17, 0x0A000001, 0x0A000002, 53, port, 0, 0)) == k
    # To a listener: by the peer's address and port, the same for every segment of a flow;
    # the kernel's even connect() ports still spread over the workers.
    seen = {program.test_run(datagram(6, 0x0A000001, 0x0A000002, p, 80, 0x4000, 0)) for p in range(32768, 32868, 2)}
    assert seen == set(range(n))
    # Fragments of one datagram (first, middle, last) and ICMP echo: by addresses alone.
    first, middle, last = (datagram(17, 0x0A000001, 0x0A000002, s, 7, f, 0) for s, f in
                           ((1234, 0x2000), (0, 0x2000 | 185), (0, 370)))  # fmt: skip
    ping = datagram(1, 0x0A000001, 0x0A000002, 0x0800, 0, 0, 0)
    assert len({program.test_run(x) for x in (first, middle, last, ping)}) == 1
    # Too short to hold the ports: the kernel stops the program, queue 0.
    assert program.test_run(datagram(6, 0x0A000001, 0x0A000002, 80, 50000, 0, 0)[:22]) == 0


def test_the_map_follows_the_kernels_queue_order(steering_capability: None) -> None:
    """Worker 0 of 3 dies: the kernel moves the last queue (worker 2's) into its place; worker 0
    comes back on a new last queue. A dead worker's share goes to a live queue meanwhile."""
    s = Steering(None, 3, LOW, HIGH)
    try:
        for worker in range(3):
            s.attached(worker)
        port = {k: low for k, (low, _) in enumerate(port_slices(3, LOW, HIGH))}

        def queue_of(worker: int) -> int:
            return s.test_run(datagram(6, 0x0A000001, 0x0A000002, 80, port[worker], 0x4000, 0))

        assert [queue_of(k) for k in range(3)] == [0, 1, 2]
        s.detached(0)
        assert s.order == [2, 1] and (queue_of(1), queue_of(2)) == (1, 0) and queue_of(0) in (0, 1)
        s.attached(0)
        assert s.order == [2, 1, 0] and [queue_of(k) for k in range(3)] == [2, 1, 0]
        s.detached(0)  # the last queue goes: nothing moves
        assert s.order == [2, 1] and (queue_of(1), queue_of(2)) == (1, 0)
    finally:
        s.close()
