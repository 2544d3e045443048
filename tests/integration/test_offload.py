"""TUN offload (``--offload``: IFF_VNET_HDR + TUNSETOFFLOAD) against the Linux kernel: both sides hand over
TCP super-segments with partial checksums (the kernel's GRO/TSO to us, our TSO to it); everything arrives intact
in both directions, and ICMP (plain frames behind a zero header) keeps working."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from scapy.utils import RawPcapReader

from tcpstack.services import pattern_bytes
from tests.integration.netns import STACK_ADDR, Netns
from tests.integration.tcputil import (
    closed_events,
    connect_cmd,
    kpeer,
    kserver_result,
    ns_run,
    start_kserver,
    start_stack,
    stream_sha256,
    write_stream,
)
from tests.integration.tcputil import stop_stack as tcputil_stop

SIZE = 20_000_000


def _curl(netns: Netns, *args: str) -> bytes:
    r = subprocess.run(
        ["ip", "netns", "exec", netns.name, "curl", "-sS", "--max-time", "60", *args],
        capture_output=True,
        timeout=90,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def _download_ok(netns: Netns, size: int) -> None:
    """GET /bytes/SIZE from our http service; the body is the service's pattern."""
    got = _curl(netns, f"http://{STACK_ADDR}/bytes/{size}")
    assert hashlib.sha256(got).digest() == hashlib.sha256(pattern_bytes(size)).digest()


