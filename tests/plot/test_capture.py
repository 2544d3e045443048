"""Reading captures for ``tcpstack plot`` (tcpstack/plot/capture.py): every format and link layer
gives the same segments; bad files are one clear error, bad frames counted skips, never a traceback."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether, Loopback
from scapy.packet import Raw
from scapy.utils import PcapWriter, wrpcap

from tcpstack.plot.analysis import analyze
from tcpstack.plot.capture import CaptureError, read_capture
from tests.plot import scenario
from tests.plot.scenario import Seg

FORMATS = [("raw", False), ("ether", False), ("sll", False), ("sll2", False), ("ether", True), ("sll", True)]


@pytest.fixture(scope="module")
def sc() -> scenario.Scenario:
    return scenario.full()


@pytest.fixture(scope="module")
def raw_pcap(sc: scenario.Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scenario.write_capture(sc, tmp_path_factory.mktemp("cap") / "raw.pcap")


def _fields(conn):  # type: ignore[no-untyped-def]
    return (
        list(conn.seg_side), list(conn.seg_flags), list(conn.seg_seq), list(conn.seg_ack), list(conn.seg_win),
        list(conn.seg_len), list(conn.sack_at), list(conn.sack_left), list(conn.sack_right),
    )  # fmt: skip


@pytest.mark.parametrize(("link", "ng"), FORMATS, ids=[f"{k}-{'pcapng' if n else 'pcap'}" for k, n in FORMATS])
def test_every_format_and_link_layer_gives_the_same_connections(sc, raw_pcap, tmp_path, link, ng) -> None:
    ref = read_capture(raw_pcap)
    cap = read_capture(scenario.write_capture(sc, tmp_path / f"c.{'pcapng' if ng else 'pcap'}", link, pcapng=ng))
    assert [c.ends for c in cap.conns] == [c.ends for c in ref.conns]
    for a, b in zip(cap.conns, ref.conns, strict=True):
        assert _fields(a) == _fields(b)
        assert list(a.seg_t) == pytest.approx(list(b.seg_t), abs=2e-6)  # scapy rounds pcap, truncates pcapng
    # Numbered in order of first appearance; the handshake's options are read.
    assert [c.ends for c in cap.conns] == [
        (scenario.CLIENT, scenario.SERVER),
        (("10.0.0.1", 40001), scenario.SERVER),
        (("10.0.0.1", 50000), ("10.0.0.3", 22)),
    ]
    main = cap.conns[0]
    assert main.isn == [scenario.ISN_C, scenario.ISN_S] and main.syn_ack_side == 1
    assert main.wscale == [7, 2] and main.mss == [1460, scenario.MSS] and main.sack_ok == [True, True]
    assert main.payload == [100, (scenario.DATA_SEGMENTS + len(scenario.DROP)) * scenario.MSS]


def test_frames_that_are_not_tcp_or_broken_are_counted_not_fatal(sc, raw_pcap, tmp_path) -> None:
    raw = read_capture(raw_pcap).stats
    assert dict(raw.skipped) == {"not TCP": 2, "malformed: garbage frame": 1, "malformed: broken TCP header": 1}
    assert raw.frames == len(sc.segs) + 4 and raw.tcp == len(sc.segs) and not raw.notes
    ether = read_capture(scenario.write_capture(sc, tmp_path / "e.pcap", "ether")).stats
    assert dict(ether.skipped) == {
        "not TCP": 2,
        "not IP": 1,  # the ARP frame
        "malformed: IP header": 1,
        "malformed: broken TCP header": 1,
    }


def test_a_file_cut_short_gives_the_frames_before_the_cut(raw_pcap, tmp_path) -> None:
    data = raw_pcap.read_bytes()
    full = read_capture(raw_pcap)
    for cut in (len(data) - 7, len(data) - 1050, len(data) // 2):
        path = tmp_path / "cut.pcap"
        path.write_bytes(data[:cut])
        cap = read_capture(path)
        assert any("cut short" in n for n in cap.stats.notes), cap.stats.notes
        assert 0 < cap.stats.tcp < full.stats.tcp + 1


def test_a_corrupt_record_length_stops_the_reading_with_a_note(raw_pcap, tmp_path) -> None:
    data = bytearray(raw_pcap.read_bytes())
    # Walk to the tenth record and give it a length no frame has.
    off = 24
    for _ in range(9):
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
    struct.pack_into("<I", data, off + 8, 0xFFFFFFF0)
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(data))
    cap = read_capture(path)
    assert cap.stats.frames == 9
    assert any("corrupt" in n for n in cap.stats.notes)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "too short"),
        (b"hello world, this is text\n", "not a pcap or pcapng file"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x00\x00\x00\x00", "byte-order magic"),
        (
            struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 105) + struct.pack("<IIII", 1, 0, 4, 4) + b"abcd",
            "link type 105",
        ),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101), "no frames"),
    ],
    ids=["empty", "text", "bad-pcapng", "wifi", "no-frames"],
)
def test_a_file_that_is_not_a_readable_capture_is_one_clear_error(tmp_path, content, message) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match=message):
        read_capture(path)


def test_missing_and_directory_are_errors(tmp_path) -> None:
    with pytest.raises(CaptureError, match="cannot open: No such file"):
        read_capture(tmp_path / "nope.pcap")
    with pytest.raises(CaptureError, match="cannot open"):
        read_capture(tmp_path)


# ====================================================================== pcapng by hand


def _block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def _opt(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def _pcapng(order: str, frames: list[tuple[int, float, bytes, str | None]]) -> bytes:
    """A section with two interfaces: 0 raw IP with nanosecond stamps, 1 Ethernet with
    microseconds and an offset of 1000 s; EPBs (with comments), and one simple packet block."""
    out = _block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    end = _opt(order, 0, b"")
    out += _block(order, 1, struct.pack(order + "HHI", 101, 0, 65535) + _opt(order, 9, bytes([9])) + end)
    out += _block(
        order, 1, struct.pack(order + "HHI", 1, 0, 65535) + _opt(order, 14, struct.pack(order + "q", 1000)) + end
    )
    for iface, t, data, comment in frames:
        units = 10**9 if iface == 0 else 10**6
        ts = round((t - (0 if iface == 0 else 1000)) * units)
        body = struct.pack(order + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
        body += data + b"\x00" * (-len(data) % 4)
        if comment:
            body += _opt(order, 1, comment.encode()) + end
        out += _block(order, 6, body)
    out += _block(order, 3, struct.pack(order + "I", 4) + b"abcd")
    return out


@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian", "big-endian"])
def test_pcapng_with_two_interfaces_resolutions_offsets_and_comments(tmp_path, order) -> None:
    segs = [
        Seg(scenario.T0 + 0.000000001, scenario.CLIENT, scenario.SERVER, 100, 0, "S", syn_opts=True),
        Seg(scenario.T0 + 0.000002, scenario.SERVER, scenario.CLIENT, 900, 101, "SA", syn_opts=True),
        Seg(scenario.T0 + 0.000003, scenario.CLIENT, scenario.SERVER, 101, 901, "PA", length=10),
    ]
    frames = []
    for i, s in enumerate(segs):
        ip = bytes(IP(src=s.src[0], dst=s.dst[0]) / s.tcp() / Raw(bytes(s.length)))
        data = ip if i % 2 == 0 else bytes(Ether(type=0x0800)) + ip
        frames.append((i % 2, s.t, data, "ACK delayed, delayed_ack, RFC 1122 §4.2.3.2, deadline 40 ms" if i else None))
    path = tmp_path / "two.pcapng"
    path.write_bytes(_pcapng(order, frames))
    cap = read_capture(path)
    [conn] = cap.conns
    assert list(conn.seg_seq) == [100, 900, 101] and list(conn.seg_len) == [0, 0, 10]
    assert list(conn.seg_t) == pytest.approx([s.t for s in segs], abs=1e-7)
    assert conn.seg_t[0] - scenario.T0 == pytest.approx(1e-9, abs=2e-7)
    assert cap.linktypes == {101, 1}
    assert dict(cap.stats.skipped) == {"simple packet block (no timestamp)": 1}


def test_nanosecond_pcap_loopback_and_fragments(tmp_path) -> None:
    syn = IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="S", seq=5)
    frag = IP(src="10.0.0.1", dst="10.0.0.2", flags="MF") / TCP(sport=1, dport=2, flags="A", seq=6)
    path = tmp_path / "ns.pcap"
    w = PcapWriter(str(path), nano=True, linktype=101)
    for i, p in enumerate((syn, frag)):
        p.time = scenario.T0 + 0.123456789 + i
        w.write(p)
    w.close()
    cap = read_capture(path)
    assert cap.conns[0].seg_t[0] == pytest.approx(scenario.T0 + 0.123456789, abs=1e-7)
    assert dict(cap.stats.skipped) == {"IP fragment": 1}
    lo = tmp_path / "lo.pcap"
    wrpcap(str(lo), [Loopback(type=2) / syn], linktype=0)
    assert list(read_capture(lo).conns[0].seg_seq) == [5]


def _write(tmp_path: Path, segs: list[Seg], name: str = "c.pcap") -> Path:
    sc = scenario.Scenario(segs=segs, probe=[], noise=[])
    return scenario.write_capture(sc, tmp_path / name, noise=False)


def test_sequence_numbers_unwrap_past_4_gib(tmp_path) -> None:
    c, s = scenario.CLIENT, scenario.SERVER
    isn = 4_000_000_000
    segs = [
        Seg(scenario.T0, c, s, 7, 0, "S", syn_opts=True),
        Seg(scenario.T0 + 0.001, s, c, isn, 8, "SA", syn_opts=True),
    ]
    for k in range(6):  # a sparse stand-in for a 6 GB transfer: one segment per 1e9 bytes
        segs.append(Seg(scenario.T0 + 0.01 * (k + 1), s, c, isn + 1 + k * 1_000_000_000, 8, "PA", length=1000))
        segs.append(Seg(scenario.T0 + 0.01 * (k + 1) + 0.005, c, s, 8, isn + 1 + k * 1_000_000_000 + 1000, "A"))
    [conn] = read_capture(_write(tmp_path, segs)).conns
    a = analyze(conn)
    assert list(a.seg_rel) == [1 + k * 1_000_000_000 for k in range(6)]
    assert list(a.ack_rel) == [1001 + k * 1_000_000_000 for k in range(6)]
    assert not any(a.seg_retrans)


def test_ports_reused_by_a_new_connection_make_a_second_connection(tmp_path) -> None:
    c, s = scenario.CLIENT, scenario.SERVER
    segs = []
    for n, (t, isn) in enumerate(((scenario.T0, 100), (scenario.T0 + 1, 50_000))):
        segs += [
            Seg(t, c, s, isn, 0, "S", syn_opts=True),
            Seg(t + 0.0001, c, s, isn, 0, "S", syn_opts=True),  # the SYN again: the same connection
            Seg(t + 0.001, s, c, 7000 * (n + 1), isn + 1, "SA", syn_opts=True),
            Seg(t + 0.002, c, s, isn + 1, 7000 * (n + 1) + 1, "FA"),
        ]
    conns = read_capture(_write(tmp_path, segs)).conns
    assert [c.isn[0] for c in conns] == [100, 50_000] and [len(c) for c in conns] == [4, 4]


def test_the_senders_window_is_scaled_except_in_a_syn(tmp_path) -> None:
    """An upload (the client sends the data): the ACKing side is the server, whose SYN-ACK window
    is never scaled (RFC 7323 §2.2) and whose later windows are, by its shift (2)."""
    c, s = scenario.CLIENT, scenario.SERVER
    t = scenario.T0
    segs = [
        Seg(t, c, s, 10, 0, "S", win=64240, syn_opts=True),
        Seg(t + 0.001, s, c, 500, 11, "SA", win=65535, syn_opts=True),
        Seg(t + 0.002, c, s, 11, 501, "PA", length=3000, win=502),
        Seg(t + 0.003, s, c, 501, 3011, "A", win=1000),
    ]
    [conn] = read_capture(_write(tmp_path, segs)).conns
    a = analyze(conn)
    assert a.data_side == 0 and a.window_scale == 2
    assert list(a.ack_rel) == [1, 3001]
    assert list(a.win_rel) == [1 + 65535, 3001 + (1000 << 2)]


@pytest.fixture(scope="module")
def pcapng_file(sc: scenario.Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scenario.write_capture(sc, tmp_path_factory.mktemp("cap") / "e.pcapng", "sll2", pcapng=True)


@pytest.mark.parametrize("which", ["pcap", "pcapng"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mangled_captures_never_raise_anything_but_a_capture_error(
    raw_pcap, pcapng_file, tmp_path, which, data
) -> None:
    """Hypothesis: flipped bytes and cuts anywhere in a capture give a reading (frames counted or
    skipped) or a CaptureError, and the analysis of what was read runs."""
    blob = bytearray((raw_pcap if which == "pcap" else pcapng_file).read_bytes()[:4000])
    for _ in range(data.draw(st.integers(0, 30))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    blob = blob[: data.draw(st.integers(0, len(blob)))]
    path = tmp_path / f"m.{which}"
    path.write_bytes(bytes(blob))
    try:
        cap = read_capture(path)
    except CaptureError:
        return
    for conn in cap.conns:
        analyze(conn)
