"""Tests for the pcap capture middleware (layers/middleware/pcap.py)."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from framework.errors import ConfigError
from framework.registry import Registry
from framework.settings import validate_settings
from framework.stack import Stack
from layers.middleware import pcap
from layers.middleware.pcap import PcapSettings, PcapWriter
from tcpstack.config import build_stack, config_from_dict
from tcpstack.plugins import PluginHost
from tests.layers.middleware.helpers import Top, ipv4_datagram, make_stack, outbound

GLOBAL_HEADER = bytes.fromhex("d4c3b2a1020004000000000000000000ffff000065000000")


def records(data: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """Split a little-endian pcap stream into (ts_sec, ts_usec, incl_len, orig_len, bytes)."""
    out = []
    pos = 24
    while pos < len(data):
        sec, usec, incl, orig = struct.unpack_from("<IIII", data, pos)
        pos += 16
        out.append((sec, usec, incl, orig, data[pos : pos + incl]))
        pos += incl
    assert pos == len(data)
    return out


def capture_stack(sink: io.BytesIO | io.BufferedWriter, **kw: int) -> tuple[Stack, PcapWriter, Top]:
    writer = PcapWriter("pcap", sink, **kw)  # type: ignore[arg-type]
    stack, top = make_stack(writer)
    return stack, writer, top


def test_global_header_is_written_once_on_creation() -> None:
    """The 24-byte global header is exactly the classic LINKTYPE_RAW microsecond header."""
    buf = io.BytesIO()
    PcapWriter("pcap", buf)
    assert buf.getvalue() == GLOBAL_HEADER
    assert struct.unpack("<IHHiIII", GLOBAL_HEADER) == (0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)


def test_global_header_carries_snaplen() -> None:
    """The configured snaplen appears in the global header."""
    buf = io.BytesIO()
    PcapWriter("pcap", buf, snaplen=1500)
    assert buf.getvalue()[16:20] == (1500).to_bytes(4, "little")


def test_records_inbound_and_outbound_in_order() -> None:
    """Inbound and outbound packets are recorded in order with exact times and lengths, and pass unchanged."""
    buf = io.BytesIO()
    stack, _writer, top = capture_stack(buf)
    d1 = ipv4_datagram(b"first", ident=1)
    d3 = ipv4_datagram(b"third!", ident=3)
    stack.receive_frame(d1, now=1.5)
    stack.send(top, outbound(b"second", ident=2), now=2.25)
    stack.receive_frame(d3, now=3.000001)
    sent = stack.frames_to_send(now=3.000001)

    assert top.received == [d1, d3]
    assert len(sent) == 1
    recs = records(buf.getvalue())
    assert recs == [
        (1, 500000, len(d1), len(d1), d1),
        (2, 250000, len(sent[0]), len(sent[0]), sent[0]),
        (3, 1, len(d3), len(d3), d3),
    ]
    assert stack.stats.events["pcap.frames"] == 3
    assert stack.stats.total_drops() == 0


def test_outbound_through_context_transmit_is_recorded() -> None:
    """A packet sent with ctx.transmit from the top layer is recorded as serialized."""
    buf = io.BytesIO()
    stack, _writer, top = capture_stack(buf)
    stack.context.now = 7.0
    stack.context.transmit(top, outbound(b"x", ident=9))
    (frame,) = stack.frames_to_send(now=7.0)
    assert records(buf.getvalue()) == [(7, 0, len(frame), len(frame), frame)]


def test_snaplen_truncates_the_record_not_the_packet() -> None:
    """A packet longer than snaplen is stored truncated with its original length; the stack sees all of it."""
    buf = io.BytesIO()
    stack, _writer, top = capture_stack(buf, snaplen=68)
    d = ipv4_datagram(bytes(range(100)))
    stack.receive_frame(d, now=0.0)
    ((sec, usec, incl, orig, data),) = records(buf.getvalue())
    assert (sec, usec, incl, orig) == (0, 0, 68, 120)
    assert data == d[:68]
    assert top.received == [d]


def test_time_offset_is_added_to_record_times() -> None:
    """Record times are ctx.now plus the writer's time_offset."""
    buf = io.BytesIO()
    stack, writer, _top = capture_stack(buf)
    writer.time_offset = 1_700_000_000.0
    stack.receive_frame(ipv4_datagram(), now=0.25)
    ((sec, usec, *_rest),) = records(buf.getvalue())
    assert (sec, usec) == (1_700_000_000, 250000)


def test_close_stops_recording_and_keeps_passing_packets() -> None:
    """After close() packets still pass but are not recorded; a borrowed sink stays open."""
    buf = io.BytesIO()
    stack, writer, top = capture_stack(buf)
    writer.close()
    writer.close()  # idempotent
    d = ipv4_datagram(b"late")
    stack.receive_frame(d, now=1.0)
    assert top.received == [d]
    assert buf.getvalue() == GLOBAL_HEADER
    assert not buf.closed
    assert writer.closed


def test_scapy_reads_back_the_same_packets(tmp_path: Path) -> None:
    """scapy's rdpcap reads the file back: same packets, same order, same times, decoded as IP."""
    from scapy.layers.inet import IP
    from scapy.utils import rdpcap

    path = tmp_path / "cap.pcap"
    with open(path, "wb") as f:
        stack, writer, top = capture_stack(f)
        d1 = ipv4_datagram(b"one", ident=11)
        stack.receive_frame(d1, now=10.125)
        stack.send(top, outbound(b"two", ident=12), now=10.5)
        writer.sync()
    (sent,) = stack.frames_to_send(now=10.5)

    pkts = rdpcap(str(path))
    assert [bytes(p) for p in pkts] == [d1, sent]
    assert [float(p.time) for p in pkts] == pytest.approx([10.125, 10.5], abs=1e-6)
    assert all(p.haslayer(IP) for p in pkts)
    assert [p[IP].id for p in pkts] == [11, 12]
    assert (pkts[0][IP].src, pkts[1][IP].src) == ("10.0.0.1", "10.0.0.2")


