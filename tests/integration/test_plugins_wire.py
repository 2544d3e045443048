"""The per-connection plugins against the Linux kernel, over a TUN device in a namespace
(docs/plugins.md; checklist H1, H3, A4, W2).

Each test runs ``tcpstack up --config FILE --serve ... --pcap FILE`` twice, once with the
default feature set and once with one feature turned off in the tcp layer's ``features`` table,
drives it with a kernel client in the namespace, and reads the stack's own capture with scapy.
Kernel clients are paced where the measurement needs segments to arrive one at a time. Every
test is bounded (a few seconds per run) and the namespace is deleted afterwards.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.netns import KERNEL_ADDR, STACK_ADDR, Netns

pytest.importorskip("scapy.layers.inet")
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

TUN_AND_IPV4 = (
    f'[[layers]]\ntype = "tun"\ndevice = "tun0"\n\n[[layers]]\ntype = "ipv4"\naddress = "{STACK_ADDR}/24"\n\n'
)


def write_config(tmp: Path, features: str = "", *, delay_out: float = 0.0) -> Path:
    """A configuration like the default one (tun, ipv4, tcp); *features* is the tcp layer's inline
    ``features`` table; *delay_out* holds every frame the stack sends for that long (a path RTT)."""
    text = TUN_AND_IPV4
    if delay_out:
        # The fault layer sits above the tun (and the pcap layer --pcap inserts), below ipv4.
        text = text.replace(
            '[[layers]]\ntype = "ipv4"',
            f'[[layers]]\ntype = "fault"\ndelay = 1.0\ndelay_time = {delay_out}\ndirection = "out"\n\n'
            '[[layers]]\ntype = "ipv4"',
        )
    text += '[[layers]]\ntype = "tcp"\n'
    if features:
        text += f"features = {{ {features} }}\n"
    path = tmp / "stack.toml"
    path.write_text(text)
    return path


def run_stack(netns: Netns, tmp: Path, config: Path, *serve: str) -> subprocess.Popen[bytes]:
    args = ["--config", str(config), "--pcap", str(tmp / "stack.pcap"), "--log-format", "json"]
    for s in serve:
        args += ["--serve", s]
    return netns.tcpstack(*args, tmp=tmp)


def stop_stack(proc: subprocess.Popen[bytes], tmp: Path) -> list[dict[str, Any]]:
    """SIGTERM the stack, require a clean exit and log; return the log's events."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, (tmp / "stack.err").read_text()[-3000:]
    text = (tmp / "stack.err").read_text()
    assert "Traceback" not in text, text[-3000:]
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert events[-1]["event"] == "stack.down"
    assert not [e for e in events if e.get("level") in ("error", "critical")]
    return events


