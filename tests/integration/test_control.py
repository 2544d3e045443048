"""`tcpstack ss` and `tcpstack stats` against a running `tcpstack up`, through its control socket."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
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
    return subprocess.run([sys.executable, "-m", "framework.cli", *args], capture_output=True, text=True, timeout=30)


def test_ss_and_stats_show_a_live_connection(netns: Netns, tmp_path: Path) -> None:
    """`ss` lists the listener and an established connection with its TCP facts; `stats` gives the counters;
    the socket disappears when the stack stops."""
    control = tmp_path / "ctl.sock"
    proc = netns.tcpstack("--serve", "echo", "--control", str(control), tmp=tmp_path)
    client = netns.spawn([sys.executable, "-c", HOLD], stdout=tmp_path / "client.out", stderr=tmp_path / "client.err")
    try:
        for _ in range(100):
            if (tmp_path / "client.out").read_text().strip():
                break
            subprocess.run(["sleep", "0.05"])
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
