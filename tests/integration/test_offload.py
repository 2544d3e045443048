"""TUN offload (``--offload``: IFF_VNET_HDR + TUNSETOFFLOAD) against the Linux kernel: the kernel hands over
TCP super-segments with partial checksums; everything still arrives intact in both directions, and ICMP
(plain frames behind a zero header) keeps working."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path

from scapy.utils import RawPcapReader

from framework.services import pattern_bytes
from tests.integration.netns import STACK_ADDR, Netns

SIZE = 20_000_000


def _curl(netns: Netns, *args: str, data: bytes | None = None) -> bytes:
    r = subprocess.run(
        ["ip", "netns", "exec", netns.name, "curl", "-sS", "--max-time", "60", *args],
        input=data,
        capture_output=True,
        timeout=90,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_offload_moves_super_segments_intact_both_ways(netns: Netns, tmp_path: Path) -> None:
    """20 MB up (curl POST, SHA-256 by our http service) and 20 MB down with --offload; a 3000-byte ping; the
    kernel's super-segments show in the counters and in the pcap (with their real length); no checksum drop."""
    pcap = tmp_path / "stack.pcap"
    args = ["--offload", "--serve", "http", "--pcap", str(pcap), "--snaplen", "128", "--log-format", "json"]
    proc = netns.tcpstack(*args, tmp=tmp_path)
    try:
        ping = netns.exec(["ping", "-n", "-c", "2", "-i", "0.2", "-s", "3000", "-W", "2", STACK_ADDR], check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr  # fragmented echo, reassembled, answered
        body = os.urandom(SIZE)
        path = tmp_path / "up.bin"
        path.write_bytes(body)
        digest = _curl(netns, "--data-binary", f"@{path}", f"http://{STACK_ADDR}/upload").decode().strip()
        assert digest == hashlib.sha256(body).hexdigest()
        got = _curl(netns, f"http://{STACK_ADDR}/bytes/{SIZE}")
        assert hashlib.sha256(got).digest() == hashlib.sha256(pattern_bytes(SIZE)).digest()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    events = [json.loads(line) for line in (tmp_path / "stack.err").read_text().splitlines()]
    down = events[-1]
    assert down["event"] == "stack.down"
    assert down["events"].get("link.gso_frames_in", 0) > 0, down  # the kernel did use segmentation offload
    assert not [k for k in down["drops"] if "checksum" in k], down["drops"]
    reader = RawPcapReader(str(pcap))
    inbound_big = sum(1 for _, meta in reader if meta.wirelen > 1500)
    reader.close()
    assert inbound_big > 0  # super-segments, recorded with their real length
