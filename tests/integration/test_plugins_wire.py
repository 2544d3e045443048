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
from dataclasses import dataclass
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
    time.sleep(PACE)  # one full-sized segment at a time
s.shutdown(socket.SHUT_WR)
s.settimeout(10)
assert s.recv(1) == b""
s.close()
"""


DELACK_TIMEOUT = 0.04  # the delayed_ack feature's default timeout
FULL = 2 * (1460 - 40)  # two full-sized segments as the feature counts them (MSS - 40 bytes each)


@dataclass
class AckRun:
    acks: int  # our pure ACKs that acknowledged new data
    data: int  # the kernel's data segments
    early: list[str]  # pure ACKs of less than two full-sized segments sent sooner than the timeout


def ack_check(segs: list[Any]) -> AckRun:
    """Walk a capture of one upload in order (the stack's own: a kernel segment is recorded when the stack
    reads it, before TCP handles it; an ACK of ours after TCP sent it). RFC 1122 §4.2.3.2 and RFC 9293
    §3.8.6.3: an ACK of in-order data may wait (at most ``timeout``) unless two full-sized segments are
    unacknowledged, so with delayed ACK a pure ACK of less than two full-sized segments leaves no sooner
    than ``timeout`` after the first octet it acknowledges arrived. Timers fire late on a loaded machine,
    never early, so this holds whatever the scheduling; without delayed ACK such an ACK leaves at once."""
    syn = next(p for p in theirs(segs) if p[TCP].flags == "S")
    synack = next(p for p in ours(segs) if p[TCP].flags == "SA")
    base = int(syn[TCP].seq) + 1
    shift = options(synack).get("WScale", 0) if "WScale" in options(syn) else 0
    edge = int(synack[TCP].window)  # the right edge of the window we advertised (offset)
    arrivals: list[tuple[int, float]] = []  # (offset of the octet after the segment, arrival time)
    acked = top = 0
    acks = 0
    early: list[str] = []
    for i, p in enumerate(segs):
        if p[IP].src == KERNEL_ADDR:
            n = payload_len(p)
            off = (int(p[TCP].seq) - base) % 2**32
            if n and off + n > top:
                arrivals.append((off + n, float(p.time)))
                top = off + n
            continue
        if str(p[TCP].flags) != "A" or payload_len(p):
            continue
        a = (int(p[TCP].ack) - base) % 2**32
        if not acked < a <= top:
            continue  # a window update or duplicate, or the ACK of the kernel's FIN (never delayed)
        acks += 1
        # A window update that matters goes at once (RFC 9293 §3.8.6.2.2, as the stack decides it: the
        # kernel saw less than a segment, or the window at least doubles), as the first ACK does: it
        # opens the window from the SYN-ACK's unscaled 64 KiB.
        seen, wnd = edge - a, int(p[TCP].window) << shift
        update = wnd > seen and (seen < 1460 or wnd >= 2 * seen)
        first = next(t for end, t in arrivals if end > acked)
        if a - acked < FULL and not update and float(p.time) - first < DELACK_TIMEOUT - 0.001:
            early.append(f"frame {i + 1}: {a - acked} octets after {1000 * (float(p.time) - first):.1f} ms")
        acked, edge = a, max(edge, a + wnd)
    return AckRun(acks, sum(1 for p in theirs(segs) if payload_len(p)), early)


def upload_acks(netns: Netns, tmp: Path, features: str) -> AckRun:
    """Upload 300 full-sized segments (about 434 kB, 5 ms apart) to the discard service; check our ACKs."""
    tmp.mkdir()
    proc = run_stack(netns, tmp, write_config(tmp, features), "discard:9")
    kernel(netns, UPLOAD, STACK=STACK_ADDR, COUNT=300, PACE=0.005)
    stop_stack(proc, tmp)
    segs = segments(tmp / "stack.pcap")
    assert sum(payload_len(p) for p in theirs(segs)) >= 300 * 1448
    return ack_check(segs)


def test_delayed_ack_halves_our_acks_during_an_upload(netns: Netns, tmp_path: Path) -> None:
    """RFC 1122 §4.2.3.2, RFC 9293 SHLD-18/19 (checklist A4): during an upload from the kernel, full-sized
    segments 5 ms apart, delayed ACK holds every ACK of less than two full-sized segments for its timeout, so
    an ACK covers two segments whenever the second follows within it (fewer ACKs than segments); with
    ``delayed_ack = false`` ACKs of single segments leave at once. (A fixed ratio of ACK counts would not hold
    on a loaded machine: a late stack reads several segments at once and answers them with one ACK.)"""
    on = upload_acks(netns, tmp_path / "on", "")
    off = upload_acks(netns, tmp_path / "off", "delayed_ack = false")
    print(
        f"\npure ACKs: {on.acks} for {on.data} segments with delayed ACK ({len(on.early)} early), "
        f"{off.acks} for {off.data} without ({len(off.early)} of single segments at once)"
    )
    assert on.early == [], (len(on.early), on.early[:5])
    assert on.acks < on.data, (on.acks, on.data)
    assert off.early, (off.acks, off.data)  # the switch works: single segments are ACKed without delay


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
t.join(30)
assert bytes(got) == bytes(65 + i % 26 for i in range(COUNT)), len(got)
s.close()
"""

