"""The probe on the wire: `tcpstack up --probe FILE --pcap CAP` with the Linux kernel as the peer.
The records agree with the capture (every segment we sent has its send record, the ACKs the kernel
sent are the ack records), `tcpstack probe --watch` streams them without gaps or duplicates, and a
connection opened without the probe says so."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugins.probe import FIELDS, flags_text
from tests.integration.netns import KERNEL_ADDR, STACK_ADDR, Netns
from tests.plot import oracle

CLIENT = (
    "import socket,sys,time\n"
    f"s=socket.create_connection(('{STACK_ADDR}',7))\n"
    "print(s.getsockname()[1], flush=True)\n"
    "for i in range(int(sys.argv[1])):\n"
    "    s.sendall(b'x'*50000)\n"
    "    got=0\n"
    "    while got<50000:\n"
    "        got+=len(s.recv(65536))\n"
    "    time.sleep(float(sys.argv[2]))\n"
    "s.shutdown(socket.SHUT_WR); s.recv(1); s.close()\n"
    "print('done', flush=True)\n"
)


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tcpstack.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Wait for a condition (a generous deadline that only bounds a hang)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


@dataclass(frozen=True, slots=True)
class Seg:
    at: float
    src: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    length: int


def capture(path: Path) -> list[Seg]:
    """Every TCP segment of a capture, in order (read by the plot tests' scapy oracle)."""
    return [
        Seg(s.t, s.src[0], s.src[1], s.dst[1], s.seq, s.ack, s.flags & 0xFF, s.length)
        for s in oracle.read_segments(path)
    ]


def test_records_agree_with_the_capture_and_stream_with_watch(netns: Netns, tmp_path: Path) -> None:
    control = tmp_path / "ctl.sock"
    probe_file, pcap = tmp_path / "probe.jsonl", tmp_path / "cap.pcap"
    proc = netns.tcpstack(
        "--serve", "echo", "--control", str(control), "--probe", str(probe_file), "--pcap", str(pcap), tmp=tmp_path
    )
    out = tmp_path / "client.out"
    client = netns.spawn([sys.executable, "-c", CLIENT, "40", "0.05"], stdout=out, stderr=tmp_path / "client.err")
    try:
        _wait_until(lambda: bool(out.read_text().strip()), "client connection")
        port = int(out.read_text().split()[0])
        _wait_until(lambda: _cli("probe", "--control", str(control), "--json").stdout.strip() != "", "records")
        held = [json.loads(line) for line in _cli("probe", "--control", str(control), "--json").stdout.splitlines()]
        (number,) = {r["conn"] for r in held if r["event"] == "open" and r["remote"] == f"{KERNEL_ADDR}:{port}"}
        by_pair = _cli("probe", "--control", str(control), "--conn", f"{STACK_ADDR}:7-{KERNEL_ADDR}:{port}")
        assert by_pair.returncode == 0 and by_pair.stdout.startswith("time "), by_pair.stderr
        watch = _cli(
            "probe", "--control", str(control), "--conn", str(number), "--watch", "0.2", "--count", "6", "--json"
        )
        assert watch.returncode == 0, watch.stderr
        assert "no longer held" not in watch.stderr  # (a ring of 4096 records does not overflow in 0.2 s)
        streamed = [json.loads(line) for line in watch.stdout.splitlines()]
        _wait_until(lambda: "done" in out.read_text(), "the end of the transfer")
        _wait_until(lambda: client.poll() is not None, "the client's exit")
        unknown = _cli("probe", "--control", str(control), "--conn", "999")
        assert unknown.returncode == 1 and unknown.stderr.startswith("tcpstack: error: no connection 999")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    records = [json.loads(line) for line in probe_file.read_text().splitlines()]
    assert all(list(r) == list(FIELDS) for r in records)
    mine = [r for r in records if r["conn"] == number]
    assert mine[0]["event"] == "open" and mine[-1]["event"] == "close"
    # --watch printed a contiguous run of the connection's records: no gap, no duplicate.
    assert len(streamed) > 10
    start = mine.index(streamed[0])
    assert mine[start : start + len(streamed)] == streamed
    # Every segment we sent on this connection has its send record (same seq, length, flags), in order.
    segs = [s for s in capture(pcap) if port in (s.sport, s.dport)]
    ours = [s for s in segs if s.src == STACK_ADDR]
    sends = [r for r in mine if r["event"] == "send"]
    assert [(r["seq"], r["len"], r["flags"]) for r in sends] == [(s.seq, s.length, flags_text(s.flags)) for s in ours]
    # The records' times are the capture's (the same clock, the same offset).
    assert max(abs(r["t"] - s.at) for r, s in zip(sends, ours, strict=True)) < 0.001
    # The ack records are the ACKs the kernel sent, in order.
    theirs = [(s.seq, s.ack, s.length) for s in segs if s.src == KERNEL_ADDR and s.flags & 0x10]
    acks = [(r["seq"], r["ack"], r["len"]) for r in mine if r["event"] == "ack"]
    assert acks == theirs
    assert {r["phase"] for r in mine} <= {"slow_start", "congestion_avoidance", "fast_recovery", "rto_recovery"}
    assert sum(r["len"] for r in sends) >= 40 * 50000
    assert any(r["rtt_sample"] is not None for r in mine) and mine[-1]["srtt"] is not None


def test_csv_file_and_a_connection_without_the_probe(netns: Netns, tmp_path: Path) -> None:
    """Without --probe, `tcpstack probe --conn N` says the connection was opened without it
    (exit 1, one line); a stack with --probe FILE.csv writes CSV with the documented header."""
    control = tmp_path / "ctl.sock"
    proc = netns.tcpstack("--serve", "echo", "--control", str(control), tmp=tmp_path)
    out = tmp_path / "client.out"
    client = netns.spawn([sys.executable, "-c", CLIENT, "1", "30"], stdout=out, stderr=tmp_path / "client.err")
    try:
        _wait_until(lambda: bool(out.read_text().strip()), "client connection")
        port = int(out.read_text().split()[0])
        rows = [json.loads(line) for line in _cli("ss", "--control", str(control), "--json").stdout.splitlines()]
        (row,) = [r for r in rows if r["remote"] == f"{KERNEL_ADDR}:{port}"]
        assert row["id"] == 1
        r = _cli("probe", "--control", str(control), "--conn", "1")
        assert r.returncode == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr
        assert lines[0].startswith("tcpstack: error: connection 1 (")
        assert "was opened without the probe feature; enable it with" in lines[0]
        everything = _cli("probe", "--control", str(control))
        assert everything.returncode == 0 and "opened without it" in everything.stderr
    finally:
        client.kill()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0

    probe_csv = tmp_path / "probe.csv"
    proc = netns.tcpstack("--serve", "echo", "--probe", str(probe_csv), tmp=tmp_path, label="csv")
    out2 = tmp_path / "client2.out"
    client = netns.spawn([sys.executable, "-c", CLIENT, "4", "0"], stdout=out2, stderr=tmp_path / "client2.err")
    try:
        _wait_until(lambda: "done" in out2.read_text(), "the transfer")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    with probe_csv.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == list(FIELDS)
        rows2: list[dict[str, Any]] = list(reader)
    assert rows2[0]["event"] == "open" and rows2[0]["remote"].startswith(f"{KERNEL_ADDR}:")
    assert {r["event"] for r in rows2} == {"open", "send", "ack", "close"}
    assert all(r["ssthresh"] == "" or int(r["ssthresh"]) > 0 for r in rows2)


def test_probe_and_workers_write_one_file_per_worker(netns: Netns, tmp_path: Path) -> None:
    """`up --workers 2 --probe FILE.jsonl`: each worker writes FILE.wK.jsonl; the connection's
    records are in the file of the worker that held it, and `tcpstack probe` asks the workers."""
    control = tmp_path / "ctl.sock"
    probe_file = tmp_path / "probe.jsonl"
    proc = netns.tcpstack(
        "--serve", "echo", "--workers", "2", "--control", str(control), "--probe", str(probe_file), tmp=tmp_path
    )
    out = tmp_path / "client.out"
    client = netns.spawn([sys.executable, "-c", CLIENT, "4", "0.1"], stdout=out, stderr=tmp_path / "client.err")
    try:
        _wait_until(lambda: bool(out.read_text().strip()), "client connection")
        port = int(out.read_text().split()[0])
        _wait_until(lambda: _cli("probe", "--control", str(control), "--json").stdout.strip() != "", "records")
        held = [json.loads(line) for line in _cli("probe", "--control", str(control), "--json").stdout.splitlines()]
        assert any(r["event"] == "open" and r["remote"] == f"{KERNEL_ADDR}:{port}" for r in held)
        _wait_until(lambda: "done" in out.read_text(), "the transfer")
    finally:
        client.kill()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    files = [tmp_path / f"probe.w{k}.jsonl" for k in range(2)]
    assert all(f.exists() for f in files)
    records = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    opens = [r for r in records if r["event"] == "open" and r["remote"] == f"{KERNEL_ADDR}:{port}"]
    assert len(opens) == 1
