"""Decisions inside the capture, against the Linux kernel over a TUN device in a namespace
(docs/observability.md, "Decisions in the capture").

``tcpstack up --pcap stack.pcapng`` with the default features and a fault layer that drops 5% of
the datagrams we send (seed 7), serving ``discard:9`` and ``http:80``; a kernel client uploads
paced full-sized segments (our ACKs are delayed) and downloads 2 MB (our losses are SACKed and
marked lost). Two readers that are not ours read the comments: tshark (when installed) and scapy's
``PcapNgReader``; they must agree (that part is skipped, with the reason, where tshark is not
installed), and each comment must sit on a frame its decision belongs to, as
the frame's own content shows: "ACK delayed" on a data segment of the kernel's upload, "marked lost"
on the kernel's ACK whose acknowledgment number the decision names (SACK blocks on it, or a cumulative
ACK of a retransmission; from RACK's reorder timer, on the retransmission of ours it caused).
The namespace and the stack are removed even on failure.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.utils import PcapNgReader

from tcpstack.services import pattern_bytes
from tests.integration.netns import KERNEL_ADDR, STACK_ADDR, Netns

pytestmark = pytest.mark.timeout(120)

DOWNLOAD = 2_000_000

CONFIG = f"""[[layers]]
type = "tun"
device = "tun0"

[[layers]]
type = "fault"
drop = 0.05
direction = "out"
seed = 7

[[layers]]
type = "ipv4"
address = "{STACK_ADDR}/24"

[[layers]]
type = "tcp"
"""

KERNEL = """
import socket, time
s = socket.create_connection((STACK, 9), timeout=20)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for _ in range(40):
    s.sendall(b"u" * 1448)
    time.sleep(0.002)  # one full-sized segment at a time: our ACK waits for the second or the timer
s.shutdown(socket.SHUT_WR)
assert s.recv(1) == b""
s.close()
s = socket.create_connection((STACK, 80), timeout=30)
s.sendall(b"GET /bytes/%d HTTP/1.1\\r\\nHost: stack\\r\\nConnection: close\\r\\n\\r\\n" % SIZE)
got = bytearray()
while chunk := s.recv(1 << 16):
    got += chunk
s.close()
head, _, body = bytes(got).partition(b"\\r\\n\\r\\n")
assert head.startswith(b"HTTP/1.1 200"), head
open(OUT, "wb").write(body)
"""


def payload_len(ip: Any) -> int:
    """Bytes of TCP payload, from the headers' lengths (the frame itself may be cut to the snaplen)."""
    return int(ip.len) - int(ip.ihl) * 4 - int(ip[TCP].dataofs) * 4


def sack_blocks(ip: Any) -> list[Any]:
    return [v for k, v in ip[TCP].options if k == "SAck" and v]


def read_scapy(path: Path) -> dict[int, tuple[Any, list[str]]]:
    """Frame number -> (IP packet, comments), every frame, as scapy's pcapng reader gives them."""
    out = {}
    with PcapNgReader(str(path)) as reader:
        for n, p in enumerate(reader, 1):
            out[n] = (IP(bytes(p)), [c.decode() for c in (p.comments or [])])
    return out


