"""The kernel's ``ping`` against ``tcpstack up`` over a TUN device (RFC 1122 §3.2.2.6, §3.3.2)."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from tests.integration.netns import STACK_ADDR, Netns

scapy_inet = pytest.importorskip("scapy.layers.inet")
from scapy.utils import rdpcap  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _need_ping() -> None:
    if shutil.which("ping") is None:
        pytest.fail("the 'ping' command (iputils-ping) is required; .ci/run installs it")


def _echo_pairs(pcap: Path) -> tuple[dict[tuple[int, int], bytes], dict[tuple[int, int], bytes]]:
    """Requests and replies in the stack's capture, by (id, seq), with their data (reassembled)."""
    from scapy.layers.inet import ICMP, IP, defragment

    packets = defragment(list(rdpcap(str(pcap))))
    requests: dict[tuple[int, int], bytes] = {}
    replies: dict[tuple[int, int], bytes] = {}
    for p in packets:
        if IP in p and ICMP in p[IP]:
            icmp = p[IP][ICMP]
            data = bytes(icmp.payload)
            if icmp.type == 8:
                requests[(icmp.id, icmp.seq)] = data
            elif icmp.type == 0:
                replies[(icmp.id, icmp.seq)] = data
    return requests, replies


def _stop(proc: object, tmp: Path) -> str:
    """SIGTERM the stack, require a clean exit, return its log."""
    import subprocess

    assert isinstance(proc, subprocess.Popen)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    log = (tmp / "stack.err").read_text()
    assert "Traceback" not in log
    return log


def test_three_pings_get_three_identical_replies(netns: Netns, tmp_path: Path) -> None:
    """RFC 1122 §3.2.2.6: each echo request gets a reply with the same identifier, sequence and data."""
    pcap = tmp_path / "ping.pcap"
    proc = netns.tcpstack("--pcap", str(pcap), tmp=tmp_path)
    r = netns.exec(["ping", "-c", "3", "-i", "0.2", "-W", "10", "-p", "a5c3", STACK_ADDR], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 packets transmitted, 3 received" in r.stdout
    log = _stop(proc, tmp_path)
    assert "stack.down" in log
    requests, replies = _echo_pairs(pcap)
    assert len(requests) == 3
    assert replies == requests  # same (id, seq) keys and byte-identical data


def test_fragmented_4000_byte_ping_is_answered(netns: Netns, tmp_path: Path) -> None:
    """RFC 1122 §3.3.2: a 4000-byte echo, fragmented by the kernel, is reassembled and answered."""
    pcap = tmp_path / "frag.pcap"
    proc = netns.tcpstack("--pcap", str(pcap), tmp=tmp_path)
    r = netns.exec(["ping", "-c", "2", "-i", "0.3", "-W", "10", "-s", "4000", STACK_ADDR], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 received" in r.stdout
    _stop(proc, tmp_path)
    requests, replies = _echo_pairs(pcap)
    assert len(requests) == 2 and replies == requests
    assert all(len(data) == 4000 for data in replies.values())
    # Our replies left as fragments no larger than the 1500-byte MTU (RFC 791 §3.2).
    from scapy.layers.inet import IP

    ours = [p for p in rdpcap(str(pcap)) if IP in p and p[IP].src == STACK_ADDR]
    assert len(ours) >= 6 and max(len(bytes(p[IP])) for p in ours) <= 1500


def test_sigterm_stops_the_stack_cleanly_with_json_logs(netns: Netns, tmp_path: Path) -> None:
    """SIGTERM ends `tcpstack up` with exit status 0; JSON logs are one object per line."""
    # A control socket of its own: the default one (/run/tcpstack/tun0.sock) may belong to a stack that
    # another test session runs on the machine, and the warning saying so would come before stack.up.
    proc = netns.tcpstack("--log-format", "json", "--control", str(tmp_path / "ctl.sock"), tmp=tmp_path)
    netns.exec(["ping", "-c", "1", "-W", "10", STACK_ADDR])
    log = _stop(proc, tmp_path)
    events = [json.loads(line) for line in log.splitlines() if line.strip()]
    names = [e["event"] for e in events]
    assert names[0] == "stack.up" and names[-1] == "stack.down"
    assert events[-1]["events"]["icmp.echo_replies"] == 1


def test_unknown_protocol_gets_protocol_unreachable(netns: Netns, tmp_path: Path) -> None:
    """RFC 1122 §3.2.2.1: a datagram of a protocol nobody handles gets ICMP 3/2 back to the kernel."""
    proc = netns.tcpstack(tmp=tmp_path)
    # A raw socket in the namespace sends protocol 253 and waits for the ICMP error.
    script = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_RAW,253)\n"
        "r=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP)\n"
        "r.settimeout(5)\n"
        f"s.sendto(b'hello-253',('{STACK_ADDR}',0))\n"
        "while True:\n"
        "    d=r.recv(2048)\n"
        "    ihl=(d[0]&15)*4\n"
        "    if d[ihl]==3:\n"
        "        print(d[ihl], d[ihl+1], d[ihl+8+9], d[ihl+8+20:].hex()); break\n"
    )
    import sys

    r = netns.exec([sys.executable, "-c", script], check=False, timeout=30)
    assert r.returncode == 0, r.stderr
    type_, code, quoted_proto, quoted_data = r.stdout.split()
    assert (type_, code, quoted_proto) == ("3", "2", "253")
    assert bytes.fromhex(quoted_data) == b"hello-253"
    _stop(proc, tmp_path)


def test_missing_device_is_one_clear_line(netns: Netns, tmp_path: Path) -> None:
    """`tcpstack up` on a device that does not exist prints one error line and exits 1."""
    import sys

    r = netns.exec(
        [sys.executable, "-m", "tcpstack.cli", "up", "--tun", "nosuch0", "--address", f"{STACK_ADDR}/24"],
        check=False,
    )
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tcpstack: error:") and "does not exist" in lines[0]
