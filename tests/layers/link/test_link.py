"""Link layers: the raw-IP link handler, the in-memory and TUN links, and the asyncio driver."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.packet import Raw, raw

from framework.context import Context
from framework.errors import LinkError
from framework.handler import BaseHandler
from framework.packet import Packet
from framework.pipeline import Pipeline
from framework.stack import Stack
from layers.ipv4.handler import Ipv4Layer, Ipv4Settings
from layers.link.handler import MemorySettings, RawIpLink, TunSettings
from tcpstack.io.driver import AsyncioDriver
from tcpstack.io.memory import MemoryLink
from tcpstack.io.tun import TunLink, _explain, device_exists, device_mtu
from tcpstack.plugins import PluginHost, hookimpl
from tests.helpers import OWN, PEER, Sink

T = TypeVar("T")
TIMEOUT = 30.0  # only bounds a hang (a loaded machine may be slow, never this slow)
needs_tun = pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="no /dev/net/tun in this kernel or container")


def echo_request(seq: int = 1, data: bytes = b"over the loop") -> bytes:
    return raw(IP(src=PEER, dst=OWN) / ICMP(type=8, id=0x4242, seq=seq) / Raw(data))


def link_stack(mtu: int = 1500) -> tuple[Stack, RawIpLink, Sink]:
    link = RawIpLink("memory", mtu, MemorySettings(mtu=mtu))
    sink = Sink()
    return Stack(Pipeline([link, sink])), link, sink


# ---------------------------------------------------------------------------------- RawIpLink


def test_raw_link_drops_empty_frames() -> None:
    """An empty frame is dropped as ("link", "empty") and does not reach the layer above."""
    stack, _, sink = link_stack()
    stack.receive_frame(b"", now=0.0)
    assert stack.stats.drops == {("link", "empty"): 1}
    assert sink.received == []
    assert stack.stats.events["frames_in"] == 0


def test_raw_link_passes_frames_up_and_counts_them() -> None:
    """A non-empty frame goes up unchanged and is counted as frames_in."""
    stack, _, sink = link_stack()
    stack.receive_frame(b"\x45datagram", now=0.0)
    assert [p.payload for p in sink.received] == [b"\x45datagram"]
    assert stack.stats.events["frames_in"] == 1
    assert stack.stats.total_drops() == 0


def test_raw_link_drops_outbound_packets_above_mtu() -> None:
    """An outbound packet larger than the MTU is dropped as ("link", "too_big"); one of exactly MTU goes."""
    stack, _, sink = link_stack(mtu=576)
    stack.send(sink, Packet(bytes(577)), now=0.0)
    assert stack.stats.drops == {("link", "too_big"): 1}
    assert stack.frames_to_send(now=0.0) == []
    stack.send(sink, Packet(bytes(576)), now=0.0)
    assert stack.frames_to_send(now=0.0) == [bytes(576)]


def test_raw_link_counts_headers_against_mtu() -> None:
    """Headers still to be emitted count against the MTU, not only the payload."""

    class Pad:
        def buffer_len(self) -> int:
            return 20

        def emit(self, buf: bytearray, offset: int, payload_len: int) -> None:
            buf[offset : offset + 20] = bytes(20)

    stack, _, sink = link_stack(mtu=600)
    pkt = Packet(bytes(581))
    pkt.push(Pad())
    stack.send(sink, pkt, now=0.0)
    assert stack.stats.drops == {("link", "too_big"): 1}


def test_link_layer_types_registered() -> None:
    """The link plugin registers "tun" and "memory" with their settings classes."""
    layers = PluginHost(entry_points=False).registry.layers
    assert layers["tun"].settings is TunSettings
    assert layers["memory"].settings is MemorySettings
    tun = layers["tun"].factory("tun", TunSettings(mtu=1280))
    assert isinstance(tun, RawIpLink) and tun.mtu == 1280 and tun.name == "tun"


# ---------------------------------------------------------------------------------- MemoryLink


def test_memory_pair_passes_datagrams_both_ways() -> None:
    """A MemoryLink pair carries datagrams both ways with their boundaries kept."""
    a, b = MemoryLink.pair()
    try:
        assert a.write(b"one") and a.write(b"two")
        assert b.read_available() == [b"one", b"two"]
        assert b.write(b"back")
        assert a.read_available() == [b"back"]
        assert a.mtu == b.mtu == 1500
        assert isinstance(a.fileno(), int) and a.fileno() != b.fileno()
    finally:
        a.close()
        b.close()


def test_memory_read_available_empty_and_limit() -> None:
    """read_available returns [] when nothing waits and never more than limit frames."""
    a, b = MemoryLink.pair()
    try:
        assert b.read_available() == []
        for i in range(5):
            a.write(bytes([i]))
        assert b.read_available(limit=2) == [b"\x00", b"\x01"]
        assert b.read_available(limit=2) == [b"\x02", b"\x03"]
        assert b.read_available(limit=2) == [b"\x04"]
        assert b.read_available() == []
    finally:
        a.close()
        b.close()


def test_memory_write_failure_is_counted() -> None:
    """A write the link refuses returns False and counts a tx error."""
    a, b = MemoryLink.pair()
    b.close()
    try:
        assert a.write(b"nobody there") is False
        assert a.tx_errors == 1
    finally:
        a.close()


# ---------------------------------------------------------------------------------- TunLink


@needs_tun
def test_tun_missing_device_without_create() -> None:
    """Attaching to a TUN device that does not exist raises LinkError saying how to fix it."""
    assert not device_exists("tcpsnone0")
    with pytest.raises(LinkError) as info:
        TunLink("tcpsnone0", create=False)
    message = str(info.value)
    assert message == (
        "TUN device 'tcpsnone0' does not exist: create it with 'ip tuntap add dev tcpsnone0 mode tun', or pass --create"
    )


@needs_tun
def test_tun_existing_device_with_other_mtu() -> None:
    """An existing device whose MTU differs from the configured one is a LinkError (nothing opened)."""
    current = device_mtu("lo")
    if current is None or current == 1500:
        pytest.skip("needs a loopback device with an MTU other than 1500")
    with pytest.raises(LinkError, match=f"TUN device 'lo' has MTU {current}, but the configuration says 1500"):
        TunLink("lo", mtu=1500)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (PermissionError(errno.EPERM, "Operation not permitted"), "permission denied opening TUN device 'tun0'"),
        (OSError(errno.EACCES, "Permission denied"), "permission denied opening TUN device 'tun0'"),
        (OSError(errno.EBUSY, "Device or resource busy"), "TUN device 'tun0' is busy"),
        (OSError(errno.EINVAL, "Invalid argument"), "TUN device 'tun0' cannot be opened as a TUN device"),
        (OSError(errno.ENOMEM, "Cannot allocate memory"), "cannot open TUN device 'tun0': "),
        (Exception(errno.EPERM, "pytun-style error"), "permission denied opening TUN device 'tun0'"),
    ],
)
def test_tun_errors_explained(exc: BaseException, expected: str) -> None:
    """Errors from opening a TUN device become one-line explanations by errno."""
    assert _explain("tun0", exc).startswith(expected)


# ---------------------------------------------------------------------------------- AsyncioDriver


class Closed:
    """A plugin recording stack_closed calls."""

    def __init__(self) -> None:
        self.closed: list[Stack] = []

    @hookimpl
    def stack_closed(self, stack: Stack) -> None:
        self.closed.append(stack)


def ipv4_over_memory(host: PluginHost | None = None, **ipv4: Any) -> Stack:
    settings = Ipv4Settings(**{"address": f"{OWN}/24", "ident_seed": 0, **ipv4})
    handlers = [RawIpLink("memory", 1500, MemorySettings()), Ipv4Layer("ipv4", settings)]
    return Stack(Pipeline(handlers), host=host)


async def next_frame(link: MemoryLink) -> bytes:
    """Wait until *link* is readable and return the first frame on it."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bytes] = loop.create_future()

    def readable() -> None:
        frames = link.read_available(1)
        if frames and not fut.done():
            fut.set_result(frames[0])

    loop.add_reader(link.fileno(), readable)
    try:
        return await fut
    finally:
        loop.remove_reader(link.fileno())


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until *condition* holds (callers bound it with wait_for)."""
    while not condition():
        await asyncio.sleep(0.001)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_driver_answers_echo_on_real_loop() -> None:
    """On a real asyncio loop the driver reads an echo request from the link and writes the reply."""

    async def scenario() -> bytes:
        ours, peer = MemoryLink.pair()
        stack = ipv4_over_memory()
        driver = AsyncioDriver(stack, ours)
        driver.start()
        try:
            assert peer.write(echo_request(seq=9))
            return await asyncio.wait_for(next_frame(peer), TIMEOUT)
        finally:
            driver.stop()
            ours.close()
            peer.close()

    reply = IP(run(scenario()))
    assert (reply.src, reply.dst) == (OWN, PEER)
    assert (reply[ICMP].type, reply[ICMP].code, reply[ICMP].id, reply[ICMP].seq) == (0, 0, 0x4242, 9)
    assert bytes(reply[ICMP].payload) == b"over the loop"


def test_driver_arms_reassembly_timer_and_stop_cancels_it() -> None:
    """A held fragment arms the driver's one timer at stack.get_timer(); stop() cancels it and closes."""
    closed = Closed()
    stack = ipv4_over_memory(PluginHost(entry_points=False, extra=[closed]))

    async def scenario() -> None:
        ours, peer = MemoryLink.pair()
        driver = AsyncioDriver(stack, ours)
        driver.start()
        try:
            assert driver._timer is None and driver._timer_at is None
            first = IP(src=PEER, dst=OWN, id=77, flags="MF", frag=0, proto=1) / Raw(bytes(24))
            assert peer.write(raw(first))
            await asyncio.wait_for(until(lambda: stack.frames_in == 1), TIMEOUT)
            assert stack.stats.events["ipv4.fragments_held"] == 1
            deadline = stack.get_timer()
            assert deadline is not None
            assert driver._timer_at == deadline
            timer = driver._timer
            assert timer is not None and timer.when() == deadline
        finally:
            driver.stop()
            ours.close()
            peer.close()
        assert timer.cancelled()
        assert driver._timer is None
        assert closed.closed == [stack]
        driver.stop()  # stopping twice is harmless and does not close twice
        assert closed.closed == [stack]

    run(scenario())