def registered_factory() -> Registry:
    registry = Registry()
    pcap.stack_register(registry)
    return registry


def write_with_factory(path: Path) -> tuple[Stack, PcapWriter, list[bytes]]:
    factory = registered_factory().layers["pcap"].factory
    writer = factory("pcap", PcapSettings(path=str(path)))
    assert isinstance(writer, PcapWriter)
    stack, top = make_stack(writer)
    frames = [ipv4_datagram(b"a", ident=1), ipv4_datagram(b"bb", ident=2)]
    stack.receive_frame(frames[0], now=1.0)
    stack.send(top, outbound(b"ccc", ident=3), now=2.0)
    stack.receive_frame(frames[1], now=3.0)
    frames.insert(1, stack.frames_to_send(now=3.0)[0])
    pcap.stack_closed(stack)
    return stack, writer, frames


def test_factory_writes_file_closed_by_stack_closed(tmp_path: Path) -> None:
    """The registered factory opens settings.path; the stack_closed hook flushes and closes it."""
    path = tmp_path / "factory.pcap"
    _stack, writer, frames = write_with_factory(path)
    assert writer.closed
    data = path.read_bytes()
    assert data[:24] == GLOBAL_HEADER
    assert [r[4] for r in records(data)] == frames


def test_tcpdump_reads_the_file(tmp_path: Path) -> None:
    """tcpdump -nr decodes the file: exit status 0 and one line per packet."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        pytest.skip("tcpdump is not on PATH; install it to check the file with a real pcap reader")
    path = tmp_path / "tcpdump.pcap"
    _stack, _writer, frames = write_with_factory(path)
    proc = subprocess.run([tcpdump, "-nr", str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(frames)
    assert all(" IP 10.0.0." in line for line in lines)


def test_factory_rejects_unwritable_path(tmp_path: Path) -> None:
    """An unopenable path raises ValueError naming the key, the path and the reason."""
    factory = registered_factory().layers["pcap"].factory
    bad = tmp_path / "missing-dir" / "x.pcap"
    with pytest.raises(ValueError, match=r"^pcap\.path: cannot open .*missing-dir/x\.pcap: No such file or directory$"):
        factory("pcap", PcapSettings(path=str(bad)))


def test_build_stack_reports_unwritable_path_as_config_problem() -> None:
    """build_stack turns the factory's ValueError into a ConfigError with the layer's index (a path
    validation accepts, in a directory that exists, that only opening it shows cannot be created)."""
    host = PluginHost(entry_points=False)
    bad = "/proc/tcpstack-test.pcap"  # /proc takes no new files, not even from root
    config = config_from_dict({"layers": [{"type": "memory"}, {"type": "pcap", "path": bad}]}, host=host)
    with pytest.raises(ConfigError) as info:
        build_stack(config)
    (problem,) = info.value.problems
    assert problem.startswith(f"layers[1]: pcap.path: cannot open {bad}: ")


@pytest.mark.parametrize("where", ["missing-dir/x.pcap", "."], ids=["missing directory", "a directory"])
def test_path_in_a_missing_directory_or_a_directory_is_a_validation_error(tmp_path: Path, where: str) -> None:
    """A capture path whose directory does not exist, or that is a directory, is found by validation
    (so `tcpstack config check` reports it too), with its key path; nothing is created."""
    bad = str(tmp_path / where)
    with pytest.raises(ConfigError) as info:
        config_from_dict({"layers": [{"type": "memory"}, {"type": "pcap", "path": bad}]}, entry_points=False)
    (problem,) = info.value.problems
    assert problem.startswith("layers[1].path: ") and ("does not exist" in problem or "is a directory" in problem)
    assert not (tmp_path / "missing-dir").exists()


def test_plugin_host_closes_capture_on_stack_closed(tmp_path: Path) -> None:
    """Through the plugin host, a configured pcap layer is closed by the stack_closed hook."""
    host = PluginHost(entry_points=False)
    path = tmp_path / "host.pcap"
    config = config_from_dict({"layers": [{"type": "memory"}, {"type": "pcap", "path": str(path)}]}, host=host)
    stack = build_stack(config)
    d = ipv4_datagram(b"hi")
    stack.receive_frame(d, now=4.0)
    writer = stack.layer("pcap")
    assert isinstance(writer, PcapWriter)
    host.stack_closed(stack)
    assert writer.closed
    assert records(path.read_bytes()) == [(4, 0, len(d), len(d), d)]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"snaplen": 67}, "pcap.snaplen: 67 is out of range [68, 262144]"),
        ({"snaplen": 262145}, "pcap.snaplen: 262145 is out of range [68, 262144]"),
        ({"path": ""}, "pcap.path: must not be empty"),
    ],
)
def test_settings_bounds(data: dict[str, object], problem: str) -> None:
    """Out-of-range snaplen and an empty path are configuration problems."""
    problems: list[str] = []
    assert validate_settings(PcapSettings, data, "pcap", problems) is None
    assert problems == [problem]
