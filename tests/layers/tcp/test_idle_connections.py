"""Idle connections (issue 11: "10,000 idle connections cost at most 16 KiB each, and no CPU"),
counted, not timed: the bytes of Python objects that idle established connections hold
(tracemalloc), and the timer wake-ups the stack asks for while they stay idle (none).

bench/conn_memory.py measures the same for 10,000 connections, with RSS and live CPU time."""

from __future__ import annotations

import gc
import struct
import tracemalloc
from dataclasses import replace

from layers.tcp.wire import ACK, SYN
from tests.layers.tcp.helpers import REMOTE_ADDR, SEND, LayerHarness

PORT = 80
WARMUP = 50
CONNS = 2000
LIMIT = 16 * 1024
TSVAL = 1000


def linux_syn_options() -> bytes:
    """What Linux puts on a SYN: MSS, SACK-permitted, timestamps, NOP, window scale 7."""
    return struct.pack("!BBH", 2, 4, 1460) + bytes([4, 2, 8, 10]) + struct.pack("!II", TSVAL, 0) + bytes([1, 3, 3, 7])


def open_idle(h: LayerHarness, first_port: int, n: int, t: float) -> None:
    for port in range(first_port, first_port + n):
        syn = replace(SEND, src_port=port, dst_port=PORT, seq=5000, ack=0, flags=SYN, window=64240)
        (synack,) = h.inject(syn, t=t, options=linux_syn_options())
        assert synack.flags == SYN | ACK and synack.ts is not None
        ack = replace(SEND, src_port=port, dst_port=PORT, seq=5001, ack=synack.seq + 1, flags=ACK, window=502)
        ts = bytes([1, 1, 8, 10]) + struct.pack("!II", TSVAL, synack.ts[0])
        assert h.inject(ack, t=t, options=ts) == []


def test_idle_connections_hold_at_most_16_kib_each_and_arm_no_timer() -> None:
    h = LayerHarness(default_features=True)  # the features `tcpstack up` runs with
    h.tcp.listen(PORT, backlog=CONNS + WARMUP)
    open_idle(h, 1024, WARMUP, 1.0)  # first-use caches are not the connections' memory
    gc.collect()
    tracemalloc.start()
    try:
        open_idle(h, 1024 + WARMUP, CONNS, 1.0)
        gc.collect()
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    conns = [c for (addr, _port, local), c in h.tcp.connections.items() if addr == REMOTE_ADDR and local == PORT]
    assert len(conns) == CONNS + WARMUP and all(c.state.value == "ESTABLISHED" for c in conns)
    assert {"sack", "timestamps", "window_scaling"} <= set(conns[-1].features)  # what a Linux peer agrees to
    per_conn = held / CONNS
    assert per_conn <= LIMIT, f"{per_conn:.0f} bytes per idle connection (limit {LIMIT})"

    # No CPU while idle: no connection has a timer armed, so the stack asks for no wake-up in
    # the next hour (keep-alive is off by default, RFC 1122 §4.2.3.6).
    h.output(t=1.0)
    assert h.stack.get_timer() is None
    assert h.advance(3600.0) == []
    assert all(c.state.value == "ESTABLISHED" for c in conns)


def test_empty_interval_sets_share_one_dict_that_nothing_mutates() -> None:
    from layers.tcp.intervals import IntervalSet

    a, b = IntervalSet(), IntervalSet()
    assert a._d is b._d  # an idle connection's five empty sets cost no SortedDict each
    assert a.add(10, 20) == 10 and list(a) == [(10, 20)]
    assert list(b) == [] and len(b) == 0 and b.total == 0 and a._d is not b._d
    assert b.remove(0, 100) == 0 and b.cut_below(100) == 0 and list(IntervalSet()) == []
    a.clear()
    assert list(a) == [] and a.total == 0 and a._d is b._d
    assert a.add(1, 2) == 1 and list(b) == []
