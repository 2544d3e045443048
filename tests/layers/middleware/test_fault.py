"""Tests for the fault injection middleware (layers/middleware/fault.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from framework.packet import Packet
from framework.registry import Registry
from framework.settings import validate_settings
from framework.stack import Stack
from layers.middleware import fault
from layers.middleware.fault import FaultInjector, FaultSettings
from tests.layers.middleware.helpers import (
    Top,
    bit_difference,
    ident_of,
    ipv4_datagram,
    make_stack,
    outbound,
    run_timers,
)


class ScriptedRandom:
    """Stands in for random.Random: random() returns the scripted values in order."""

    def __init__(self, values: Sequence[float]) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def fault_stack(**settings: object) -> tuple[Stack, FaultInjector, Top]:
    injector = FaultInjector("fault", FaultSettings(**settings))  # type: ignore[arg-type]
    stack, top = make_stack(injector)
    return stack, injector, top


def frames(n: int, proto: int = 253) -> list[bytes]:
    return [ipv4_datagram(i.to_bytes(4, "big"), ident=i, proto=proto) for i in range(n)]


def feed(stack: Stack, datagrams: Sequence[bytes], *, start: float = 0.0, step: float = 0.01) -> None:
    """Receive each datagram at start + i*step, firing due timers first; then drain all timers."""
    now = start
    for i, d in enumerate(datagrams):
        now = start + i * step
        run_timers(stack, now)
        stack.receive_frame(d, now=now)
    run_timers(stack, float("inf"))


MIXED = {"drop": 0.1, "duplicate": 0.1, "corrupt": 0.1, "reorder": 0.1, "delay": 0.1, "delay_time": 0.025}


def outcome(seed: int) -> tuple[list[bytes], dict[str, int]]:
    stack, _injector, top = fault_stack(seed=seed, **MIXED)
    feed(stack, frames(300))
    return top.received, dict(stack.stats.events)


def test_same_seed_gives_identical_outcome() -> None:
    """Two injectors with the same seed produce the same delivered sequence and counters."""
    first = outcome(7)
    assert first == outcome(7)
    events = first[1]
    for name in ("fault.dropped", "fault.duplicated", "fault.corrupted", "fault.reordered", "fault.delayed"):
        assert events[name] > 0, name


def test_different_seeds_differ() -> None:
    """Different seeds produce different delivered sequences."""
    assert outcome(1)[0] != outcome(2)[0]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_drop_rate_is_binomial(seed: int) -> None:
    """A 0.3 drop rate over 2000 packets drops within five standard deviations of 600."""
    stack, _injector, top = fault_stack(seed=seed, drop=0.3)
    feed(stack, frames(2000))
    dropped = stack.stats.drops[("fault", "injected")]
    sd = (2000 * 0.3 * 0.7) ** 0.5
    assert abs(dropped - 600) < 5 * sd
    assert dropped == stack.stats.events["fault.dropped"]
    assert len(top.received) == 2000 - dropped


def test_duplicate_delivers_two_identical_copies() -> None:
    """With duplicate=1 every packet arrives twice, as two distinct packets with the same bytes."""
    stack, _injector, top = fault_stack(duplicate=1.0)
    d = ipv4_datagram(b"dup")
    stack.receive_frame(d, now=0.0)
    assert top.received == [d, d]
    assert top.packets[0] is not top.packets[1]
    assert stack.stats.events["fault.duplicated"] == 1


def test_duplicate_outbound_transmits_two_frames() -> None:
    """An outbound duplicate ends up twice in the transmit queue."""
    stack, _injector, top = fault_stack(duplicate=1.0)
    stack.send(top, outbound(b"dup", ident=5), now=0.0)
    sent = stack.frames_to_send(now=0.0)
    assert len(sent) == 2
    assert sent[0] == sent[1]
    assert ident_of(sent[0]) == 5


def test_corrupt_flips_exactly_one_bit() -> None:
    """With corrupt=1 the delivered datagram differs from the sent one in exactly one bit."""
    stack, _injector, top = fault_stack(corrupt=1.0, seed=3)
    originals = frames(50)
    buffers = [bytearray(d) for d in originals]
    for buf in buffers:
        stack.receive_frame(buf, now=0.0)
    assert [bytes(b) for b in buffers] == originals  # the receive buffers are left alone
    assert len(top.received) == 50
    for sent, got in zip(originals, top.received, strict=True):
        assert bit_difference(sent, got) == 1
    assert stack.stats.events["fault.corrupted"] == 50


def test_delay_holds_until_now_plus_delay_time() -> None:
    """A delayed packet is held until exactly now + delay_time and delivered by handle_timer."""
    stack, injector, top = fault_stack(delay=1.0, delay_time=0.05)
    buf = bytearray(ipv4_datagram(b"late"))
    original = bytes(buf)
    stack.receive_frame(buf, now=10.0)
    buf[:] = bytes(len(buf))  # the link reuses its buffer; the held packet must not change
    assert top.received == []
    assert stack.get_timer() == 10.0 + 0.05
    assert injector.held == 1
    stack.handle_timer(now=10.04)
    assert top.received == []
    stack.handle_timer(now=10.0 + 0.05)
    assert top.received == [original]
    assert stack.get_timer() is None
    assert stack.stats.events["fault.delayed"] == 1


def test_reorder_swaps_with_next_packet() -> None:
    """A reordered packet is delivered right after the next packet in the same direction."""
    stack, injector, top = fault_stack(reorder=0.5, delay_time=1.0)
    injector.rng = ScriptedRandom([0.1, 0.9])  # type: ignore[assignment]  # hold the first, pass the second
    a, b = frames(2)
    stack.receive_frame(a, now=1.0)
    assert top.received == []
    assert stack.get_timer() == 2.0
    stack.receive_frame(b, now=1.5)
    assert top.received == [b, a]
    assert stack.get_timer() is None
    assert stack.stats.events["fault.reordered"] == 1


def test_reorder_gives_up_after_delay_time() -> None:
    """A reordered packet with no packet after it is released after delay_time."""
    stack, injector, top = fault_stack(reorder=0.5, delay_time=0.2)
    injector.rng = ScriptedRandom([0.1])  # type: ignore[assignment]
    (a,) = frames(1)
    stack.receive_frame(a, now=3.0)
    assert stack.get_timer() == 3.0 + 0.2
    stack.handle_timer(now=3.0 + 0.2)
    assert top.received == [a]


def test_reorder_waits_for_a_packet_in_the_same_direction() -> None:
    """An outbound packet does not release an inbound reordered one."""
    stack, injector, top = fault_stack(reorder=0.5, delay_time=1.0)
    injector.rng = ScriptedRandom([0.1, 0.9])  # type: ignore[assignment]
    (a,) = frames(1)
    stack.receive_frame(a, now=0.0)
    stack.send(top, outbound(b"out"), now=0.1)
    assert len(stack.frames_to_send(now=0.1)) == 1
    assert top.received == []
    run_timers(stack, 1.0)
    assert top.received == [a]


def test_rule_drops_third_matching_packet() -> None:
    """A scripted rule drops exactly the 3rd packet matching its predicate, then retires."""
    stack, injector, top = fault_stack()
    is_tcp = lambda data: data[9] == 6  # noqa: E731
    rule = injector.add_rule("drop", direction="in", nth=3, match=is_tcp)
    sent = [ipv4_datagram(ident=i, proto=6 if i % 2 else 17) for i in range(12)]  # TCP: 1, 3, 5, ...
    feed(stack, sent)
    assert [ident_of(d) for d in top.received] == [i for i in range(12) if i != 5]
    assert rule.fired == 1
    assert injector.rules == []
    assert stack.stats.drops[("fault", "injected")] == 1


def test_rule_count_covers_consecutive_matches() -> None:
    """count=2 applies the action to the nth and the following matching packet."""
    stack, injector, top = fault_stack()
    injector.add_rule("drop", nth=2, count=2)
    feed(stack, frames(5))
    assert [ident_of(d) for d in top.received] == [0, 3, 4]


def test_rules_take_precedence_over_random_faults() -> None:
    """A drop rule wins over a certain duplicate on the packet it targets."""
    stack, injector, top = fault_stack(duplicate=1.0)
    injector.drop_next()
    a, b = frames(2)
    feed(stack, [a, b])
    assert top.received == [b, b]


def test_scripted_delay_and_corrupt() -> None:
    """Scripted delay and corrupt rules behave like their random counterparts."""
    stack, injector, top = fault_stack(delay_time=0.5)
    injector.add_rule("delay", nth=1)
    injector.add_rule("corrupt", nth=2)
    a, b = frames(2)
    stack.receive_frame(a, now=0.0)
    stack.receive_frame(b, now=0.1)
    assert len(top.received) == 1
    assert bit_difference(top.received[0], b) == 1
    stack.handle_timer(now=0.5)
    assert top.received[1] == a


def test_in_rule_does_not_affect_outbound() -> None:
    """A rule for direction "in" leaves outbound packets alone and still drops the next inbound one."""
    stack, injector, top = fault_stack()
    injector.drop_next("in")
    stack.send(top, outbound(b"out", ident=1), now=0.0)
    assert [ident_of(f) for f in stack.frames_to_send(now=0.0)] == [1]
    (a,) = frames(1)
    stack.receive_frame(a, now=0.0)
    assert top.received == []


def test_out_rule_does_not_affect_inbound() -> None:
    """A rule for direction "out" drops the next outbound packet only."""
    stack, injector, top = fault_stack()
    injector.drop_next("out")
    (a,) = frames(1)
    stack.receive_frame(a, now=0.0)
    assert top.received == [a]
    stack.send(top, outbound(b"out"), now=0.0)
    assert stack.frames_to_send(now=0.0) == []


def test_direction_setting_limits_random_faults() -> None:
    """With direction "out", a certain drop spares inbound packets."""
    stack, _injector, top = fault_stack(drop=1.0, direction="out")
    (a,) = frames(1)
    stack.receive_frame(a, now=0.0)
    assert top.received == [a]
    stack.send(top, outbound(b"out"), now=0.0)
    assert stack.frames_to_send(now=0.0) == []


def test_zero_rates_fast_path_returns_the_same_packet() -> None:
    """With no rules and zero rates, receive and send return the very same Packet object."""
    stack, injector, _top = fault_stack()
    ctx = stack.context
    pin = Packet.inbound(ipv4_datagram())
    pout = outbound(b"x")
    assert injector.receive(pin, ctx) is pin
    assert injector.send(pout, ctx) is pout
    assert pout.headers  # not even serialized
    assert injector.poll_at() is None


def test_fast_path_returns_after_rules_retire() -> None:
    """Once its only rule has fired, the injector is back on the fast path."""
    stack, injector, _top = fault_stack()
    injector.drop_next()
    stack.receive_frame(ipv4_datagram(), now=0.0)
    pin = Packet.inbound(ipv4_datagram())
    assert injector.receive(pin, stack.context) is pin


def test_outbound_delay_is_released_through_transmit() -> None:
    """A delayed outbound packet reaches frames_to_send only when its timer fires."""
    stack, _injector, top = fault_stack(delay=1.0, delay_time=0.05, direction="out")
    stack.send(top, outbound(b"later", ident=42), now=5.0)
    assert stack.frames_to_send(now=5.0) == []
    assert stack.get_timer() == 5.0 + 0.05
    stack.handle_timer(now=5.0 + 0.05)
    (frame,) = stack.frames_to_send(now=5.05)
    assert ident_of(frame) == 42
    assert frame[20:] == b"later"
    assert stack.stats.events["fault.delayed"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "explode"}, "unknown action"),
        ({"action": "drop", "direction": "up"}, "unknown direction"),
        ({"action": "drop", "nth": 0}, "at least 1"),
        ({"action": "drop", "count": 0}, "at least 1"),
    ],
)
def test_add_rule_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    """add_rule raises ValueError for misuse."""
    _stack, injector, _top = fault_stack()
    with pytest.raises(ValueError, match=message):
        injector.add_rule(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"drop": 1.5}, "fault.drop: 1.5 is out of range [0.0, 1.0]"),
        ({"corrupt": -0.1}, "fault.corrupt: -0.1 is out of range [0.0, 1.0]"),
        ({"delay_time": 61}, "fault.delay_time: 61.0 is out of range [0.0, 60.0]"),
        ({"direction": "up"}, "fault.direction: expected one of 'both', 'in', 'out', got 'up'"),
    ],
)
def test_settings_bounds(data: dict[str, object], problem: str) -> None:
    """Rates outside [0, 1], a long delay_time and an unknown direction are configuration problems."""
    problems: list[str] = []
    assert validate_settings(FaultSettings, data, "fault", problems) is None
    assert problems == [problem]


def test_registered_factory_builds_an_injector() -> None:
    """The plugin registers layer type "fault" whose factory builds a FaultInjector."""
    registry = Registry()
    fault.stack_register(registry)
    handler = registry.layers["fault"].factory("fault", FaultSettings(seed=9, drop=0.5))
    assert isinstance(handler, FaultInjector)
    assert handler.settings.seed == 9


# ---------------------------------------------------------------------- TUN offload marks


def _partial_tcp() -> tuple[bytes, bytes]:
    """An IPv4/TCP datagram with its checksum field holding only the pseudo-header sum (TUN offload), and the
    same datagram with the full checksum."""
    from scapy.layers.inet import IP, TCP
    from scapy.packet import Raw, raw

    full = raw(IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=80, dport=4000, flags="PA") / Raw(b"x" * 100))
    from framework.checksum import fold

    pseudo = int.from_bytes(full[12:20], "big") + 6 + (len(full) - 20)
    partial = bytearray(full)
    partial[36:38] = (0xFFFF ^ fold(pseudo)).to_bytes(2, "big")
    return bytes(partial), full


def test_offload_marks_survive_duplicates() -> None:
    """A duplicated outbound packet keeps csum_partial and gso_size, so the link still asks the kernel to
    finish its checksum (and cut it)."""
    inj = FaultInjector("fault", FaultSettings(duplicate=1.0, direction="out"))
    pkt = Packet(_partial_tcp()[0])
    pkt.csum_partial, pkt.gso_size = True, 1448
    sent: list[Packet] = []

    class Ctx:
        now = 0.0

        class stats:
            @staticmethod
            def count(name: str) -> None:
                pass

        @staticmethod
        def transmit(origin: object, p: Packet) -> None:
            sent.append(p)

    out = inj.send(pkt, Ctx())  # type: ignore[arg-type]
    assert out is not None and (out.csum_partial, out.gso_size) == (True, 1448)
    assert [(p.csum_partial, p.gso_size) for p in sent] == [(True, 1448)]


def test_corrupting_a_partial_checksum_packet_completes_the_checksum_first() -> None:
    """The kernel would checksum a flipped bit behind a partial checksum and deliver it; the fault layer
    completes the checksum before flipping, so the receiver sees a bad checksum, as on a wire."""
    partial, full = _partial_tcp()
    assert fault._complete_tcp_checksum(partial) == full
    assert fault._complete_tcp_checksum(b"not ip") == b"not ip"


def _ports(sport: int, dport: int) -> bytes:
    return sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(16)


def test_ports_restrict_random_faults_to_matching_tcp_and_udp_datagrams() -> None:
    """``ports``: drop = 1 discards only TCP/UDP datagrams from or to a listed port; other ports,
    other protocols and non-first fragments pass."""
    stack, _injector, top = fault_stack(drop=1.0, ports=[81])
    hit_tcp = ipv4_datagram(_ports(81, 40000), proto=6, ident=1)
    hit_udp = ipv4_datagram(_ports(40000, 81), proto=17, ident=2)
    other_port = ipv4_datagram(_ports(80, 40000), proto=6, ident=3)
    other_proto = ipv4_datagram(_ports(81, 81), proto=253, ident=4)
    fragment = bytearray(ipv4_datagram(_ports(81, 40000), proto=6, ident=5))
    fragment[7] = 1  # fragment offset 8: no ports in it (the header checksum is not checked here)
    feed(stack, [hit_tcp, hit_udp, other_port, other_proto, bytes(fragment), b"\x45" + bytes(9)])
    assert top.received[:3] == [other_port, other_proto, bytes(fragment)]
    assert stack.stats.events["fault.dropped"] == 2


def test_ports_setting_is_checked() -> None:
    problems: list[str] = []
    validate_settings(FaultSettings, {"ports": [80, 0, 70000]}, "layers[1]", problems)
    assert problems and "1-65535" in problems[0], problems
