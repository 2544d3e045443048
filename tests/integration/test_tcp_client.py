"""``tcpstack connect 10.0.0.1 PORT`` (our active OPEN) against Linux kernel servers over TUN.

The kernel servers are ``kpeer.py server`` listening on 10.0.0.1 inside the test's namespace;
``tcpstack connect`` runs its own stack on the namespace's tun0 as 10.0.0.2. Every test runs in
the default mode: every IPv4 and TCP checksum is computed and verified in Python (no offload).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.netns import Netns
from tests.integration.tcputil import (
    ACK,
    KERNEL_ADDR,
    MB,
    SIZE_IDS,
    SIZES,
    STACK_ADDR,
    check_log,
    connect_cmd,
    file_sha256,
    ip_packets,
    kserver_result,
    ns_run,
    start_kserver,
    stream_sha256,
    tcp_segments,
    write_stream,
)

PORT = 5001


def _clean(stderr: str) -> None:
    """The connect program's log (JSON lines) has no traceback and no error."""
    check_log(stderr)


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_upload_to_a_kernel_server(netns: Netns, tmp_path: Path, size: int) -> None:
    """RFC 9293 §3.9/§3.10.4: stdin goes to the kernel, then our FIN; the kernel sees EOF, answers, closes; exit 0."""
    server = start_kserver(netns, tmp_path, "--port", str(PORT), "--mode", "sha")
    data = write_stream(tmp_path / "in", size, 31)
    try:
        r = ns_run(netns, connect_cmd(PORT, "--log-format", "json"), stdin=data, timeout=150)
    finally:
        data.unlink()
    assert r.returncode == 0, r.stderr
    _clean(r.stderr)
    expected = stream_sha256(size, 31)
    assert r.stdout == f"{size} {expected}\n".encode()
    k = kserver_result(server, tmp_path)
    assert (k["recv"], k["recv_sha"], k["eof"]) == (size, expected, True)
    if size >= 100 * MB:
        print(f"\ntcpstack connect upload {size} bytes in {r.elapsed:.2f} s: {size / r.elapsed / 1e6:.1f} MB/s")


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_download_from_a_kernel_server(netns: Netns, tmp_path: Path, size: int) -> None:
    """RFC 9293 §3.9/§3.10.4: the kernel's N bytes and its FIN reach stdout intact; our FIN went first (empty stdin)."""
    server = start_kserver(netns, tmp_path, "--port", str(PORT), "--mode", "send", "--send", str(size), "--seed", "32")
    out = tmp_path / "out"
    try:
        r = ns_run(netns, connect_cmd(PORT, "--log-format", "json"), stdout=out, timeout=150)
        assert r.returncode == 0, r.stderr
        _clean(r.stderr)
        assert out.stat().st_size == size
        assert file_sha256(out) == stream_sha256(size, 32)
    finally:
        out.unlink(missing_ok=True)
    k = kserver_result(server, tmp_path)
    assert (k["recv"], k["eof"], k["sent"]) == (0, True, size)
    if size >= 100 * MB:
        print(f"\ntcpstack connect download {size} bytes in {r.elapsed:.2f} s: {size / r.elapsed / 1e6:.1f} MB/s")


@pytest.mark.parametrize("size", [1461, 10 * MB], ids=["1461B", "10MB"])
def test_echo_through_a_kernel_server(netns: Netns, tmp_path: Path, size: int) -> None:
    """RFC 9293 §3.9: data flows both ways at once through one connection and comes back byte for byte."""
    server = start_kserver(netns, tmp_path, "--port", str(PORT), "--mode", "echo")
    data = write_stream(tmp_path / "in", size, 33)
    out = tmp_path / "out"
    r = ns_run(netns, connect_cmd(PORT, "--log-format", "json"), stdin=data, stdout=out, timeout=120)
    assert r.returncode == 0, r.stderr
    _clean(r.stderr)
    assert file_sha256(out) == file_sha256(data) == stream_sha256(size, 33)
    k = kserver_result(server, tmp_path)
    assert (k["recv"], k["eof"]) == (size, True)