def kernel(netns: Netns, script: str, *, timeout: float = 40, **env: object) -> str:
    """Run a Python *script* in the namespace (the kernel's side); return its stdout."""
    prelude = "".join(f"{k} = {v!r}\n" for k, v in env.items())
    r = netns.exec([sys.executable, "-c", prelude + script], check=False, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def segments(pcap: Path) -> list[Any]:
    """The TCP segments of the capture, in order."""
    return [p for p in rdpcap(str(pcap)) if IP in p and TCP in p[IP]]


def options(seg: Any) -> dict[str, Any]:
    return dict(seg[TCP].options)


def ours(segs: list[Any]) -> list[Any]:
    return [p for p in segs if p[IP].src == STACK_ADDR]


def theirs(segs: list[Any]) -> list[Any]:
    return [p for p in segs if p[IP].src == KERNEL_ADDR]


def payload_len(seg: Any) -> int:
    return len(bytes(seg[TCP].payload))


# ====================================================================== SYN-ACK options (H1, H3)

SS_CLIENT = """
import socket, struct, subprocess
s = socket.create_connection((STACK, 7), timeout=10)
s.sendall(b"ping")
assert s.recv(4) == b"ping"
info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
print("TCPI_OPTIONS", info[5], "SND_WSCALE", info[6] & 15)
print(subprocess.run(["ss", "-tin", "dst", STACK], capture_output=True, text=True, check=True).stdout)
s.close()
"""


@pytest.mark.parametrize(
    ("features", "on"),
    [("", True), ("window_scaling = false, timestamps = false", False)],
    ids=["default", "wscale-and-ts-off"],
)
def test_syn_ack_options_follow_the_features(netns: Netns, tmp_path: Path, features: str, on: bool) -> None:
    """RFC 7323 §2.2 and §3.2 (checklist H1, H3): the kernel offers window scaling and timestamps; our SYN-ACK
    answers with both (shift 4 for the 512 KiB buffer, TSecr echoing the kernel's TSval) only when the features
    are on, and the kernel's own view (``ss -tin``, TCP_INFO) agrees."""
    proc = run_stack(netns, tmp_path, write_config(tmp_path, features), "echo:7")
    out = kernel(netns, SS_CLIENT, STACK=STACK_ADDR)
    stop_stack(proc, tmp_path)

    segs = segments(tmp_path / "stack.pcap")
    [syn] = [p for p in theirs(segs) if p[TCP].flags == "S"]
    [synack] = [p for p in ours(segs) if p[TCP].flags == "SA"]
    offered, answered = options(syn), options(synack)
    assert "WScale" in offered and "Timestamp" in offered  # Linux offers both by default
    assert synack[TCP].window == 65535  # RFC 7323 §2.2: never scaled in a SYN-ACK
    later = [p for p in ours(segs) if not p[TCP].flags.S and not p[TCP].flags.R]
    assert later
    if on:
        assert answered["WScale"] == 4  # shift_for(512 KiB)
        assert answered["Timestamp"][1] == offered["Timestamp"][0]
        assert all("Timestamp" in options(p) for p in later)  # RFC 7323 §3.2: on every non-RST segment
    else:
        assert "WScale" not in answered and "Timestamp" not in answered
        assert not any("Timestamp" in options(p) for p in later)

    # The kernel's view. TCPI_OPT_TIMESTAMPS = 1, TCPI_OPT_WSCALE = 4 (linux/tcp.h).
    m = re.search(r"TCPI_OPTIONS (\d+) SND_WSCALE (\d+)", out)
    assert m is not None, out
    kopts, snd_wscale = int(m.group(1)), int(m.group(2))
    assert bool(kopts & 1) is on and bool(kopts & 4) is on
    assert snd_wscale == (4 if on else 0)
    # ss prints "wscale:<ours>,<its own>" only when scaling is in force, and the effective MSS shows the 12
    # bytes of timestamps. (This iproute2 does not print the "ts" flag even between two Linux sockets, so
    # the flag is checked only where it appears.)
    line = out[out.index("ESTAB") :]
    assert (re.search(r"\bwscale:4,\d+", line) is not None) is on, line
    assert re.search(r"\bmss:(\d+)", line) is not None
    assert f"mss:{1448 if on else 1460} " in line, line
    if not on:
        assert not re.search(r"\bts\b", line) and "wscale" not in line


# ====================================================================== delayed ACK (A4)

UPLOAD = """
import socket, time
s = socket.create_connection((STACK, 9), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
block = b"u" * 1448
for _ in range(COUNT):
    s.sendall(block)
    time.sleep(PACE)  # one full-sized segment at a time, so every arrival is its own batch
s.shutdown(socket.SHUT_WR)
s.settimeout(10)
assert s.recv(1) == b""
s.close()
"""


def pure_acks_during_upload(netns: Netns, tmp: Path, features: str) -> tuple[int, int]:
    """Upload 300 full-sized segments (about 434 kB) to the discard service; return (our pure ACKs, the
    kernel's data segments) from the capture."""
    tmp.mkdir()
    proc = run_stack(netns, tmp, write_config(tmp, features), "discard:9")
    kernel(netns, UPLOAD, STACK=STACK_ADDR, COUNT=300, PACE=0.001)
    stop_stack(proc, tmp)
    segs = segments(tmp / "stack.pcap")
    acks = [p for p in ours(segs) if str(p[TCP].flags) == "A" and payload_len(p) == 0]
    data = [p for p in theirs(segs) if payload_len(p)]
    assert sum(payload_len(p) for p in data) >= 300 * 1448
    return len(acks), len(data)


def test_delayed_ack_halves_our_acks_during_an_upload(netns: Netns, tmp_path: Path) -> None:
    """RFC 1122 §4.2.3.2, RFC 9293 SHLD-18/19, RFC 5681 §4.2 (checklist A4): during a bulk upload from the
    kernel, delayed ACK roughly halves our pure ACKs compared with ``delayed_ack = false``, while still
    ACKing at least every second full-sized (timestamped, 1448-byte) segment."""
    with_feature, segs_with = pure_acks_during_upload(netns, tmp_path / "on", "")
    without, segs_without = pure_acks_during_upload(netns, tmp_path / "off", "delayed_ack = false")
    print(
        f"\npure ACKs: {with_feature} for {segs_with} segments with delayed ACK, {without} for {segs_without} without"
    )
    assert with_feature <= 0.7 * without, (with_feature, without)
    assert with_feature >= 0.4 * segs_with, (with_feature, segs_with)  # not one ACK per 3 segments


# ====================================================================== Nagle (W2)

ONE_BYTE_WRITES = """
import socket, threading, time
s = socket.create_connection((STACK, 7), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
got = bytearray()
def reader():
    while len(got) < COUNT:
        chunk = s.recv(4096)
        if not chunk:
            break
        got.extend(chunk)
t = threading.Thread(target=reader)
t.start()
for i in range(COUNT):
    s.send(bytes([65 + i % 26]))
    time.sleep(PACE)
t.join(15)
assert bytes(got) == bytes(65 + i % 26 for i in range(COUNT)), len(got)
s.close()
"""


def first_seq(tmp: Path) -> int:
    """The sequence number of our first data byte (our SYN-ACK's ISS + 1)."""
    [synack] = [p for p in ours(segments(tmp / "stack.pcap")) if p[TCP].flags == "SA"]
    return int(synack[TCP].seq) + 1


def echo_data_segments(netns: Netns, tmp: Path, features: str) -> int:
    """200 one-byte writes (TCP_NODELAY, 0.2 ms apart) to the echo service over a path with 5 ms RTT (the
    stack holds what it sends for 5 ms); return the number of data segments the echo sent back."""
    tmp.mkdir()
    proc = run_stack(netns, tmp, write_config(tmp, features, delay_out=0.005), "echo:7")
    kernel(netns, ONE_BYTE_WRITES, STACK=STACK_ADDR, COUNT=200, PACE=0.0002)
    stop_stack(proc, tmp)
    # First transmissions only: a Linux peer may delay its last ACK up to 200 ms, past our RTO.
    first, top = 0, None
    for p in ours(segments(tmp / "stack.pcap")):
        n = payload_len(p)
        if not n:
            continue
        if top is None:
            top = p[TCP].seq
        end = p[TCP].seq + n
        if end > top:
            first, top = first + 1, end
    assert top is not None and top - first_seq(tmp) == 200
    return first


def test_nagle_coalesces_small_writes_of_the_echo(netns: Netns, tmp_path: Path) -> None:
    """RFC 896, RFC 9293 §3.7.4 SHLD-7/MUST-17 (checklist W2): the echo service answering 200 one-byte writes
    sends markedly fewer segments with Nagle (on by default) than with ``nagle = false``."""
    with_nagle = echo_data_segments(netns, tmp_path / "on", "")
    without = echo_data_segments(netns, tmp_path / "off", "nagle = false")
    print(f"\necho data segments: {with_nagle} with Nagle, {without} without")
    assert without >= 100, without
    assert with_nagle <= without / 3, (with_nagle, without)


# ====================================================================== the log names the pcap frame


def test_decisions_name_the_pcap_frame_they_were_made_on(netns: Netns, tmp_path: Path) -> None:
    """Issue 5: at debug level each ``tcp.decision`` carries ``pcap_frame``, the capture's frame number
    (Wireshark's frame.number) of the segment being handled: every "ACK delayed" decision of delayed_ack
    points at a data segment from the kernel on that very connection."""
    args = ["--config", str(write_config(tmp_path)), "--pcap", str(tmp_path / "stack.pcap"), "--serve", "discard:9"]
    proc = netns.tcpstack("--log-format", "json", "--log-level", "debug", *args, tmp=tmp_path)
    kernel(netns, UPLOAD, STACK=STACK_ADDR, COUNT=40, PACE=0.001)
    events = stop_stack(proc, tmp_path)
    frames = list(rdpcap(str(tmp_path / "stack.pcap")))
    delayed = [e for e in events if e.get("event") == "tcp.decision" and e.get("decision") == "ACK delayed"]
    assert len(delayed) >= 10, len(delayed)
    for e in delayed:
        n = e["pcap_frame"]
        assert 1 <= n <= len(frames), (n, len(frames))
        pkt = frames[n - 1]
        remote_port = int(e["conn"].rpartition(":")[2])  # "10.0.0.2:9>10.0.0.1:PORT"
        assert pkt[IP].src == KERNEL_ADDR and pkt[TCP].sport == remote_port and pkt[TCP].dport == 9, e
        assert payload_len(pkt) == 1448, (e, pkt.summary())
    # Every event of a run with a capture names a frame, the lifecycle ones too.
    assert all("pcap_frame" in e for e in events if e.get("event") in ("tcp.closed", "stack.down"))