ECHO_WRITES, ECHO_PACE, ECHO_DELAY = 200, 0.0005, 0.02


@dataclass
class NagleRun:
    segments: int  # our data segments that carried new data (not retransmissions)
    acks: int  # the kernel's ACKs that acknowledged more of our data
    violations: list[str]  # new short segments sent while earlier data was unacknowledged
    held: int  # "segment held" decisions of the nagle plugin (the stack's debug log)


def nagle_check(segs: list[Any]) -> tuple[int, int, list[str]]:
    """Walk a capture of one connection in order (the stack's own: a kernel segment is recorded when the
    stack reads it, before TCP handles it; one of ours after TCP sent it) and check RFC 1122 §4.2.3.4 /
    RFC 9293 §3.7.4 (Nagle): a short segment with new data may be sent only when all earlier data is
    acknowledged. Return (new-data segments, ACKs that advanced over our data, violations).

    Under any scheduling, every new-data segment after the first needs an ACK that arrived since the
    previous one, so ``segments <= acks + 1``; without Nagle a new short segment follows another before
    the ACK, whenever the echo writes twice within a round trip."""
    first = int(next(p for p in ours(segs) if p[TCP].flags == "SA")[TCP].seq) + 1  # our first data byte
    top = acked = 0  # offsets from *first*: the highest octet sent so far, and acknowledged so far
    sent = acks = 0
    violations: list[str] = []
    for i, p in enumerate(segs):
        off = (int(p[TCP].seq) - first) % 2**32
        if p[IP].src == KERNEL_ADDR:
            a = (int(p[TCP].ack) - first) % 2**32
            if p[TCP].flags.A and acked < a <= top:
                acked, acks = a, acks + 1
            continue
        n = payload_len(p)
        if not n or off >= 2**31:
            continue  # no data, or the SYN-ACK (at first - 1)
        if off == top:  # new data: the RFC's rule applies (every segment of this test is short)
            sent += 1
            if acked < top:
                violations.append(f"frame {i + 1}: {n} octets at {off} while {top - acked} unacknowledged")
        top = max(top, off + n)
    return sent, acks, violations


def echo_nagle_run(netns: Netns, tmp: Path, features: str) -> NagleRun:
    """ECHO_WRITES one-byte writes (TCP_NODELAY, ECHO_PACE apart) to the echo service over a path whose
    round trip is at least ECHO_DELAY (the stack holds what it sends that long); check the capture."""
    tmp.mkdir()
    config = write_config(tmp, features, delay_out=ECHO_DELAY)
    args = ["--config", str(config), "--pcap", str(tmp / "stack.pcap"), "--serve", "echo:7"]
    proc = netns.tcpstack("--log-format", "json", "--log-level", "debug", *args, tmp=tmp)
    kernel(netns, ONE_BYTE_WRITES, STACK=STACK_ADDR, COUNT=ECHO_WRITES, PACE=ECHO_PACE)
    events = stop_stack(proc, tmp)
    segs = segments(tmp / "stack.pcap")
    assert sum(payload_len(p) for p in ours(segs)) >= ECHO_WRITES  # all of it echoed (and maybe resent)
    sent, acks, violations = nagle_check(segs)
    held = sum(e.get("event") == "tcp.decision" and e.get("decision") == "segment held" for e in events)
    return NagleRun(sent, acks, violations, held)