def test_stdin_eof_sends_fin_and_the_kernel_replies_after_it(netns: Netns, tmp_path: Path) -> None:
    """RFC 9293 §3.6/§3.10.4: our FIN follows the data; the kernel's reply and FIN come after it; we ACK its FIN."""
    pcap = tmp_path / "fin.pcap"
    server = start_kserver(netns, tmp_path, "--port", str(PORT), "--mode", "sha")
    data = write_stream(tmp_path / "in", 1461, 34)
    r = ns_run(netns, connect_cmd(PORT, "--log-format", "json", "--pcap", str(pcap)), stdin=data, timeout=60)
    assert r.returncode == 0, r.stderr
    _clean(r.stderr)
    assert r.stdout == f"1461 {stream_sha256(1461, 34)}\n".encode()
    kserver_result(server, tmp_path)
    segs = tcp_segments(pcap)
    ours = [s for s in segs if s.src == STACK_ADDR]
    theirs = [s for s in segs if s.src == KERNEL_ADDR]
    (our_fin,) = [s for s in ours if s.fin]
    # The kernel may retransmit its FIN if our ACK is slow on a loaded machine; all copies
    # must be the same FIN, and the check below uses the first.
    their_fins = [s for s in theirs if s.fin]
    their_fin = their_fins[0]
    assert all(f.seq == their_fin.seq for f in their_fins)
    our_syn = next(s for s in ours if s.syn)
    assert our_fin.seq + our_fin.length == (our_syn.seq + 1 + 1461) % 2**32  # FIN right after the data
    reply = [s for s in theirs if s.length]
    assert reply and min(s.index for s in reply) > our_fin.index  # the kernel answered after our FIN
    assert their_fin.index >= max(s.index for s in reply)
    final = [s for s in ours if s.index > their_fins[-1].index]
    assert final and final[-1].flags == ACK and final[-1].ack == (their_fin.seq + their_fin.length + 1) % 2**32


def test_refused_is_one_line_and_non_zero(netns: Netns, tmp_path: Path) -> None:
    """RFC 9293 §3.10.7.3: the kernel's RST to our SYN means "connection refused": exit 1, one line."""
    pcap = tmp_path / "refused.pcap"
    r = ns_run(netns, connect_cmd(5002, "--log-level", "warning", "--pcap", str(pcap)), timeout=60)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"tcpstack: error: connect to {KERNEL_ADDR}:5002: connection refused"]
    assert r.stdout == b""
    # At once: the first SYN's RST ended it, before any retransmission (whatever the machine's load).
    segs = tcp_segments(pcap)
    assert [(s.src, s.syn, s.rst) for s in segs] == [(STACK_ADDR, True, False), (KERNEL_ADDR, False, True)], segs


def test_reset_by_a_kernel_server_is_one_line_and_non_zero(netns: Netns, tmp_path: Path) -> None:
    """RFC 9293 §3.10.7.4: a kernel server's RST (SO_LINGER 0) mid-connection ends connect with exit 1, one line."""
    pcap = tmp_path / "reset.pcap"
    server = start_kserver(netns, tmp_path, "--port", str(PORT), "--mode", "abort", "--abort-after", "1000")
    cmd = ["ip", "netns", "exec", netns.name, *connect_cmd(PORT, "--log-level", "warning", "--pcap", str(pcap))]
    # stdin stays open: the reset, not end of input, must end the program.
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdin is not None and p.stdout is not None and p.stderr is not None
        p.stdin.write(b"x" * 1000)
        p.stdin.flush()
        p.wait(timeout=60)  # not communicate(): that would close stdin (only a bound on a hang)
        out, err = p.stdout.read(), p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None:
                f.close()
    assert p.returncode == 1
    assert err.decode().splitlines() == [
        f"tcpstack: error: connection to {KERNEL_ADDR}:{PORT}: connection reset by peer"
    ]
    assert out == b"", out
    k = kserver_result(server, tmp_path)
    assert (k["recv"], k["aborted"]) == (1000, True)
    rsts = [s for s in tcp_segments(pcap) if s.rst]
    assert len(rsts) == 1 and rsts[0].src == KERNEL_ADDR


@pytest.mark.parametrize("target", ["no_such_host", "full_accept_queue"])
def test_unanswered_syn_times_out(netns: Netns, tmp_path: Path, target: str) -> None:
    """RFC 9293 §3.8.3 (R2 for SYN, MUST-23) with the user's timeout: no answer ends connect with exit 1, one line."""
    pcap = tmp_path / "timeout.pcap"
    if target == "no_such_host":
        # Nobody in the namespace owns 10.0.0.3 and forwarding is off there, so the kernel
        # discards our SYNs without an answer; nothing leaves the namespace.
        host = "10.0.0.3"
    else:
        host = KERNEL_ADDR
        server = start_kserver(netns, tmp_path, "--port", str(PORT), "--mode", "full", "--timeout", "30")
    # A 3.5 s timeout: the first retransmission is due after 1 s (RFC 6298 (2.1)), so it goes out even if
    # the machine is so loaded that the timer fires 2.5 s late.
    r = ns_run(
        netns,
        connect_cmd(PORT, "--timeout", "3.5", "--log-level", "warning", "--pcap", str(pcap), host=host),
        timeout=60,
    )
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"tcpstack: error: connect to {host}:{PORT}: timed out"]
    # Never before the user's timeout; the upper bound only tells it from the default 30 s timeout.
    assert 3.5 <= r.elapsed < 20, r.elapsed
    segs = tcp_segments(pcap)
    syns = [s for s in segs if s.syn]
    assert len(syns) >= 2 and all(s.src == STACK_ADDR and s.dst == host for s in syns)  # retransmitted
    assert len({s.seq for s in syns}) == 1
    assert [p for p in ip_packets(pcap) if p[0] != STACK_ADDR] == []  # never answered, not even by ICMP
    if target == "full_accept_queue":
        server.kill()
