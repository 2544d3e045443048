"""Costs that must not grow with the number of connections (design notes, Part E: PyTCP kept
every connection on a timer tick forever). The TCP layer's per-segment work is one dict
lookup plus the connection's own processing; output and timers touch only connections that
need it (layers/tcp/layer.py docstring). Counted by wrapping TcpConnection's methods, which the
layer calls directly when it is compiled: the test command's pure-Python run counts them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

import layers.tcp.layer
from framework._compiled import is_compiled
from layers.tcp import fastpath
from layers.tcp.connection import TcpConnection
from tests.layers.tcp.helpers import L1, LOCAL_PORT, LOCAL_SEQ, R1, SEND, LayerHarness

N = 2000
#: Compiled, the TCP layer calls TcpConnection's methods natively, past the wrappers below.
COUNTS_CALLS = pytest.mark.skipif(
    is_compiled(layers.tcp.layer),
    reason="layers.tcp.layer is compiled: it calls TcpConnection's methods past the counting wrappers "
    "(the pure-Python run counts them)",
)
COUNTED = ("get_timer", "handle_timer", "segments_to_send", "segment_received")


@pytest.fixture(scope="module")
def many() -> tuple[LayerHarness, list[TcpConnection]]:
    """A stack with N established passive connections from one peer address, differing in port."""
    h = LayerHarness(initial_sequence=LOCAL_SEQ)
    h.tcp.listen(LOCAL_PORT, backlog=N + 1)
    conns = [h.handshake(remote_port=10000 + i, t=0.0)[0] for i in range(N)]
    assert len(h.tcp.connections) == N
    return h, conns


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, many: tuple[LayerHarness, list[TcpConnection]]) -> Iterator[Counter[str]]:
    counter: Counter[str] = Counter()
    for name in COUNTED:
        original = getattr(TcpConnection, name)

        def wrapper(self: TcpConnection, *args: Any, __name: str = name, __orig: Callable[..., Any] = original) -> Any:
            counter[__name] += 1
            return __orig(self, *args)

        monkeypatch.setattr(TcpConnection, name, wrapper)
    fast = fastpath.receive

    def predicted(conn: TcpConnection, *args: Any) -> int:
        kind = fast(conn, *args)
        if kind:  # header prediction processed it: the connection's own processing all the same
            counter["segment_received"] += 1
        return kind

    monkeypatch.setattr(fastpath, "receive", predicted)
    # Early demux (layers/tcp/demux.py) calls header prediction directly: compiled, it does not
    # see the wrapper above, so a segment it took is counted here (once: interpreted, it does).
    stack = many[0].stack
    early = stack.early_receive
    assert early is not None

    def early_counted(frame: Any, now: float) -> bool:
        before = counter["segment_received"]
        taken = early(frame, now)
        if taken and counter["segment_received"] == before:
            counter["segment_received"] += 1
        return taken

    monkeypatch.setattr(stack, "early_receive", early_counted)
    yield counter


@COUNTS_CALLS
def test_one_segment_touches_one_connection(
    many: tuple[LayerHarness, list[TcpConnection]], calls: Counter[str]
) -> None:
    """RFC 9293 §3.10.7 per-segment processing (design notes, Part E): with 2000 idle connections, one data segment
    costs O(1): one connection processes it, one produces output, and polling the stack's timer asks no connection at
    all."""
    h, conns = many
    out = h.inject(replace(SEND, src_port=10007, seq=R1, ack=L1, payload=b"x"), t=1.0)
    assert len(out) == 1 and out[0].dst_port == 10007
    assert h.stack.get_timer() is None  # idle connections have no timers
    assert calls["segment_received"] == 1
    assert calls["segments_to_send"] == 1
    assert calls["get_timer"] <= 1  # rescheduling the one touched connection
    assert calls["handle_timer"] == 0
    assert conns[7].read() == b"x"


@COUNTS_CALLS
def test_timers_of_many_connections_are_kept_in_a_heap(
    many: tuple[LayerHarness, list[TcpConnection]], calls: Counter[str]
) -> None:
    """RFC 6298 (5.1) timers on 2000 connections: polling reads the heap top, and firing runs only the due one."""
    h, conns = many
    for i, conn in enumerate(conns):  # every connection sends a byte: 2000 running RTO timers
        t = 2.0 + i * 0.00005  # all before the first is due (the stack's clock never runs back)
        conn.send(b"y", t)
        h.user(conn)
        h.output(t=t)
    base = Counter(calls)
    first = h.stack.get_timer()
    assert first == 2.0 + 0.2  # the stack's default min_rto is 0.2 s (TcpSettings)
    assert calls["get_timer"] == base["get_timer"]  # the stack's poll calls no connection
    h.stack.handle_timer(now=first)
    h.output(t=first)
    assert calls["handle_timer"] - base["handle_timer"] == 1
    assert calls["segments_to_send"] - base["segments_to_send"] == 1
    assert calls["get_timer"] - base["get_timer"] <= 1
    # An ACK for one connection updates only that connection.
    before = Counter(calls)
    h.inject(replace(SEND, src_port=10500, seq=R1 + (1 if 500 == 7 else 0), ack=L1 + 1), t=first)
    assert calls["segment_received"] - before["segment_received"] == 1
    assert calls["segments_to_send"] - before["segments_to_send"] == 1
    assert calls["get_timer"] - before["get_timer"] <= 1