class Ticker(BaseHandler):
    """Asks for a timer at a given time and sends one frame down when it fires."""

    name = "ticker"

    def __init__(self) -> None:
        self.due: float | None = None
        self.fired_at: list[float] = []

    def poll_at(self) -> float | None:
        return self.due

    def handle_timer(self, ctx: Context) -> None:
        self.fired_at.append(ctx.now)
        self.due = None
        ctx.transmit(self, Packet(b"tick"))


def test_driver_fires_timer_and_transmits() -> None:
    """When the timer is due the driver runs handle_timer with now >= the deadline and sends the output."""
    ticker = Ticker()
    stack = Stack(Pipeline([RawIpLink("memory", 1500, MemorySettings()), ticker]))

    async def scenario() -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()
        ours, peer = MemoryLink.pair()
        driver = AsyncioDriver(stack, ours, loop)
        deadline = ticker.due = loop.time() + 0.01
        driver.start()
        try:
            assert driver._timer_at == deadline
            frame = await asyncio.wait_for(next_frame(peer), TIMEOUT)
            assert driver._timer is None and driver._timer_at is None  # nothing more to wait for
            return frame, deadline
        finally:
            driver.stop()
            ours.close()
            peer.close()

    frame, deadline = run(scenario())
    assert frame == b"tick"
    assert len(ticker.fired_at) == 1
    assert ticker.fired_at[0] >= deadline


