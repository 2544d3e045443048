"""`tcpstack up --workers N` against the Linux kernel: one stack process per queue of a
multi-queue TUN device, connections spread by the kernel, merged `ss`/`stats`, captures named by
worker, a worker killed and restarted, IP fragments, and the error for a device made without
`multi_queue`. Every process is stopped by its PID, the namespace removed, also on failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.netns import STACK_ADDR, Netns

# Opens COUNT connections to the echo service at once (threads), sends each 64 KiB of random
# bytes, checks the SHA-256 of what comes back, prints one JSON line of results, then holds
# the connections open until FLAG exists and checks each once more before closing.
CLIENT = """
import hashlib, json, os, socket, sys, threading, time
host, count, flag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
socks, results = [None] * count, [None] * count
def echo(s, n):
    data = os.urandom(n)
    s.sendall(data)
    got = b""
    while len(got) < n:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        got += chunk
    return hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
def one(i):
    try:
        s = socket.create_connection((host, 7), timeout=60)
        socks[i] = s
        results[i] = echo(s, 65536)
    except OSError as exc:
        results[i] = repr(exc)
threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
for t in threads: t.start()
for t in threads: t.join()
errors = [r for r in results if r is not True]
print(json.dumps({"intact": sum(r is True for r in results), "errors": errors}), flush=True)
while not os.path.exists(flag):
    time.sleep(0.05)
again = []
for s in socks:
    try:
        again.append(echo(s, 1000) if s is not None else "no socket")
    except OSError as exc:
        again.append(repr(exc))
    finally:
        if s is not None: s.close()
