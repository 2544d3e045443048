"""`tcpstack ss` and `tcpstack stats` against a running `tcpstack up`, through its control socket."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

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
        rows = [json.loads(line) for line in r.stdout.splitlines()]  # JSON lines
        assert any(row["state"] == "LISTEN" and row["local"] == "*:7" and row["remote"] == "*:*" for row in rows)
        (conn,) = [row for row in rows if row["remote"] == f"{KERNEL_ADDR}:{port}"]
        assert conn["state"] == "ESTABLISHED" and conn["local"] == f"{STACK_ADDR}:7"
        assert conn["bytes_received"] == 1000 and conn["bytes_sent"] == 1000 and conn["bytes_acked"] == 1001
        assert conn["congestion"] == "cubic" and "sack" in conn["features"] and conn["cwnd"] == 10  # segments
        text = _cli("ss", "--control", str(control))
        assert text.returncode == 0 and "ESTAB " in text.stdout and " cwnd:10 " in text.stdout
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
            r = _cli("ss", "--control", str(control), "--json", "state", "listening")
            assert r.returncode == 0 and json.loads(r.stdout)["local"] == "*:7"
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
    assert not pid_file.exists()
    log = (tmp_path / "stack.err").read_text()
    assert "Traceback" not in log and "RecursionError" not in log, log


# Every name iproute2's tcp_stats_print (misc/ss.c) can print, in its order (iproute2 6.x).
LINUX_SS_NAMES = """ts sack ecn ecnseen fastopen wscale rto backoff rtt ato qack bidir mss pmtu rcvmss advmss cwnd
ssthresh bytes_sent bytes_retrans bytes_acked bytes_received segs_out segs_in data_segs_out data_segs_in dctcp bbr
send lastsnd lastrcv lastack pacing_rate delivery_rate delivered delivered_ce app_limited busy rwnd_limited
sndbuf_limited unacked retrans lost sacked dsack_dups fackets reordering reord_seen rcv_rtt rcv_space rcv_ssthresh
notsent minrtt rcv_ooopack snd_wnd rcv_wnd rehash""".split()
OURS_ONLY = ("id", "features", "phase")

SLOW_READER = (
    "import os,socket,sys,time\n"
    "s=socket.socket()\n"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,131072)\n"  # a small window: what the kernel has received
    f"s.connect(('{STACK_ADDR}',19))\n"  # and not yet acknowledged stays small
    "print(s.getsockname()[1],flush=True)\n"
    "end=time.time()+90\n"
    "while time.time()<end and not os.path.exists(sys.argv[1]):\n"
    "    s.recv(16384); time.sleep(0.002)\n"
)


def _ss_line(line: str) -> tuple[list[str], dict[str, str]]:
    """The names, in order, and values of one `ss -ti` info line (`send 1.2Gbps` style pairs included)."""
    words = line.split()
    names: list[str] = []
    values: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("send", "pacing_rate", "delivery_rate") and i + 1 < len(words):
            name, value = word, words[i + 1]
            i += 1
        else:
            name, _, value = word.partition(":")
        names.append(name)
        values[name] = value
        i += 1
    return names, values


def _bps(text: str) -> float:
    """`133Mbps`, `2.4Gbps`, `132996556bps` -> bits per second."""
    m = re.fullmatch(r"([\d.]+)([kKMGT]?)bps", text)
    assert m is not None, text
    return float(m.group(1)) * {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[m.group(2)]


def test_ss_of_a_bulk_transfer_matches_the_kernels_ss_of_the_same_connection(netns: Netns, tmp_path: Path) -> None:
    """The stack's chargen service sends to a kernel socket that reads slowly; `tcpstack ss` of the stack's end
    and `ss -tin` of the kernel's end, taken one after the other, use the same names in the same order and
    the same units: cwnd in segments, mss/advmss/rcvmss equal, wscale mirrored, rtt and rto in ms, the byte
    and segment counts of one end within bounds of the other's, lastrcv/lastsnd in ms. Filters select the
    connection as ss's do, and `--json --watch --count 3` is three JSON lines."""
    control = tmp_path / "ctl.sock"
    proc = netns.tcpstack("--serve", "chargen", "--control", str(control), tmp=tmp_path)
    flag = tmp_path / "stop"
    client = netns.spawn([sys.executable, "-c", SLOW_READER, str(flag)], stdout=tmp_path / "c.out",
                         stderr=tmp_path / "c.err")  # fmt: skip

    def kernel() -> dict[str, str] | None:
        r = netns.exec(["ss", "-Htin", "state", "established", "dport", "=", ":19"], check=False)
        lines = r.stdout.splitlines()
        if len(lines) != 2:
            return None
        names, values = _ss_line(lines[1])
        return {"_names": " ".join(names), **values}

    try:
        _wait_until(lambda: bool((tmp_path / "c.out").read_text().strip()), "the kernel's connection")
        port = int((tmp_path / "c.out").read_text().split()[0])
        conn_id = f"{STACK_ADDR}:19-{KERNEL_ADDR}:{port}"
        # A few MB into the transfer: cwnd, rtt and the counters are well past their first values.
        _wait_until(lambda: int((kernel() or {}).get("bytes_received", "0")) > 3_000_000, "3 MB at the kernel")
        k1 = kernel()
        mine = _cli("ss", "--control", str(control), "--json", "--conn", conn_id)
        text = _cli("ss", "--control", str(control), "--conn", conn_id)
        k2 = kernel()
        assert k1 is not None and k2 is not None and mine.returncode == 0 and text.returncode == 0, mine.stderr
        (o,) = [json.loads(line) for line in mine.stdout.splitlines()]
        head, info = text.stdout.splitlines()[1:]
        assert head.split()[:1] == ["ESTAB"] and head.split()[3:] == [f"{STACK_ADDR}:19", f"{KERNEL_ADDR}:{port}"]
        names, values = _ss_line(info)

        # The same names, in Linux's order; the algorithm first, ours last.
        assert names[0] == o["congestion"] == "cubic" and names[-3:] == list(OURS_ONLY)
        assert set(names[1:-3]) <= set(LINUX_SS_NAMES), set(names[1:-3]) - set(LINUX_SS_NAMES)
        assert names[1:-3] == sorted(names[1:-3], key=LINUX_SS_NAMES.index)
        knames = k1["_names"].split()
        common = ["wscale", "rto", "rtt", "ato", "mss", "advmss", "cwnd", "bytes_acked", "segs_out", "segs_in", "send"]
        common += ["snd_wnd"]
        assert [n for n in names if n in common] == common == [n for n in knames if n in common], (names, knames)
        assert {"bytes_sent", "delivery_rate", "unacked"} <= set(names)  # the sender's fields

        # Units. cwnd and unacked are segments: a few, not bytes.
        assert 2 <= o["cwnd"] <= 5000 and o["cwnd"] == o["cwnd_bytes"] // o["mss"] and int(k1["cwnd"]) < 5000
        assert o["unacked"] * o["mss"] <= 4 * 131072
        # The MSS both ways: ours is what the kernel receives (rcvmss, advmss), the kernel's what we advertise.
        assert o["mss"] == int(k1["rcvmss"]) == int(k1["advmss"]) == 1448 and o["advmss"] == int(k1["mss"])
        assert values["wscale"] == ",".join(reversed(k1["wscale"].split(",")))  # snd,rcv from each end
        # Times in ms: rto at least the 200 ms minimum at both ends, rtt under a second (in one host).
        assert 200 <= o["rto"] <= 60_000 and 200 <= float(k1["rto"]) <= 120_000
        ours_rtt, ours_var = (float(x) for x in values["rtt"].split("/"))
        assert 0 < ours_rtt < 1000 and 0 <= ours_var < 1000 and 0 < o["rtt"] < 1000  # (two snapshots: not equal)
        assert 0 < float(k1["rtt"].split("/")[0]) < 1000
        assert float(values["ato"]) == 40 <= float(k1["ato"]) <= 200  # both delay ACKs (Linux: 40 ms and up)
        # Bytes: what we saw acknowledged lies between what the kernel had received before and after; the
        # kernel never acknowledges more than a window it has not read (131072 bytes of buffer).
        assert int(k1["bytes_received"]) - 1_000_000 <= o["bytes_acked"] - 1 <= int(k2["bytes_received"])
        assert o["bytes_sent"] >= o["bytes_acked"] - 1 and o["bytes_received"] == int(k1["bytes_acked"]) - 1 == 0
        # Segments: all the kernel had received we had sent; all we had received, the kernel had sent.
        assert int(k1["segs_in"]) <= o["segs_out"] <= int(k2["segs_in"]) + 2000
        assert int(k1["segs_out"]) - 2000 <= o["segs_in"] <= int(k2["segs_out"])
        # Rates in bits per second: `send` as ss computes it (cwnd * mss * 8 / rtt); the text prints rates as
        # ss prints them.
        assert o["send"] == pytest.approx(o["cwnd"] * o["mss"] * 8 / (o["rtt"] / 1000), rel=0.01)
        assert 1e5 < _bps(k1["send"]) < 1e12 and 1e5 < o["send"] < 1e12
        # The delivery rate: a recent sample, in bits per second (its accuracy is tests/framework/test_ss.py's:
        # samples under load vary too much to bound by the kernel's average here).
        assert o["delivery_rate"] is not None and 1e4 < o["delivery_rate"] < 1e11
        # (the samples of two snapshots may differ tenfold under load: only the text's unit is checked)
        assert 1e5 < _bps(values["send"]) < 1e12 and 1e4 < _bps(values["delivery_rate"]) < 1e11
        # lastrcv (we never received data) and the kernel's lastsnd (it never sent any): both the age of the
        # connection, in ms.
        assert abs(o["lastrcv"] - int(k1["lastsnd"])) < 10_000 and 100 < o["lastrcv"] < 200_000
        assert o["id"] >= 1 and o["phase"] in ("slow_start", "congestion_avoidance", "css")

        # Filters, as ss takes them; the same connection by its number.
        def picked(*args: str) -> list[str]:
            r = _cli("ss", "--control", str(control), "--json", *args)
            assert r.returncode == 0, r.stderr
            return [json.loads(line)["remote"] for line in r.stdout.splitlines()]

        me = f"{KERNEL_ADDR}:{port}"
        assert picked("state", "listening") == ["*:*"]
        assert picked("state", "established", f"dport = :{port}") == [me]
        assert picked("src", STACK_ADDR, "and", "sport", "=", ":19") == [me]
        assert picked(f"( dst {KERNEL_ADDR}:{port} or dport = :1 ) and not sport != :19") == [me]
        assert picked("dst", "10.9.9.9") == [] and picked("--conn", str(o["id"])) == [me]
        bad = _cli("ss", "--control", str(control), "dport", "=")
        assert bad.returncode == 1 and bad.stderr.startswith("tcpstack: error: ss: ") and not bad.stdout

        # --json --watch: JSON lines, each self-contained with its own time stamp.
        watched = _cli("ss", "--control", str(control), "--json", "--watch", "0.2", "--count", "3", "--conn", conn_id)
        assert watched.returncode == 0, watched.stderr
        records = [json.loads(line) for line in watched.stdout.splitlines()]
        assert len(records) == 3 and all(r["id"] == o["id"] and r["remote"] == me for r in records)
        assert records[0]["time"] < records[1]["time"] < records[2]["time"]
        assert records[0]["bytes_acked"] <= records[1]["bytes_acked"] <= records[2]["bytes_acked"]
    finally:
        flag.touch()
        client.wait(timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