def test_nagle_coalesces_small_writes_of_the_echo(netns: Netns, tmp_path: Path) -> None:
    """RFC 896, RFC 1122 §4.2.3.4, RFC 9293 §3.7.4 SHLD-7/MUST-17 (checklist W2): the echo service answering
    one-byte writes never sends a short segment while earlier data is unacknowledged (so it sends at most one
    segment more than the kernel's ACKs), which holds under any scheduling; with ``nagle = false`` it does.

    The 20 ms round trip and 0.5 ms pacing make the echo write many times per round trip: Nagle has
    something to hold (its decisions say so) and the run without it has short segments in flight together,
    unless the stack got no CPU for a round trip between every two of the 200 bytes."""
    on = echo_nagle_run(netns, tmp_path / "on", "")
    off = echo_nagle_run(netns, tmp_path / "off", "nagle = false")
    print(
        f"\necho: with Nagle {on.segments} segments, {on.acks} ACKs, {len(on.violations)} violations, {on.held} held;"
        f" without {off.segments} segments, {off.acks} ACKs, {len(off.violations)} violations"
    )
    assert on.violations == [], (len(on.violations), on.violations[:5])
    assert on.segments <= on.acks + 1, (on.segments, on.acks)
    assert on.held >= 1, on.held  # the scenario tested something: a short segment waited for an ACK
    # MUST-17: off on this connection, as TCP_NODELAY does: short segments in flight together.
    assert off.held == 0 and off.violations, (off.held, off.segments, off.acks)


# ====================================================================== the log names the pcap frame


def test_decisions_name_the_pcap_frame_they_were_made_on(netns: Netns, tmp_path: Path) -> None:
    """Issue 5: at debug level each ``tcp.decision`` carries ``pcap_frame``, the capture's frame number
    (Wireshark's frame.number) of the segment being handled: every decision of delayed_ack ("ACK delayed" or
    "ACK now", one per data segment whatever the batches) points at a data segment from the kernel on that
    very connection."""
    args = ["--config", str(write_config(tmp_path)), "--pcap", str(tmp_path / "stack.pcap"), "--serve", "discard:9"]
    proc = netns.tcpstack("--log-format", "json", "--log-level", "debug", *args, tmp=tmp_path)
    kernel(netns, UPLOAD, STACK=STACK_ADDR, COUNT=40, PACE=0.001)
    events = stop_stack(proc, tmp_path)
    frames = list(rdpcap(str(tmp_path / "stack.pcap")))
    # Not only "ACK delayed": a stack that reads several segments at once (a loaded machine) delays the
    # first of each batch and decides "ACK now" on the next, so the count of one kind depends on timing.
    decided = [e for e in events if e.get("event") == "tcp.decision" and e.get("plugin") == "delayed_ack"]
    assert len(decided) >= 40 and any(e["decision"] == "ACK delayed" for e in decided), len(decided)
    for e in decided:
        n = e["pcap_frame"]
        assert 1 <= n <= len(frames), (n, len(frames))
        pkt = frames[n - 1]
        remote_port = int(e["conn"].rpartition(":")[2])  # "10.0.0.2:9>10.0.0.1:PORT"
        assert pkt[IP].src == KERNEL_ADDR and pkt[TCP].sport == remote_port and pkt[TCP].dport == 9, e
        assert payload_len(pkt) == 1448, (e, pkt.summary())
    # Every event of a run with a capture names a frame, the lifecycle ones too.
    assert all("pcap_frame" in e for e in events if e.get("event") in ("tcp.closed", "stack.down"))
