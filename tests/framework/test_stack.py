"""The sans-IO stack facade: frames in with the time, frames out, one timer, never a crash."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP
from scapy.packet import Raw, raw

from framework.context import Context
from framework.handler import BaseHandler
from framework.packet import Packet
from framework.pipeline import Pipeline
from framework.stack import Stack
from tests.helpers import OWN, PEER, Sink, ipv4_stack


class Exploding(BaseHandler):
    """A handler with a bug: every call raises an unexpected exception."""

    name = "exploding"

    def __init__(self, due: float | None = None) -> None:
        self.due = due

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        raise ZeroDivisionError("bug in receive")

    def send(self, pkt: Packet, ctx: Context) -> Packet | None:
        raise ZeroDivisionError("bug in send")

    def poll_at(self) -> float | None:
        return self.due

    def handle_timer(self, ctx: Context) -> None:
        raise ZeroDivisionError("bug in timer")


class Echo(BaseHandler):
    """Answers every inbound packet by transmitting its payload back down, twice."""

    name = "echo"

    def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
        data = bytes(pkt.payload)
        ctx.transmit(self, Packet(data + b"1"))
        ctx.transmit(self, Packet(data + b"2"))
        return None


def echo_request(seq: int = 1, data: bytes = b"ping") -> bytes:
    return raw(IP(src=PEER, dst=OWN) / ICMP(type=8, id=0x1234, seq=seq) / Raw(data))


def test_internal_error_is_counted_and_logged(log_output) -> None:
    """A handler raising unexpectedly is counted as ("stack", "internal_error") and logged; no raise."""
    stack = Stack(Pipeline([BaseHandler(), Exploding()]))
    stack.receive_frame(b"anything", now=1.0)
    stack.receive_frame(b"again", now=2.0)
    assert stack.stats.drops == {("stack", "internal_error"): 2}
    assert stack.frames_in == 2
    errors = [e for e in log_output.entries if e["event"] == "stack.internal_error"]
    assert [e["frame_no"] for e in errors] == [1, 2]
    assert all(e["log_level"] == "error" and e["exc_info"] is True for e in errors)


def test_internal_error_in_timer_is_counted_and_logged(log_output) -> None:
    """A handler raising in handle_timer is counted and logged with where="timer"."""
    stack = Stack(Pipeline([BaseHandler(), Exploding(due=5.0)]))
    stack.handle_timer(now=5.0)
    assert stack.stats.drops == {("stack", "internal_error"): 1}
    assert {"event": "stack.internal_error", "where": "timer", "log_level": "error", "exc_info": True} in (
        log_output.entries
    )


def test_internal_error_in_send_is_counted_and_logged(log_output) -> None:
    """A handler raising while sending is counted and logged with where="send"; nothing is queued."""
    top = Echo()
    stack = Stack(Pipeline([Exploding(), top]))
    stack.send(top, Packet(b"data"), now=0.0)
    assert stack.stats.drops == {("stack", "internal_error"): 1}
    assert stack.frames_to_send(now=0.0) == []
    assert any(e["event"] == "stack.internal_error" and e.get("where") == "send" for e in log_output.entries)


def test_frames_to_send_drains_once() -> None:
    """frames_to_send returns every queued frame oldest first, then nothing, and counts frames_out."""
    stack = Stack(Pipeline([BaseHandler(), Echo()]))
    stack.receive_frame(b"x", now=0.0)
    assert stack.frames_to_send(now=0.0) == [b"x1", b"x2"]
    assert stack.frames_to_send(now=0.0) == []
    assert stack.stats.events["frames_out"] == 2


def test_echo_request_is_answered() -> None:
    """A full stack answers an ICMP echo request with one echo reply frame."""
    stack, _, sink = ipv4_stack()
    stack.receive_frame(echo_request(seq=3), now=10.0)
    (frame,) = stack.frames_to_send(now=10.0)
    reply = IP(frame)
    assert (reply.src, reply.dst) == (OWN, PEER)
    assert (reply[ICMP].type, reply[ICMP].id, reply[ICMP].seq) == (0, 0x1234, 3)
    assert bytes(reply[ICMP].payload) == b"ping"
    assert sink.received == []


def test_timer_with_explicit_now() -> None:
    """get_timer reports the reassembly deadline; handle_timer runs it only once now reaches it."""
    stack, ip, _ = ipv4_stack(reassembly_timeout=30.0)
    assert stack.get_timer() is None
    first = IP(src=PEER, dst=OWN, id=99, flags="MF", frag=0, proto=1) / Raw(bytes(16))
    stack.receive_frame(raw(first), now=100.0)
    assert stack.get_timer() == 130.0
    assert stack.frames_to_send(now=100.0) == []

    stack.handle_timer(now=129.5)  # too early: nothing happens
    assert stack.get_timer() == 130.0
    assert stack.stats.drops.get(("ipv4", "reassembly_timeout")) is None

    stack.handle_timer(now=130.0)
    assert stack.get_timer() is None
    assert stack.stats.drops[("ipv4", "reassembly_timeout")] == 1
    (frame,) = stack.frames_to_send(now=130.0)  # RFC 1122 §3.3.2: Time Exceeded (reassembly)
    assert (IP(frame)[ICMP].type, IP(frame)[ICMP].code) == (11, 1)
    assert len(ip.reassembler) == 0


def test_layer_lookup_and_context() -> None:
    """stack.layer finds a handler by name; stack.context is the one reused call context."""
    sink = Sink()
    stack, ip, _ = ipv4_stack(sink=sink)
    assert stack.layer("ipv4") is ip
    assert stack.layer("sink") is sink
    assert stack.context is stack.context
    stack.receive_frame(echo_request(), now=42.0)
    assert stack.context.now == 42.0