def test_driver_counts_refused_writes() -> None:
    """A frame the link refuses to write is counted as ("link", "tx_failed")."""

    class Refusing(MemoryLink):
        def write(self, frame: bytes) -> bool:
            return False

    async def scenario() -> Stack:
        ours, peer = MemoryLink.pair()
        refusing = Refusing(ours._sock, 1500)
        stack = ipv4_over_memory()
        driver = AsyncioDriver(stack, refusing)
        driver.start()
        try:
            assert peer.write(echo_request())
            await asyncio.wait_for(until(lambda: stack.stats.total_drops() > 0), TIMEOUT)
        finally:
            driver.stop()
            ours.close()
            peer.close()
        return stack

    stack = run(scenario())
    assert stack.stats.drops == {("link", "tx_failed"): 1}
    assert stack.stats.events["icmp.echo_replies"] == 1


def test_memory_readinto_reads_one_frame_into_a_lent_buffer() -> None:
    """readinto (the driver's preallocated read) returns each frame's length into the same buffer,
    -1 when none waits, and an empty datagram as a frame of length 0."""
    a, b = MemoryLink.pair()
    try:
        buf = bytearray(b.read_size)
        assert b.readinto(buf) == -1
        for frame in (b"first frame", b"", b"2nd"):
            assert a.write(frame)
        assert b.readinto(buf) == 11 and buf[:11] == b"first frame"
        assert b.readinto(buf) == 0
        assert b.readinto(buf) == 3 and buf[:3] == b"2nd"
        assert b.readinto(buf) == -1
    finally:
        a.close()
        b.close()


