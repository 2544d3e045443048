"""Hardening against the Linux kernel over TUN: SYN cookies (RFC 4987 §3.6) negotiate what the
kernel's SYN offered and carry data both ways; a RST in TIME-WAIT is ignored (RFC 1337 §3)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.netns import KERNEL_ADDR, STACK_ADDR, Netns
from tests.integration.tcputil import kpeer, start_stack, stop_stack, stream_sha256, tcp_segments

RST = 0x04

CONFIG = (
    f'[[layers]]\ntype = "tun"\ndevice = "tun0"\n\n[[layers]]\ntype = "ipv4"\naddress = "{STACK_ADDR}/24"\n\n'
    '[[layers]]\ntype = "tcp"\n'
)


def _config(tmp: Path, extra: str) -> Path:
    path = tmp / "stack.toml"
    path.write_text(CONFIG + extra)
    return path


def _cli(*args: str) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "tcpstack.cli", *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def test_syn_cookie_handshake_with_linux_keeps_its_options(netns: Netns, tmp_path: Path) -> None:
    """Every SYN answered with a cookie (``syncookies = "always"``): the kernel's window scale, SACK-permitted
    and timestamps come back from the ACK's TSecr; 3 MB echo round trip intact."""
    control = tmp_path / "ctl.sock"
    config = _config(tmp_path, 'syncookies = "always"\n')
    proc = start_stack(netns, tmp_path, "--config", str(config), "--serve", "echo", "--control", str(control))
    try:
        n = 3_000_000
        r = kpeer(netns, "client", "--port", "7", "--send", str(n), "--seed", "5")
        assert "error" not in r and r["recv_error"] is None and (r["sent"], r["recv"]) == (n, n), r
        assert r["recv_sha"] == stream_sha256(n, 5)
        stats = _cli("stats", "--control", str(control), "--json")["events"]
        assert stats["tcp.syncookies_sent"] >= 1 and stats["tcp.syncookies_accepted"] == 1
        assert stats.get("tcp.syncookies_rejected", 0) == 0
    finally:
        events = stop_stack(proc, tmp_path, closed=1)
    (closed,) = [e for e in events if e["event"] == "tcp.closed"]
    assert {"window_scaling", "sack", "timestamps"} <= set(closed["features"])
    assert (closed["bytes_in"], closed["bytes_out"]) == (3_000_000, 3_000_000)
    assert not any(e["event"] == "tcp.syn_flood" for e in events)  # "always" is no flood: no warning


RAW_RST = """
import socket, struct, sys
src, dst = socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2])
sport, dport, seq = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x04, 0, 0, 0)
pseudo = src + dst + struct.pack("!BBH", 0, 6, len(hdr))
s = sum(struct.unpack("!%dH" % ((len(pseudo) + len(hdr)) // 2), pseudo + hdr))
while s >> 16:
    s = (s & 0xFFFF) + (s >> 16)
hdr = hdr[:16] + struct.pack("!H", ~s & 0xFFFF) + hdr[18:]
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
r.sendto(hdr, (sys.argv[2], 0))
"""


def _time_wait_rows(control: Path) -> list[dict[str, Any]]:
    r = subprocess.run(
        [sys.executable, "-m", "tcpstack.cli", "ss", "--control", str(control), "--json", "state", "time-wait"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]  # JSON lines: one connection per line


@pytest.mark.parametrize("rfc1337", [True, False], ids=["rfc1337", "rfc9293"])
def test_rst_in_time_wait(netns: Netns, tmp_path: Path, rfc1337: bool) -> None:
    """The daytime service closes first, so the stack holds TIME-WAIT; a RST at RCV.NXT (sent with a raw socket
    from the kernel side) is ignored by default (RFC 1337 §3) and ends TIME-WAIT with ``rfc1337 = false``
    (RFC 9293 §3.10.7.4). Either way the stack never answers the RST."""
    pcap = tmp_path / "tw.pcap"  # tcpdump -U on the kernel's side of the TUN: every packet is written at once
    control = tmp_path / "ctl.sock"
    config = _config(tmp_path, f"rfc1337 = {'true' if rfc1337 else 'false'}\n")
    dump = netns.spawn(
        ["tcpdump", "-U", "-n", "-i", "tun0", "-w", str(pcap), "tcp"],
        stdout=tmp_path / "tcpdump.out",
        stderr=tmp_path / "tcpdump.err",
    )
    deadline = time.monotonic() + 15
    while "listening on" not in (tmp_path / "tcpdump.err").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc = start_stack(netns, tmp_path, "--config", str(config), "--serve", "daytime", "--control", str(control))
    try:
        r = kpeer(netns, "client", "--port", "13", "--no-shutdown")
        assert "error" not in r, r
        deadline = time.monotonic() + 15
        while not (rows := _time_wait_rows(control)) and time.monotonic() < deadline:
            time.sleep(0.05)
        (row,) = rows
        port = int(row["remote"].rsplit(":", 1)[1])
        # RCV.NXT: the end of what the kernel sent (its FIN counts one).
        deadline = time.monotonic() + 15
        while not (
            kernel := [s for s in tcp_segments(pcap) if s.src == KERNEL_ADDR and s.sport == port and s.flags & 1]
        ):
            assert time.monotonic() < deadline, "tcpdump never wrote the kernel's FIN"
            time.sleep(0.05)
        kernel = [s for s in tcp_segments(pcap) if s.src == KERNEL_ADDR and s.sport == port]
        last = max(kernel, key=lambda s: s.index)
        rcv_nxt = (last.seq + last.length + (1 if last.flags & 0x01 else 0)) & 0xFFFFFFFF
        frames_in = _cli("stats", "--control", str(control), "--json")["events"]["frames_in"]
        netns.exec([sys.executable, "-c", RAW_RST, KERNEL_ADDR, STACK_ADDR, str(port), "13", str(rcv_nxt)])
        deadline = time.monotonic() + 15  # until the stack has read the RST (its frame counter says so)
        while _cli("stats", "--control", str(control), "--json")["events"]["frames_in"] == frames_in:
            assert time.monotonic() < deadline, "the stack never read the RST"
            time.sleep(0.05)
        still = [x for x in _time_wait_rows(control) if x["remote"] == row["remote"]]
        assert bool(still) is rfc1337
        deadline = time.monotonic() + 15  # until tcpdump has written the RST too
        while not (rsts := [s for s in tcp_segments(pcap) if s.sport == port and s.flags & RST]):
            assert time.monotonic() < deadline, "tcpdump never wrote the RST"
            time.sleep(0.05)
        answers = [s for s in tcp_segments(pcap) if s.dport == port and s.index > rsts[0].index]
        assert answers == [], "a RST is never answered"
    finally:
        dump.terminate()
        stop_stack(proc, tmp_path, closed=1)
