"""``tcpstack plot`` on real captures: our stack serves a download through a fault layer that drops
3% of what it sends (tests/integration/test_plugins_wire2.py's set-up: the stack's capture sits
above the fault layer, so it holds every segment sent, dropped ones too; written as pcapng with
the decisions as frame comments), curl fetches it, and tcpdump captures the same connection on
the kernel's side of the TUN device three ways: on tun0 (raw IP, link type 101), on ``any``
(Linux cooked v2, 276) and on ``any -y LINUX_SLL`` (cooked v1, 113). The raw capture is also
converted to pcapng by Wireshark's editcap (or scapy where editcap is missing). ``tcpstack plot``
draws every file, and the graphs are checked against the capture read by scapy
(tests/plot/oracle.py), against each other (the kernel saw a subset of what the stack sent) and
against the stack's own count of retransmissions.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tcpstack.plot.command import figures
from tests.integration.netns import KERNEL_ADDR, STACK_ADDR, Netns
from tests.integration.test_plugins_wire2 import (
    closed,
    curl_get,
    log_events,
    pattern_sha256,
    run_stack,
    stop_stack,
    wait_for,
    write_config,
)
from tests.plot import oracle

pytestmark = pytest.mark.timeout(150)

SIZE = 2_000_000
LOSS = 0.03


def _tcpdump(netns: Netns, tmp: Path, name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    path = tmp / f"{name}.pcap"
    err = tmp / f"{name}.tcpdump.err"
    # Headers only (-s 256: the payload lengths come from the IP headers) and a big buffer (-B, KiB):
    # three tcpdumps beside the stack and curl on two cores must not drop a packet.
    cmd = ["tcpdump", "-U", "-n", "-s", "256", "-B", "32768", *args, "-w", str(path), "tcp"]
    proc = netns.spawn(cmd, stdout=tmp / f"{name}.out", stderr=err)
    wait_for(lambda: "listening on" in err.read_text(errors="replace") or proc.poll() is not None, 15, "tcpdump")
    assert proc.poll() is None, err.read_text()
    return proc, path


def _settle(path: Path, quiet: float = 2.0, bound: float = 20.0) -> None:
    """Until *path* has not grown for *quiet* seconds: libpcap hands packets over in blocks, at the
    latest a second after they came (tcpdump's timeout); SIGINT before that would lose them."""
    deadline = time.monotonic() + bound
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = path.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)


def _pcapng(src: Path, dst: Path) -> Path:
    if shutil.which("editcap"):
        subprocess.run(["editcap", "-F", "pcapng", str(src), str(dst)], check=True, capture_output=True, timeout=60)
    else:  # a second writer all the same
        from scapy.utils import rdpcap, wrpcapng

        wrpcapng(str(dst), rdpcap(str(src)))
    assert dst.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    return dst


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tcpstack.cli", "plot", *args], capture_output=True, text=True, timeout=120
    )


