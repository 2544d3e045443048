"""The main job: `tcpstack demo` runs end to end and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _demo_namespaces(pid: int) -> list[str]:
    """The namespaces of the demo that process *pid* runs (``Netns`` names them tcpstack-demo-PID-N): demos
    that other test sessions run on the same machine at the same time do not count."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"tcpstack-demo-{pid}-")]


def _demo(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run `tcpstack demo ARGS` to the end (its working folder under *tmp_path*); the result and its PID."""
    cmd = [sys.executable, "-m", "tcpstack.cli", "demo", *args]
    p = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, env=_env(tmp_path)
    )
    try:
        out, err = p.communicate(timeout=240)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    return subprocess.CompletedProcess(cmd, p.returncode, out, err), p.pid


def _env(tmp_path: Path) -> dict[str, str]:
    """The demo's working folder (pcap, log) under the test's tmp_path, which pytest prunes."""
    return {**os.environ, "TMPDIR": str(tmp_path)}


def test_demo_passes_every_step_and_cleans_up(netns_capability: None, tmp_path: Path) -> None:
    """README's first command: ping, fragmented ping, curl both ways with SHA-256 and progress bars, nc
    echo and the stack fetching from a kernel HTTP server all pass; the summary has a row per connection."""
    r, pid = _demo(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [line for line in r.stdout.splitlines() if line.strip().startswith(("PASS", "FAIL"))]
    assert len(lines) == 7 and all(line.strip().startswith("PASS") for line in lines), r.stdout
    assert r.stdout.count("sha256 matches") == 4 and "echoed back" in r.stdout
    assert "curl GET :81/bytes/5000000 (3% dropped)" in r.stdout
    assert "download (stack -> kernel)" in r.stdout and "upload (kernel -> stack)" in r.stdout
    assert "stack fetches http://10.0.0.1:8080/" in r.stdout
    # The summary table: one row per TCP connection, the default plugin set named once.
    rows = [line for line in r.stdout.splitlines() if line.startswith("│")]
    assert [row.split()[1] for row in rows] == ["http", "http", "http", "echo", "client"], r.stdout
    assert [row.split()[2] for row in rows][:3] == [":80", ":80", ":81"], r.stdout
    assert all("normal" in row for row in rows)
    download = rows[0].split("│")
    assert int(download[3].strip().replace(",", "")) > 20_000_000  # bytes out: body + response head
    assert "every connection: cubic delayed_ack nagle probe rack_tlp sack timestamps window_scaling" in r.stdout
    assert "capture: " in r.stdout and "demo passed" in r.stdout
    assert "Traceback" not in r.stderr
    assert _demo_namespaces(pid) == []  # the demo removed its namespace
    _check_graphs(r.stdout)


def _check_graphs(stdout: str) -> None:
    """The graphs the demo printed exist and draw what its capture and probe file say (the plot
    tests' oracle reads both independently: tests/plot/oracle.py), and they show what the demo is
    for: slow start on the clean download; losses, fast recoveries and congestion avoidance on the
    one through the fault layer, where the probe and the capture put them."""
    import re

    from tcpstack.plot.command import figures
    from tests.plot import oracle

    m = re.search(r"capture: (\S+)\s+probe: (\S+)", stdout)
    assert m is not None, stdout
    capture, probe = Path(m.group(1)), Path(m.group(2))
    assert capture.suffix == ".pcapng" and b"RFC " in capture.read_bytes()  # decisions as frame comments
    found = re.findall(r"^\s+(\S+)\s+connection (\d+)\s+(\S+\.png)$", stdout, re.M)
    graphs = {g: (int(n), Path(p)) for g, n, p in found}
    assert set(graphs) == {"download", "upload", "download-with-loss", "fetch"}, stdout
    for _, path in graphs.values():
        assert path.read_bytes()[:4] == b"\x89PNG"
    page = re.search(r"page with all of them:\s+(\S+\.html)", stdout)
    assert page is not None and Path(page.group(1)).read_text().count("data:image/png;base64,") == 4
    segments = oracle.read_segments(capture)
    for name in ("download", "download-with-loss"):
        number, _ = graphs[name]
        [drawn] = figures(str(capture), probe=str(probe), conns=[str(number)]).drawn
        server = drawn.entry.conn.ends[drawn.analysis.data_side]
        client = drawn.entry.conn.ends[1 - drawn.analysis.data_side]
        assert server[0] == "10.0.0.2", (name, server)
        conv = oracle.conversation(segments, server, client)
        exp = oracle.expected(conv)
        oracle.check_figure(drawn.figure, exp, conv)
        records = oracle.probe_records(probe, number)
        [opened] = [r for r in records if r["event"] == "open"]
        oracle.check_probe_figure(drawn.figure, records, drawn.analysis.t0, int(opened["seq"]))
        phases = {r["phase"] for r in records if r["phase"]}
        cwnd = [r["cwnd"] for r in records if r["cwnd"] is not None]
        lost = max((r["lost"] or 0) for r in records)
        if name == "download":  # no loss: slow start all along, the window grown tenfold and more
            assert "slow_start" in phases and "fast_recovery" not in phases, phases
            assert max(cwnd) >= 10 * cwnd[0] and not exp.retransmissions and lost == 0
        else:  # 3% dropped: the capture's retransmissions, the probe's losses, recoveries and CA
            assert {"slow_start", "fast_recovery", "congestion_avoidance"} <= phases, phases
            assert exp.retransmissions and lost > 0
            retrans = max(r["retrans"] for r in records)
            assert abs(len(exp.retransmissions) - retrans) <= 2, (len(exp.retransmissions), retrans)


@pytest.mark.parametrize("flag", ["--help"])
def test_demo_help(flag: str) -> None:
    """`tcpstack demo --help` explains --keep and --pcap."""
    r = subprocess.run([sys.executable, "-m", "tcpstack.cli", "demo", flag], capture_output=True, text=True)
    assert r.returncode == 0 and "--keep" in r.stdout and "--pcap" in r.stdout


def test_demo_keep_leaves_a_reachable_stack(netns_capability: None, tmp_path: Path) -> None:
    """`tcpstack demo --keep`: the namespace, the stack and its control socket stay up after the run, and
    the printed commands reach them; the test removes them itself."""
    import re

    r, pid = _demo(tmp_path, "--keep")
    [name] = _demo_namespaces(pid) or [None]
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert name is not None and f"ip netns del {name}" in r.stdout
        m = re.search(r"tcpstack ss --control (\S+)", r.stdout)
        assert m is not None, r.stdout
        ss = subprocess.run(
            [sys.executable, "-m", "tcpstack.cli", "ss", "--control", m.group(1)], capture_output=True, text=True
        )
        assert ss.returncode == 0 and "LISTEN" in ss.stdout and "*:80" in ss.stdout, ss.stdout + ss.stderr
        ping = ["ip", "netns", "exec", name, "ping", "-c", "1", "-W", "10", "10.0.0.2"]
        assert subprocess.run(ping, capture_output=True).returncode == 0
        # The removal it prints stops exactly the processes it left in its namespace, by their IDs.
        kill = re.search(r"sudo kill ([\d ]+); sudo ip netns del", r.stdout)
        assert kill is not None, r.stdout
        in_namespace = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        assert sorted(kill.group(1).split()) == sorted(in_namespace)
    finally:
        if name is not None:
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            subprocess.run(["kill", "-9", *pids], capture_output=True)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    assert _demo_namespaces(pid) == []


def test_demo_leaves_a_headers_capture_the_probe_the_graphs_and_the_log(netns_capability: None, tmp_path: Path) -> None:
    """After a run the working folder holds the pcapng capture (128 bytes a frame: headers, not the 40 MB
    of data), the probe file, the graphs, the page and the stack's log; the served and fetched files are gone."""
    from scapy.utils import RawPcapReader

    r, _ = _demo(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    [workdir] = tmp_path.glob("tcpstack-demo-*")
    assert not (workdir / "www").exists() and not (workdir / "fetched.bin").exists()
    graphs = {p.name for p in workdir.glob("*.png")}
    assert graphs == {"download.png", "upload.png", "download-with-loss.png", "fetch.png"}
    assert (workdir / "demo.html").exists() and (workdir / "probe.jsonl").stat().st_size > 0
    reader = RawPcapReader(str(workdir / "demo.pcapng"))
    sizes = [(len(data), meta.wirelen) for data, meta in reader]
    reader.close()
    assert len(sizes) > 10_000 and all(stored <= 128 for stored, _ in sizes)
    assert sum(wire for _, wire in sizes) > 40_000_000  # the original lengths are recorded


@pytest.mark.parametrize("keep", [[], ["--keep"]], ids=["plain", "keep"])
def test_demo_ctrl_c_cleans_up(netns_capability: None, tmp_path: Path, keep: list[str]) -> None:
    """Ctrl-C (SIGINT) in the middle of the demo: exit status 130 and the namespace with the stack in it is
    removed, also with --keep (which keeps only a run that reached its summary)."""
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "tcpstack.cli", "demo", *keep],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_env(tmp_path),
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]  # the namespace, then "stack up ..."
        assert lines[1].startswith("stack up"), lines
        assert _demo_namespaces(proc.pid)  # it is there now
        time.sleep(0.2)  # in the middle of the pings
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "interrupted; cleaning up" in out and "Traceback" not in err
    assert _demo_namespaces(proc.pid) == []


def test_demo_with_offload_passes(netns_capability: None, tmp_path: Path) -> None:
    """`tcpstack demo --offload`: the same steps pass with TUN checksum and segmentation offload."""
    r, _ = _demo(tmp_path, "--offload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TUN offload on" in r.stdout and r.stdout.count("sha256 matches") == 4
    assert sum(line.strip().startswith("PASS") for line in r.stdout.splitlines()) == 7