def _stop(proc: subprocess.Popen[bytes], tmp: Path, label: str = "stack") -> list[dict[str, Any]]:
    """SIGTERM the stack, require exit status 0, return its JSON log's events."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    return [json.loads(line) for line in (tmp / f"{label}.err").read_text().splitlines()]


def _config(tmp: Path, fault: str, tcp: str = "") -> Path:
    """A configuration: tun with offload, a fault layer with the *fault* lines, ipv4, tcp (+ *tcp* lines)."""
    path = tmp / "stack.toml"
    path.write_text(
        f'[[layers]]\ntype = "tun"\ndevice = "tun0"\noffload = true\n\n[[layers]]\ntype = "fault"\n{fault}\n'
        f'[[layers]]\ntype = "ipv4"\naddress = "{STACK_ADDR}/24"\n\n[[layers]]\ntype = "tcp"\n{tcp}'
    )
    return path


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
        _download_ok(netns, SIZE)
    finally:
        events = _stop(proc, tmp_path)
    up = next(e for e in events if e.get("event") == "stack.up")
    assert up["offload"] is True
    down = events[-1]
    assert down["event"] == "stack.down"
    assert down["events"].get("link.gso_frames_in", 0) > 0, down  # the kernel did use segmentation offload
    assert not [k for k in down["drops"] if "checksum" in k], down["drops"]
    reader = RawPcapReader(str(pcap))
    big = [bytes(data[12:16]) for data, meta in reader if meta.wirelen > 1500]
    reader.close()
    ours = socket.inet_aton(STACK_ADDR)
    assert any(src != ours for src in big)  # the kernel's super-segments, recorded with their real length
    assert any(src == ours for src in big)  # ours (TSO), which the kernel cut and delivered intact


def test_lost_super_segments_are_recovered(netns: Netns, tmp_path: Path) -> None:
    """5% of our outbound datagrams dropped by the fault layer (above the link, so a drop loses a whole
    super-segment: a burst of up to 44 segments): a 5 MB download still arrives intact (SACK + RACK-TLP)."""
    config = _config(tmp_path, 'seed = 3\ndrop = 0.05\ndirection = "out"\n', "features = { rack_tlp = true }\n")
    proc = start_stack(netns, tmp_path, "--config", str(config), "--serve", "http")
    try:
        _download_ok(netns, 5_000_000)
    finally:
        # Wait for tcp.closed first: a final FIN the fault layer dropped is still being repaired when
        # curl exits, and SIGTERM then would end the connection as "shutdown".
        events = tcputil_stop(proc, tmp_path, closed=1)
    [closed] = [e for e in events if e.get("event") == "tcp.closed"]
    assert closed["retransmits"] > 0 and closed["reason"] == "normal"
    assert events[-1]["drops"].get("fault.injected", 0) > 0


OFFLOAD_SIZES = [0, 1, 1460, 1461, 10_000_000]
OFFLOAD_IDS = ["0B", "1B", "1460B", "1461B", "10MB"]


@pytest.mark.parametrize("size", OFFLOAD_SIZES, ids=OFFLOAD_IDS)
def test_offload_echo_round_trip(netns: Netns, tmp_path: Path, size: int) -> None:
    """The echo round trip of test_tcp_server.py, with --offload: edge sizes and 10 MB come back intact; the
    connection ends normally with the byte counts right."""
    proc = start_stack(netns, tmp_path, "--offload", "--serve", "echo")
    r = kpeer(netns, "client", "--port", "7", "--send", str(size), "--seed", "17")
    assert "error" not in r and r["recv_error"] is None and "send_error" not in r, r
    assert r["sent"] == size and r["recv"] == size
    assert r["recv_sha"] == r["sent_sha"] == stream_sha256(size, 17)
    events = tcputil_stop(proc, tmp_path, closed=1)
    (closed,) = closed_events(events)
    assert (closed["reason"], closed["bytes_in"], closed["bytes_out"]) == ("normal", size, size)


@pytest.mark.parametrize("size", [0, 1461, 10_000_000], ids=["0B", "1461B", "10MB"])
def test_offload_connect_upload_and_download(netns: Netns, tmp_path: Path, size: int) -> None:
    """`tcpstack connect --offload` as a client of kernel servers: an upload (stdin, then FIN) and a download
    arrive with the right SHA-256."""
    server = start_kserver(netns, tmp_path, "--port", "5001", "--mode", "sha")
    data = write_stream(tmp_path / "in", size, 41)
    try:
        r = ns_run(netns, connect_cmd(5001, "--offload", "--log-format", "json"), stdin=data, timeout=150)
    finally:
        data.unlink()
    assert r.returncode == 0, r.stderr
    expected = stream_sha256(size, 41)
    assert r.stdout == f"{size} {expected}\n".encode()
    k = kserver_result(server, tmp_path)
    assert (k["recv"], k["recv_sha"], k["eof"]) == (size, expected, True)
    server = start_kserver(
        netns, tmp_path, "--port", "5002", "--mode", "send", "--send", str(size), "--seed", "42", label="ksend"
    )
    r = ns_run(netns, connect_cmd(5002, "--offload", "--log-format", "json"), stdin=None, timeout=150)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(r.stdout).hexdigest() == stream_sha256(size, 42)
    kserver_result(server, tmp_path, label="ksend")


def test_offload_is_switched_off_again_on_a_persistent_device(netns: Netns, tmp_path: Path) -> None:
    """The offload setting belongs to the (persistent) device: after an --offload run, a plain run on the
    same device must not inherit it (else every kernel frame would carry a partial checksum and fail)."""
    first = start_stack(netns, tmp_path, "--offload", "--serve", "http", label="first")
    _curl(netns, f"http://{STACK_ADDR}/bytes/100000")
    _stop(first, tmp_path, "first")
    second = start_stack(netns, tmp_path, "--serve", "http", label="second")
    try:
        _download_ok(netns, 2_000_000)
    finally:
        down = _stop(second, tmp_path, "second")[-1]
    assert not [k for k in down["drops"] if "checksum" in k], down["drops"]


def test_offload_through_duplicating_and_delaying_fault_layers(netns: Netns, tmp_path: Path) -> None:
    """Fault middleware that copies or holds packets keeps their offload marks: with 10% duplicated and 5%
    delayed frames both ways, a 5 MB download and upload arrive intact, with no checksum or too-big drop."""
    config = _config(tmp_path, "seed = 5\nduplicate = 0.1\ndelay = 0.05\ndelay_time = 0.002\n")
    proc = start_stack(netns, tmp_path, "--config", str(config), "--serve", "http")
    try:
        _download_ok(netns, 5_000_000)
        body = os.urandom(5_000_000)
        (tmp_path / "up.bin").write_bytes(body)
        digest = _curl(netns, "--data-binary", f"@{tmp_path / 'up.bin'}", f"http://{STACK_ADDR}/upload")
    finally:
        down = _stop(proc, tmp_path)[-1]
    assert digest.decode().strip() == hashlib.sha256(body).hexdigest()
    assert down["events"].get("fault.duplicated", 0) > 0 and down["events"].get("fault.delayed", 0) > 0
    assert not [k for k in down["drops"] if "checksum" in k or "too_big" in k], down["drops"]
