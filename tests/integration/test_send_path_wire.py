"""The send path (layers/tcp/txframe.py: frames built whole, payload views of the send buffer, one
writev) against the Linux kernel over TUN: a bulk download from our http service arrives intact
(SHA-256), plain (every checksum computed by us and checked by the kernel) and with offload
(super-segments from views of the send buffer); with a pcap layer below TCP the pipeline path
runs instead and the capture holds every frame the stack wrote."""

from __future__ import annotations

import hashlib
import socket
import subprocess
from pathlib import Path

import pytest
from scapy.utils import RawPcapReader

from tcpstack.services import pattern_bytes
from tests.integration.netns import STACK_ADDR, Netns
from tests.integration.tcputil import start_stack, stop_stack

SIZE = 30_000_000


def _download(netns: Netns, size: int) -> bytes:
    r = subprocess.run(
        ["ip", "netns", "exec", netns.name, "curl", "-sS", "--max-time", "90", f"http://{STACK_ADDR}/bytes/{size}"],
        capture_output=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("offload", [False, True], ids=["plain", "offload"])
@pytest.mark.parametrize("pcap", [False, True], ids=["send-path", "pcap"])
def test_bulk_download_arrives_intact(netns: Netns, tmp_path: Path, offload: bool, pcap: bool) -> None:
    capture = tmp_path / "stack.pcap"
    args = ["--serve", "http"]
    if offload:
        args.append("--offload")
    if pcap:
        args += ["--pcap", str(capture), "--snaplen", "96"]
    proc = start_stack(netns, tmp_path, *args)
    try:
        got = _download(netns, SIZE)
    finally:
        events = stop_stack(proc, tmp_path, closed=1)
    assert len(got) == SIZE
    assert hashlib.sha256(got).digest() == hashlib.sha256(pattern_bytes(SIZE)).digest()
    down = events[-1]
    assert down["event"] == "stack.down"
    assert not down["drops"].get("link.tx_failed"), down["drops"]
    if pcap:
        ours = socket.inet_aton(STACK_ADDR)
        reader = RawPcapReader(str(capture))
        sent = sum(1 for data, _meta in reader if bytes(data[12:16]) == ours)
        reader.close()
        assert sent == down["events"]["frames_out"]  # every frame written is in the capture
