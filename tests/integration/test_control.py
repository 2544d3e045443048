"""`tcpstack ss` and `tcpstack stats` against a running `tcpstack up`, through its control socket."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.netns import KERNEL_ADDR, STACK_ADDR, Netns

HOLD = (
    "import socket,sys,time\n"
    f"s=socket.create_connection(('{STACK_ADDR}',7))\n"
    "s.sendall(b'x'*1000); s.recv(1000)\n"
    "print(s.getsockname()[1], flush=True)\n"
    "time.sleep(30)\n"
)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcpstack.cli", *args], capture_output=True, text=True, timeout=30)


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Wait for a condition (a generous deadline that only bounds a hang, not a fixed count of sleeps)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def test_ss_and_stats_show_a_live_connection(netns: Netns, tmp_path: Path) -> None:
    """`ss` lists the listener and an established connection with its TCP facts; `stats` gives the counters;
    the socket disappears when the stack stops."""
    control = tmp_path / "ctl.sock"
    proc = netns.tcpstack("--serve", "echo", "--control", str(control), tmp=tmp_path)
    client = netns.spawn([sys.executable, "-c", HOLD], stdout=tmp_path / "client.out", stderr=tmp_path / "client.err")
    try:
        _wait_until(lambda: bool((tmp_path / "client.out").read_text().strip()), "the client's connection")
        port = int((tmp_path / "client.out").read_text().split()[0])
        r = _cli("ss", "--control", str(control), "--json")
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)["connections"]
        assert {"state": "LISTEN", "local": "*:7", "remote": "*:*"} in rows
        (conn,) = [row for row in rows if row["remote"] == f"{KERNEL_ADDR}:{port}"]
        assert conn["state"] == "ESTABLISHED" and conn["local"] == f"{STACK_ADDR}:7"
        assert conn["bytes_received"] == 1000 and conn["bytes_sent"] == 1000
        assert conn["congestion"] == "cubic" and "sack" in conn["features"] and conn["cwnd"] > 0
        text = _cli("ss", "--control", str(control))
        assert text.returncode == 0 and "ESTABLISHED" in text.stdout and "cwnd:" in text.stdout
        stats = _cli("stats", "--control", str(control), "--json")
        assert stats.returncode == 0 and json.loads(stats.stdout)["events"]["frames_in"] > 0
    finally:
        client.kill()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert not control.exists()


def test_ss_without_a_stack_is_one_clear_line(tmp_path: Path) -> None:
    """`tcpstack ss` with nothing listening prints one error line and exits 1."""
    r = _cli("ss", "--control", str(tmp_path / "none.sock"))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tcpstack: error: no stack answers at")


def test_fetch_makes_the_stack_a_client_of_the_kernel(netns: Netns, tmp_path: Path) -> None:
    """`tcpstack fetch` makes the running stack open a TCP connection to a kernel HTTP server:
    the body it writes matches the file byte for byte; errors are one clear line."""
    control = tmp_path / "ctl.sock"
    www = tmp_path / "www"
    www.mkdir()
    body = os.urandom(3_000_000)
    (www / "f.bin").write_bytes(body)
    proc = netns.tcpstack("--control", str(control), "--log-format", "json", tmp=tmp_path)
    httpd = [sys.executable, "-m", "http.server", "8080", "--bind", KERNEL_ADDR, "--directory", str(www)]
    netns.spawn(httpd, stdout=tmp_path / "httpd.out", stderr=tmp_path / "httpd.err")
    try:
        _wait_until(lambda: bool(netns.exec(["ss", "-Hltn", "sport = :8080"], check=False).stdout.strip()), "httpd")
        out = tmp_path / "got.bin"
        r = _cli("fetch", "--control", str(control), "-o", str(out), "--json", f"http://{KERNEL_ADDR}:8080/f.bin")
        assert r.returncode == 0, r.stderr
        reply = json.loads(r.stdout)
        assert reply["status"] == 200 and reply["bytes"] == len(body)
        assert reply["sha256"] == hashlib.sha256(body).hexdigest() and out.read_bytes() == body
        assert reply["local"].startswith(f"{STACK_ADDR}:")
        text = _cli("fetch", "--control", str(control), f"http://{KERNEL_ADDR}:8080/nothing-here")
        assert text.returncode == 0 and text.stdout.startswith("404 "), text.stdout + text.stderr
        refused = _cli("fetch", "--control", str(control), "--timeout", "5", f"http://{KERNEL_ADDR}:8081/")
        assert refused.returncode == 1 and refused.stderr.startswith("tcpstack: error: fetch http://"), refused.stderr
        assert "ConnectionRefusedError" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        bad = _cli("fetch", "--control", str(control), "https://example.org/")
        assert bad.returncode == 2 and "only http:// URLs" in bad.stderr  # refused before asking the stack
        named = _cli("fetch", "--control", str(control), "http://localhost/")
        assert named.returncode == 2 and "must be an IPv4 address" in named.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    # The stack's own log tells the client side of the story.
    closed = [json.loads(line) for line in (tmp_path / "stack.err").read_text().splitlines() if "tcp.closed" in line]
    client = [e for e in closed if e["conn"].endswith(f">{KERNEL_ADDR}:8080")]
    assert len(client) == 2 and client[0]["bytes_in"] > len(body) and client[0]["reason"] == "normal"


def test_bad_requests_to_a_running_stack_and_stopping_it_by_its_pid_file(netns: Netns, tmp_path: Path) -> None:
    """A running `tcpstack up`: a 10 kB deeply nested request, bytes that are not UTF-8 and an over-long
    line each get a JSON error reply, nothing is logged with a traceback, and `ss` still answers; the
    process named by --pid-file is the stack, SIGTERM to that PID stops it cleanly and the file goes."""
    import socket

    control = tmp_path / "ctl.sock"
    pid_file = tmp_path / "stack.pid"
    proc = netns.tcpstack("--serve", "echo", "--control", str(control), "--pid-file", str(pid_file), tmp=tmp_path)
    try:
        assert int(pid_file.read_text()) == proc.pid  # ip netns exec execs the program: the same process
        for data in (b"[" * 10_000 + b"\n", b'{"cmd": "\xff"}\n', b"x" * 100_000 + b"\n"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(20)
                s.connect(str(control))
                s.sendall(data)
                reply = b""
                while chunk := s.recv(65536):
                    reply += chunk
            assert set(json.loads(reply)) == {"error"}, reply
            r = _cli("ss", "--control", str(control), "--json")
            assert (
                r.returncode == 0
                and {"state": "LISTEN", "local": "*:7", "remote": "*:*"} in json.loads(r.stdout)["connections"]
            )
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
    assert not pid_file.exists()
    log = (tmp_path / "stack.err").read_text()
    assert "Traceback" not in log and "RecursionError" not in log, log