def read_tshark(tshark: str, path: Path) -> dict[int, list[str]]:
    """Frame number -> comments, for the frames that have any, as tshark shows them."""
    r = subprocess.run(
        [tshark, "-r", str(path), "-T", "json", "-e", "frame.number", "-e", "frame.comment"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out = {}
    for pkt in json.loads(r.stdout):
        layers = pkt["_source"]["layers"]
        if "frame.comment" in layers:
            out[int(layers["frame.number"][0])] = list(layers["frame.comment"])
    return out


@dataclass
class Run:
    capture: Path
    down: dict[str, Any]  # the stack.down event: every counter
    frames: dict[int, tuple[Any, list[str]]]  # scapy's reading: frame number -> (IP packet, comments)


@pytest.fixture(scope="module")
def run(netns_capability: None, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One run of the scenario for the tests of this module (a namespace of its own, removed after)."""
    tmp = tmp_path_factory.mktemp("pcapng")
    config = tmp / "stack.toml"
    config.write_text(CONFIG)
    capture = tmp / "stack.pcapng"
    args = ["--config", str(config), "--pcap", str(capture), "--serve", "discard:9", "--serve", "http:80"]
    netns = Netns()
    try:
        proc = netns.tcpstack("--log-format", "json", *args, tmp=tmp)
        try:
            body = tmp / "body"
            r = netns.exec(
                [sys.executable, "-c", f"STACK = {STACK_ADDR!r}\nSIZE = {DOWNLOAD}\nOUT = {str(body)!r}\n" + KERNEL],
                check=False,
                timeout=90,
            )
            assert r.returncode == 0, r.stdout + r.stderr
            assert body.read_bytes() == pattern_bytes(DOWNLOAD)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=20)
    finally:
        netns.close()
    err = (tmp / "stack.err").read_text()
    assert code == 0 and "Traceback" not in err, err[-3000:]
    down = json.loads(err.splitlines()[-1])
    assert down["event"] == "stack.down"
    return Run(capture, down, read_scapy(capture))


def test_tshark_shows_the_comments_scapy_reads(run: Run) -> None:
    """tshark, Wireshark's reader, shows the same comments on the same frames as scapy's pcapng reader."""
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed (scripts/setup installs it as root): scapy's reading is checked alone")
    commented = {n: cs for n, (_, cs) in run.frames.items() if cs}
    assert commented
    assert read_tshark(tshark, run.capture) == commented


def test_decision_comments_sit_on_the_frames_they_belong_to(run: Run) -> None:
    """Every comment is on a frame of one of the two connections, and each kind of decision on a frame whose
    content shows it is the one it was taken on (or, for a timer's, the one it caused)."""
    down, frames = run.down, run.frames
    assert down["drops"].get("fault.injected", 0) >= 5, down["drops"]  # the loss was real
    assert down["events"]["pcap.frames"] == len(frames)
    commented = {n: cs for n, (_, cs) in frames.items() if cs}

    highest_sent: dict[int, int] = {}  # our highest sequence number sent so far, per kernel port
    kinds: dict[str, int] = {}
    for n, (ip, comments) in sorted(frames.items()):
        tcp = ip[TCP]
        ours = ip.src == STACK_ADDR
        port = tcp.dport if ours else tcp.sport
        retransmission = ours and payload_len(ip) > 0 and port in highest_sent and tcp.seq < highest_sent[port]
        if ours and payload_len(ip) > 0:
            highest_sent[port] = max(highest_sent.get(port, 0), tcp.seq + payload_len(ip))
        for c in comments:
            kind = c.split(",", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
            assert {ip.src, ip.dst} == {STACK_ADDR, KERNEL_ADDR}, (n, c)
            where = (n, c, ip.summary(), sack_blocks(ip))
            if kind in ("ACK delayed", "ACK now"):  # on the kernel's data (the upload, the GET request)
                assert not ours and payload_len(ip) > 0, where
                kinds[f"{kind} (upload)"] = kinds.get(f"{kind} (upload)", 0) + (tcp.dport == 9)
            elif kind == "marked lost":
                # RFC 8985 §6.2: on the kernel's ACK that delivered later-sent data (SACKed it, or acknowledged
                # a retransmission), whose acknowledgment number is the una the decision names; or, from
                # RACK's reorder timer, on the retransmission it caused.
                una = int(re.search(r", una (\d+)", c).group(1))  # type: ignore[union-attr]
                assert (not ours and tcp.dport == 80 and tcp.ack == una) or retransmission, where
                if not ours and sack_blocks(ip):
                    kinds["marked lost (on a SACK)"] = kinds.get("marked lost (on a SACK)", 0) + 1
            elif kind in ("windows scaled", "SACK on"):  # RFC 7323 §2.2, RFC 2018 §2: the kernel's SYN
                assert not ours and tcp.flags.S and not tcp.flags.A, where
            elif kind == "cwnd reduced" and "reason loss" in c:  # on the ACK that revealed the loss
                assert not ours and tcp.dport == 80, where
            elif kind == "cwnd reduced" and "reason retransmission timeout" in c:  # on what the timer resent
                assert ours, where
            elif kind == "segment held":  # Nagle (RFC 896): on the segment of ours that carried it later
                assert ours and payload_len(ip) > 0, where
            elif kind == "tail loss probe":  # RFC 8985 §7.3: the probe the timer sent (data, or our FIN)
                assert ours and (payload_len(ip) > 0 or tcp.flags.F), where
    print(f"\ncomments by decision: {kinds}")
    assert kinds.get("ACK delayed (upload)", 0) >= 1, kinds
    assert kinds.get("marked lost (on a SACK)", 0) >= 1, kinds
    assert "RFC 1122 §4.2.3.2, deadline 40 ms" in next(c for cs in commented.values() for c in cs if "ACK delayed" in c)
