"""UDP against the Linux kernel over TUN (layers/udp/, issue 13): a kernel socket's datagrams to
a port of the stack with no endpoint are answered with ICMP Port Unreachable, which the kernel
takes for its own (RFC 1122 §4.1.3.1): a connected socket's next receive fails with
ECONNREFUSED. The stack's capture holds the answer, quoting the kernel's datagram.

The stack has no UDP endpoints yet (the asyncio API is to come: docs/udp-wip.md), so this is
the one behaviour the kernel can see today."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scapy.layers.inet import ICMP, IP, UDP
from scapy.utils import rdpcap

from tests.integration.netns import KERNEL_ADDR, STACK_ADDR, Netns
from tests.integration.tcputil import start_stack, stop_stack

KERNEL_CLIENT = """
import json, socket, sys
results = []
for i in range(3):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.connect((sys.argv[1], 9))
    s.send(b"probe %d" % i)
    try:
        s.recv(100)
        results.append("data")
    except ConnectionRefusedError:
        results.append("refused")
    except TimeoutError:
        results.append("timeout")
    s.close()
print(json.dumps(results))
"""


def test_closed_port_refused_by_port_unreachable(netns: Netns, tmp_path: Path) -> None:
    pcap = tmp_path / "udp.pcap"
    config = tmp_path / "stack.toml"
    config.write_text(
        '[[layers]]\ntype = "tun"\ndevice = "tun0"\n\n'
        f'[[layers]]\ntype = "pcap"\npath = "{pcap}"\n\n'
        f'[[layers]]\ntype = "ipv4"\naddress = "{STACK_ADDR}/24"\n\n'
        '[[layers]]\ntype = "tcp"\n\n'
        '[[layers]]\ntype = "udp"\nbelow = "ipv4"\n'
    )
    proc = start_stack(netns, tmp_path, "--config", str(config))
    try:
        r = netns.exec([sys.executable, "-c", KERNEL_CLIENT, STACK_ADDR], check=False, timeout=60)
    finally:
        events = stop_stack(proc, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout) == ["refused"] * 3
    counters, drops = events[-1]["events"], events[-1]["drops"]
    assert counters.get("udp.port_unreachable_sent") == 3, counters
    assert drops.get("udp.no_port") == 3, drops
    sent = [p[IP] for p in rdpcap(str(pcap)) if IP in p and UDP in p[IP] and p[IP].dst == STACK_ADDR]
    answers = [p[IP] for p in rdpcap(str(pcap)) if IP in p and ICMP in p[IP] and p[IP].src == STACK_ADDR]
    assert len(sent) == len(answers) == 3
    for dgram, answer in zip(sent, answers, strict=True):
        assert (answer.dst, answer[ICMP].type, answer[ICMP].code) == (KERNEL_ADDR, 3, 3)
        # RFC 1122 §3.2.2: the quote is the kernel's header and (here all of) its datagram.
        assert bytes(answer[ICMP].payload) == bytes(dgram)
