"""The pipeline: receive runs bottom-up, send top-down, and timers go to handlers that are due."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from framework.context import Context
from framework.errors import ConfigError
from framework.handler import BaseHandler, PacketHandler
from framework.packet import Packet
from framework.pipeline import Pipeline
from framework.stats import Stats

Calls = list[tuple[str, str]]


class Recorder(BaseHandler):
    """Records every call into a shared list; behaviour is switched by constructor arguments."""

    def __init__(
        self,
        name: str,
        calls: Calls,
        *,
        consume_receive: bool = False,
        consume_send: bool = False,
        due: float | None = None,
        on_receive: Callable[[Recorder, Packet, Context], None] | None = None,
    ) -> None:
        self.name = name
        self.calls = calls
        self.consume_receive = consume_receive
        self.consume_send = consume_send
        self.due = due
        self.on_receive = on_receive
        self.below: list[str] = []
        self.above: list[str] = []
        self.timer_now: list[float] = []

    def attach(self, below: Sequence[PacketHandler], above: Sequence[PacketHandler]) -> None:
        self.below = [h.name for h in below]
        self.above = [h.name for h in above]

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        self.calls.append(("receive", self.name))
        if self.on_receive is not None:
            self.on_receive(self, pkt, ctx)
            return None
        return None if self.consume_receive else pkt

    def send(self, pkt: Packet, ctx: Context) -> Packet | None:
        self.calls.append(("send", self.name))
        return None if self.consume_send else pkt

    def poll_at(self) -> float | None:
        return self.due

    def handle_timer(self, ctx: Context) -> None:
        self.calls.append(("timer", self.name))
        self.timer_now.append(ctx.now)


def build(*handlers: Recorder) -> tuple[Pipeline, Context, Stats]:
    pipeline = Pipeline(handlers)
    stats = Stats()
    return pipeline, Context(pipeline, stats), stats


def test_receive_runs_bottom_up() -> None:
    """An inbound packet visits every handler from the bottom to the top, in order."""
    calls: Calls = []
    pipeline, ctx, _ = build(
        Recorder("link", calls), Recorder("mid", calls), Recorder("top", calls, consume_receive=True)
    )
    pipeline.receive(Packet.inbound(b"frame"), ctx)
    assert calls == [("receive", "link"), ("receive", "mid"), ("receive", "top")]


def test_send_runs_top_down_and_queues_frame() -> None:
    """A packet sent from the top visits the handlers below it nearest first, then is queued."""
    calls: Calls = []
    link, mid, top = Recorder("link", calls), Recorder("mid", calls), Recorder("top", calls)
    pipeline, ctx, _ = build(link, mid, top)
    pipeline.send_below(top, Packet(b"out"), ctx)
    assert calls == [("send", "mid"), ("send", "link")]
    assert list(pipeline.tx_queue) == [b"out"]


def test_receive_none_stops_the_chain() -> None:
    """A handler returning None from receive keeps the packet from every handler above it."""
    calls: Calls = []
    pipeline, ctx, stats = build(
        Recorder("link", calls), Recorder("mid", calls, consume_receive=True), Recorder("top", calls)
    )
    pipeline.receive(Packet.inbound(b"frame"), ctx)
    assert calls == [("receive", "link"), ("receive", "mid")]
    assert stats.total_drops() == 0


def test_send_none_stops_the_chain() -> None:
    """A handler returning None from send keeps the packet from the handlers below and the queue."""
    calls: Calls = []
    link, mid, top = Recorder("link", calls), Recorder("mid", calls, consume_send=True), Recorder("top", calls)
    pipeline, ctx, _ = build(link, mid, top)
    pipeline.send_below(top, Packet(b"out"), ctx)
    assert calls == [("send", "mid")]
    assert not pipeline.tx_queue


def test_transmit_from_middle_goes_only_below() -> None:
    """ctx.transmit from a middle handler runs only the handlers below it, then queues the frame."""
    calls: Calls = []

    def reply(self: Recorder, pkt: Packet, ctx: Context) -> None:
        ctx.transmit(self, Packet(b"reply"))

    link, low = Recorder("link", calls), Recorder("low", calls)
    mid, top = Recorder("mid", calls, on_receive=reply), Recorder("top", calls)
    pipeline, ctx, _ = build(link, low, mid, top)
    pipeline.receive(Packet.inbound(b"frame"), ctx)
    assert calls == [
        ("receive", "link"),
        ("receive", "low"),
        ("receive", "mid"),
        ("send", "low"),
        ("send", "link"),
    ]
    assert list(pipeline.tx_queue) == [b"reply"]


def test_deliver_from_middle_goes_only_above() -> None:
    """ctx.deliver from a middle handler runs only the handlers above it."""
    calls: Calls = []
    link, mid = Recorder("link", calls), Recorder("mid", calls)
    upper, top = Recorder("upper", calls), Recorder("top", calls, consume_receive=True)
    pipeline, ctx, stats = build(link, mid, upper, top)
    ctx.deliver(mid, Packet(b"reassembled"))
    assert calls == [("receive", "upper"), ("receive", "top")]
    assert stats.total_drops() == 0
    assert not pipeline.tx_queue


def test_unclaimed_packet_is_a_counted_drop() -> None:
    """A packet that every handler passes up is counted as ("pipeline", "unclaimed")."""
    calls: Calls = []
    link, top = Recorder("link", calls), Recorder("top", calls)
    pipeline, ctx, stats = build(link, top)
    pipeline.receive(Packet.inbound(b"frame"), ctx)
    assert stats.drops == {("pipeline", "unclaimed"): 1}
    ctx.deliver(top, Packet(b"nobody above"))  # nothing above the top: unclaimed as well
    assert stats.drops == {("pipeline", "unclaimed"): 2}


def test_poll_at_is_the_minimum() -> None:
    """poll_at is the earliest time any handler asks for, ignoring handlers that ask for none."""
    calls: Calls = []
    pipeline, _, _ = build(Recorder("a", calls, due=5.0), Recorder("b", calls), Recorder("c", calls, due=3.0))
    assert pipeline.poll_at() == 3.0
    idle, _, _ = build(Recorder("a", calls), Recorder("b", calls))
    assert idle.poll_at() is None


def test_handle_timer_calls_only_due_handlers() -> None:
    """handle_timer runs exactly the handlers whose time has come (due <= now), with ctx.now set."""
    calls: Calls = []
    early, exact = Recorder("early", calls, due=1.0), Recorder("exact", calls, due=4.0)
    late, idle = Recorder("late", calls, due=4.5), Recorder("idle", calls)
    pipeline, ctx, _ = build(early, exact, late, idle)
    ctx.now = 4.0
    pipeline.handle_timer(ctx)
    assert calls == [("timer", "early"), ("timer", "exact")]
    assert early.timer_now == [4.0]


def test_attach_gets_neighbours_nearest_first() -> None:
    """attach tells each handler the handlers below and above it, nearest first."""
    calls: Calls = []
    a, b, c, d = (Recorder(n, calls) for n in "abcd")
    build(a, b, c, d)
    assert (a.below, a.above) == ([], ["b", "c", "d"])
    assert (c.below, c.above) == (["b", "a"], ["d"])
    assert (d.below, d.above) == (["c", "b", "a"], [])


def test_attach_config_error_propagates() -> None:
    """A handler that cannot work with its neighbours fails the assembly with its ConfigError."""

    class Picky(BaseHandler):
        name = "picky"

        def attach(self, below: Sequence[PacketHandler], above: Sequence[PacketHandler]) -> None:
            if not below:
                raise ConfigError(["picky: needs a layer below"])

    with pytest.raises(ConfigError) as info:
        Pipeline([Picky()])
    assert info.value.problems == ["picky: needs a layer below"]


def test_duplicate_names_rejected() -> None:
    """Two handlers with the same name are a ConfigError naming it."""
    calls: Calls = []
    with pytest.raises(ConfigError) as info:
        Pipeline([Recorder("x", calls), Recorder("y", calls), Recorder("x", calls)])
    assert info.value.problems == ["layers: duplicate layer name 'x'"]


def test_empty_pipeline_rejected() -> None:
    """A pipeline needs at least one handler."""
    with pytest.raises(ConfigError) as info:
        Pipeline([])
    assert info.value.problems == ["layers: a stack needs at least one layer"]


def test_by_name() -> None:
    """by_name finds a handler by its name and raises KeyError for an unknown one."""
    calls: Calls = []
    a, b = Recorder("a", calls), Recorder("b", calls)
    pipeline, _, _ = build(a, b)
    assert pipeline.by_name("b") is b
    with pytest.raises(KeyError):
        pipeline.by_name("zz")


def test_context_drop_counts_and_logs(log_output) -> None:
    """ctx.stats.drop counts by (layer, reason) and logs a debug packet.dropped event with the detail."""
    calls: Calls = []
    _, ctx, stats = build(Recorder("a", calls))
    ctx.stats.drop("ipv4", "bad_checksum", frame_no=3)
    ctx.stats.drop("ipv4", "bad_checksum")
    assert stats.drops == {("ipv4", "bad_checksum"): 2}
    expected = {"event": "packet.dropped", "layer": "ipv4", "reason": "bad_checksum", "frame_no": 3}
    assert {**expected, "log_level": "debug"} in log_output.entries