print(json.dumps({"again": again}), flush=True)
"""


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcpstack.cli", *args], capture_output=True, text=True, timeout=60)


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """A deadline that only bounds a hang, not a count of sleeps."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def _stats(control: Path) -> dict[str, Any]:
    r = _cli("stats", "--control", str(control), "--json")
    assert r.returncode == 0, r.stderr
    reply: dict[str, Any] = json.loads(r.stdout)
    return reply


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _start_clients(netns: Netns, tmp: Path, count: int, label: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    flag = tmp / f"{label}.release"
    out = tmp / f"{label}.out"
    proc = netns.spawn(
        [sys.executable, "-c", CLIENT, STACK_ADDR, str(count), str(flag)], stdout=out, stderr=tmp / f"{label}.err"
    )
    return proc, out, flag


def test_64_connections_spread_over_two_workers_intact_with_merged_ss_and_stats(netns: Netns, tmp_path: Path) -> None:
    """64 concurrent echo connections through 2 workers each come back intact (SHA-256); both
    workers served some (stats, per worker); `ss` lists every connection once, marked by its
    worker; `stats` adds the workers' counters up; each worker wrote its own capture."""
    control = tmp_path / "ctl.sock"
    cap = tmp_path / "cap.pcap"
    log = ("--log-format", "json")
    stack = netns.tcpstack("--workers", "2", "--serve", "echo", "--control", str(control), "--pcap", str(cap), *log,
                           tmp=tmp_path)  # fmt: skip
    client, out, flag = _start_clients(netns, tmp_path, 64, "clients")
    try:
        _wait_until(lambda: bool(out.read_text().strip()) or client.poll() is not None, "client results")
        first = json.loads(out.read_text().splitlines()[0])
        assert first == {"intact": 64, "errors": []}
        stats = _stats(control)
        per = stats["workers"]
        assert [w["worker"] for w in per] == [0, 1] and all("error" not in w for w in per)
        opened = [w["events"].get("worker.connections", 0) for w in per]
        assert sum(opened) == 64 and all(n > 0 for n in opened), opened  # the kernel spread them
        assert stats["events"]["worker.connections"] == 64
        assert stats["frames_in"] == sum(w["frames_in"] for w in per) > 0
        assert stats["events"]["workers.restarts"] == 0 and stats["events"]["workers.connections_lost"] == 0
        assert len({w["pid"] for w in per}) == 2 and stack.pid not in {w["pid"] for w in per}
        ss = _cli("ss", "--control", str(control), "--json")
        assert ss.returncode == 0, ss.stderr
        rows = [json.loads(line) for line in ss.stdout.splitlines()]  # JSON lines, one per socket
        established = [r for r in rows if r["state"] == "ESTABLISHED"]
        assert len(established) == 64 and len({r["remote"] for r in established}) == 64
        # Worker k of 2 numbers its connections k+1, k+3, ...: the merged IDs are unique.
        assert len({r["id"] for r in established}) == 64
        assert all(r["id"] % 2 == (r["worker"] + 1) % 2 for r in established), [(r["worker"], r["id"]) for r in rows]
        by_worker = {k: sum(r["worker"] == k for r in established) for k in (0, 1)}
        assert by_worker == {0: opened[0], 1: opened[1]}  # each connection where it was counted
        assert {(r["worker"], r["local"]) for r in rows if r["state"] == "LISTEN"} == {(0, "*:7"), (1, "*:7")}
        one = _cli("ss", "--control", str(control), "--json", "--conn", str(established[0]["id"]))
        assert [json.loads(line)["remote"] for line in one.stdout.splitlines()] == [established[0]["remote"]]
        text = _cli("ss", "--control", str(control))
        assert text.returncode == 0 and text.stdout.splitlines()[0].startswith("W  State")
        shown = _cli("stats", "--control", str(control))
        assert shown.returncode == 0 and "workers.restarts 0" in shown.stdout and "  w1 pid " in shown.stdout
        flag.touch()
        assert client.wait(timeout=60) == 0
        again = json.loads(out.read_text().splitlines()[1])["again"]
        assert again == [True] * 64  # every connection still worked with the other worker busy too
    finally:
        flag.touch()
        stack.send_signal(signal.SIGTERM)
        assert stack.wait(timeout=30) == 0
    for k in (0, 1):
        assert (tmp_path / f"cap.w{k}.pcap").stat().st_size > 24  # a pcap header and frames
    assert not cap.exists() and not control.exists()
    ups = [e for e in _lines(tmp_path / "stack.err") if e["event"] == "worker.up"]
    assert sorted(e["worker"] for e in ups) == [0, 1]


def test_a_killed_worker_is_restarted_and_its_loss_reported(netns: Netns, tmp_path: Path) -> None:
    """SIGKILL worker 0 (by its PID) while both hold connections: the parent logs the death and
    the restart, counts one restart and the connections the dead worker held; the other worker's
    connections go on working; new connections work through both workers again."""
    control = tmp_path / "ctl.sock"
    stack = netns.tcpstack("--workers", "2", "--serve", "echo", "--control", str(control), "--log-format", "json",
                           "--pcap", str(tmp_path / "cap.pcap"), "--snaplen", "128", tmp=tmp_path)  # fmt: skip
    client, out, flag = _start_clients(netns, tmp_path, 24, "held")
    try:
        _wait_until(lambda: bool(out.read_text().strip()) or client.poll() is not None, "client results")
        assert json.loads(out.read_text().splitlines()[0]) == {"intact": 24, "errors": []}
        # Wait until the parent's own poll has seen what each worker holds (what a death loses).
        _wait_until(
            lambda: (
                [w.get("held") for w in _stats(control)["workers"]]
                == [w["connections"] for w in _stats(control)["workers"]]
            ),
            "the parent's poll of the held connections",
        )
        before = _stats(control)["workers"]
        # Worker 0 holds queue 0: at its death the kernel moves the last queue into its place,
        # and the steering program's map follows (docs/architecture.md, "Workers": restarts).
        victim = before[0]
        held = victim["connections"]
        assert 0 < held < 24
        os.kill(victim["pid"], signal.SIGKILL)
        _wait_until(lambda: _stats(control)["events"]["workers.restarts"] == 1, "a restart")

        def restarted() -> bool:
            w = _stats(control)["workers"][victim["worker"]]
            return "error" not in w and w["pid"] != victim["pid"]

        _wait_until(restarted, "the restarted worker answering")
        stats = _stats(control)
        assert stats["events"]["workers.connections_lost"] == held
        assert stats["workers"][victim["worker"]]["connections"] == 0  # a fresh stack
        events = _lines(tmp_path / "stack.err")
        (died,) = [e for e in events if e["event"] == "worker.died"]
        assert died["worker"] == victim["worker"] and died["pid"] == victim["pid"]
        assert died["connections_lost"] == held and died["status"] == "killed by SIGKILL"
        (again,) = [e for e in events if e["event"] == "worker.restarted"]
        assert again["worker"] == victim["worker"] and again["pid"] != victim["pid"]
        assert (tmp_path / "cap.w0.pcap").stat().st_size > 24  # the dead worker's capture is kept
        assert (tmp_path / "cap.w0.r1.pcap").exists()  # and the new one writes its own
        flag.touch()
        client.wait(timeout=120)
        results = json.loads(out.read_text().splitlines()[1])["again"]
        assert results.count(True) == 24 - held  # the survivor's connections all still work
        fresh, fresh_out, fresh_flag = _start_clients(netns, tmp_path, 32, "fresh")
        fresh_flag.touch()
        assert fresh.wait(timeout=120) == 0
        assert json.loads(fresh_out.read_text().splitlines()[0]) == {"intact": 32, "errors": []}
        assert all(w["events"].get("worker.connections", 0) > 0 for w in _stats(control)["workers"])
    finally:
        flag.touch()
        stack.send_signal(signal.SIGTERM)
        assert stack.wait(timeout=30) == 0


def test_fragments_of_a_datagram_meet_in_one_worker(netns: Netns, tmp_path: Path) -> None:
    """Fragmented pings through 2 workers: the kernel hashes every fragment of a datagram by
    addresses and protocol only (no ports), so all of them reach one worker, which reassembles
    and answers each (docs/architecture.md, "Workers")."""
    control = tmp_path / "ctl.sock"
    stack = netns.tcpstack("--workers", "2", "--control", str(control), tmp=tmp_path)
    try:
        r = netns.exec(["ping", "-c", "10", "-i", "0.05", "-s", "4000", "-W", "5", STACK_ADDR], check=False)
        assert " 10 received" in r.stdout, r.stdout + r.stderr
        per = _stats(control)["workers"]
        reassembled = [w["events"].get("ipv4.reassembled", 0) for w in per]
        assert sorted(reassembled) == [0, 10], reassembled  # all in one worker, none half-held
        assert all(w["events"].get("ipv4.fragments_held", 0) in (0, 20) for w in per)
    finally:
        stack.send_signal(signal.SIGTERM)
        assert stack.wait(timeout=30) == 0


def test_a_device_made_without_multi_queue_is_one_line_with_the_recipe(netns: Netns, tmp_path: Path) -> None:
    """`up --workers 2` on a single-queue device: exit 1, one line with the command that makes a
    multi-queue one; a single-process `up` attaches to that device, and to a multi-queue one."""
    netns.exec(["ip", "link", "del", netns.device])
    netns.exec(["ip", "tuntap", "add", "dev", netns.device, "mode", "tun"])
    cmd = [sys.executable, "-m", "tcpstack.cli", "up", "--workers", "2", "--tun", netns.device,
           "--control", str(tmp_path / "c.sock")]  # fmt: skip
    r = netns.exec(cmd, check=False)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tcpstack: error: TUN device 'tun0' was made without multi_queue")
    assert "ip tuntap add dev tun0 mode tun multi_queue" in lines[0]
    for label in ("single", "single-on-mq"):
        if label == "single-on-mq":
            netns.exec(["ip", "link", "del", netns.device])
            netns.exec(["ip", "tuntap", "add", "dev", netns.device, "mode", "tun", "multi_queue"])
        netns.exec(["ip", "addr", "add", "10.0.0.1/24", "dev", netns.device])
        netns.exec(["ip", "link", "set", netns.device, "up"])
        stack = netns.tcpstack(tmp=tmp_path, label=label)
        try:
            ping = netns.exec(["ping", "-c", "1", "-W", "5", STACK_ADDR], check=False)
            assert " 1 received" in ping.stdout, ping.stdout
        finally:
            stack.send_signal(signal.SIGTERM)
            assert stack.wait(timeout=30) == 0


DELAYED_HTTP = """
import socket, sys, threading, time
srv = socket.create_server((sys.argv[1], 8080), backlog=16)
print("ready", flush=True)
def answer(c):
    c.recv(4096)
    time.sleep(4)  # silent for longer than the kernel's 3 s flow-table ageing
    c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 5\\r\\n\\r\\nhello")
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=answer, args=(c,)).start()
"""


def test_an_active_open_stays_with_its_worker_through_silence(netns: Netns, tmp_path: Path) -> None:
    """Four concurrent `tcpstack fetch`es (run by worker 0) from a server that is silent for 4 s
    before it answers: the answer reaches worker 0 by the port slice, not by a hash that would
    send each to either worker (all four right by chance: 1 in 16)."""
    control = tmp_path / "ctl.sock"
    stack = netns.tcpstack("--workers", "2", "--control", str(control), "--log-format", "json", tmp=tmp_path)
    out = tmp_path / "httpd.out"
    netns.spawn([sys.executable, "-c", DELAYED_HTTP, "10.0.0.1"], stdout=out, stderr=tmp_path / "httpd.err")
    try:
        _wait_until(lambda: "ready" in out.read_text(), "the delayed server")
        fetch = [sys.executable, "-m", "tcpstack.cli", "fetch", "--control", str(control), "--json",
                 "--timeout", "30", "http://10.0.0.1:8080/"]  # fmt: skip
        fetches = [subprocess.Popen(fetch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        replies = []
        for p in fetches:
            stdout, stderr = p.communicate(timeout=60)
            assert p.returncode == 0, stderr
            replies.append(json.loads(stdout))
        assert [(r["status"], r["bytes"]) for r in replies] == [(200, 5)] * 4
        low, high = 49152, 49152 + (65535 - 49152 + 1) // 2 - 1  # worker 0's slice of two
        assert all(low <= int(r["local"].rsplit(":", 1)[1]) <= high for r in replies)
        assert _stats(control)["workers"][1]["events"].get("tcp.rst_sent_no_tcb", 0) == 0
    finally:
        stack.send_signal(signal.SIGTERM)
        assert stack.wait(timeout=30) == 0