def test_plot_draws_the_stacks_and_the_kernels_captures_of_a_lossy_download(netns: Netns, tmp_path: Path) -> None:
    """A 2 MB download with 3% of our datagrams dropped; tcpstack plot of the five files."""
    fault = {"drop": LOSS, "direction": "out", "seed": 11}
    dumps = [
        _tcpdump(netns, tmp_path, "kernel-raw", "-i", "tun0"),
        _tcpdump(netns, tmp_path, "kernel-sll2", "-i", "any"),
        _tcpdump(netns, tmp_path, "kernel-sll", "-i", "any", "-y", "LINUX_SLL"),
    ]
    config = write_config(tmp_path, fault=fault)  # our capture as pcapng: decisions as frame comments
    config.write_text(config.read_text().replace("stack.pcap", "stack.pcapng"))
    proc = run_stack(netns, tmp_path, config, "--serve", "http:80")
    sha, _ = curl_get(netns, tmp_path, SIZE, timeout=60)
    assert sha == pattern_sha256(SIZE)
    wait_for(lambda: closed(log_events(tmp_path)), 10, "tcp.closed")
    events = stop_stack(proc, tmp_path)
    [summary] = closed(events)
    for dump, path in dumps:  # until tcpdump has written what it saw (the file stops growing), then SIGINT
        _settle(path)
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=15)
        counts = path.with_suffix(".tcpdump.err").read_text()
        captured, received = (int(re.search(rf"(\d+) packets {w}", counts)[1]) for w in ("captured", "received"))  # type: ignore[index]
        assert captured == received and "0 packets dropped by kernel" in counts, counts  # the whole connection
    stack = tmp_path / "stack.pcapng"
    assert b"RFC " in stack.read_bytes()  # decisions as frame comments
    files = {
        "stack": stack,
        **{
            name: path
            for name, path in zip(("kernel-raw", "kernel-sll2", "kernel-sll"), (p for _, p in dumps), strict=True)
        },
    }
    files["kernel-pcapng"] = _pcapng(files["kernel-raw"], tmp_path / "kernel.pcapng")
    for path in files.values():
        assert path.stat().st_size > SIZE // 20, path

    # The command writes every output format from every kind of file.
    outs = [
        ("stack", "stack.html"),
        ("kernel-raw", "kernel.png"),
        ("kernel-sll2", "sll2.svg"),
        ("kernel-sll", "sll.png"),
        ("kernel-pcapng", "ng.png"),
    ]
    for name, out in outs:
        r = _cli(str(files[name]), "-o", str(tmp_path / out))
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
    page = (tmp_path / "stack.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "<script" not in page
    assert (tmp_path / "kernel.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (tmp_path / "sll2.svg").read_text()

    # Every graph is the capture's: the oracle reads each file with scapy.
    drawn = {}
    for name, path in files.items():
        [d] = figures(str(path)).drawn  # the download: the connection with most data
        server = (STACK_ADDR, 80)
        client = next(e for e in d.entry.conn.ends if e != server)
        assert client[0] == KERNEL_ADDR and d.entry.conn.ends[d.analysis.data_side] == server, name
        conv = oracle.conversation(oracle.read_segments(path), server, client)
        exp = oracle.expected(conv)
        oracle.check_figure(d.figure, exp, conv)
        drawn[name] = exp
        # All of the response (the body and the HTTP head) acknowledged, each byte once.
        assert (
            sum(n for _, n in exp.acked_bytes) == max(hi for _, _, hi in exp.segments + exp.retransmissions) - 1 > SIZE
        )

    ours, kernel = drawn["stack"], drawn["kernel-raw"]
    # Our capture (above the fault layer) holds every retransmission; its count is the stack's own.
    assert ours.retransmissions, "3% loss and no retransmission in the capture"
    assert abs(len(ours.retransmissions) - summary["retransmits"]) <= 2, (len(ours.retransmissions), summary)
    # The kernel saw a subset of what we sent (the fault layer dropped the rest), on the same
    # relative sequence numbers, and the holes it saw filled are among our retransmissions.
    sent = {(lo, hi) for _, lo, hi in ours.segments + ours.retransmissions}
    assert {(lo, hi) for _, lo, hi in kernel.segments + kernel.retransmissions} <= sent
    assert kernel.retransmissions
    assert {(lo, hi) for _, lo, hi in kernel.retransmissions} <= {(lo, hi) for _, lo, hi in ours.retransmissions}
    assert len(kernel.segments) + len(kernel.retransmissions) < len(ours.segments) + len(ours.retransmissions)
    # The kernel's three captures are one capture: the same segments, ACKs and SACK blocks.
    for name in ("kernel-sll2", "kernel-sll"):
        other = drawn[name]
        assert [(lo, hi) for _, lo, hi in other.segments] == [(lo, hi) for _, lo, hi in kernel.segments], name
        assert [a for _, a in other.acks] == [a for _, a in kernel.acks], name
        assert [(lo, hi) for _, lo, hi in other.sacks] == [(lo, hi) for _, lo, hi in kernel.sacks], name
    assert drawn["kernel-pcapng"].segments == kernel.segments and drawn["kernel-pcapng"].acks == kernel.acks