def test_driver_reads_into_one_reused_buffer_and_keeps_read_available_for_other_links() -> None:
    """A link with readinto: every frame is read into the same preallocated buffer and handed
    over as a view of it. A link without (only the Link protocol's read_available) still works."""

    class OnlyReadAvailable:
        def __init__(self, link: MemoryLink) -> None:
            self.inner = link
            self.mtu = link.mtu

        def fileno(self) -> int:
            return self.inner.fileno()

        def read_available(self, limit: int = 64) -> list[bytes]:
            return self.inner.read_available(limit)

        def write(self, frame: bytes) -> bool:
            return self.inner.write(frame)

        def close(self) -> None:
            self.inner.close()

    seen: list[int] = []

    class Spy(BaseHandler):
        name = "spy"

        def receive(self, pkt: Packet, ctx: Context) -> Packet | None:
            assert isinstance(pkt.payload, memoryview)
            seen.append(id(pkt.payload.obj))
            return pkt

    async def scenario(wrap: bool) -> bytes:
        ours, peer = MemoryLink.pair()
        settings = Ipv4Settings(address=f"{OWN}/24", ident_seed=0)
        stack = Stack(Pipeline([RawIpLink("memory", 1500, MemorySettings()), Spy(), Ipv4Layer("ipv4", settings)]))
        link = OnlyReadAvailable(ours) if wrap else ours
        driver = AsyncioDriver(stack, link)
        assert (driver._readinto is None) == wrap
        driver.start()
        try:
            assert peer.write(echo_request(seq=1))
            await asyncio.wait_for(next_frame(peer), TIMEOUT)
            assert peer.write(echo_request(seq=2))
            return await asyncio.wait_for(next_frame(peer), TIMEOUT)
        finally:
            driver.stop()
            ours.close()
            peer.close()

    assert IP(run(scenario(False)))[ICMP].seq == 2
    assert len(seen) == 2 and seen[0] == seen[1]  # one buffer under every frame
    seen.clear()
    assert IP(run(scenario(True)))[ICMP].seq == 2
    assert len(seen) == 2
