"""A second transport beside TCP, against Linux: the test plugin's echo transport on IP protocol 253
(RFC 3692: for experimentation) runs on IPv4 beside TCP in a stack on a TUN device; the kernel, inside
the namespace, sends raw IP datagrams of protocol 253 and gets them back, gets ICMP protocol
unreachable for protocol 99 (RFC 1122 §3.2.2.1), and a RST from TCP for a port nobody listens on."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tests.integration.netns import PREFIX, STACK_ADDR, Netns

ROOT = Path(__file__).resolve().parents[2]

STACK = f"""
import asyncio, sys
sys.path.insert(0, {str(ROOT)!r})
from tests.framework.test_pipeline_graph import TestPlugin
from tcpstack.config import build_stack, config_from_dict
from tcpstack.io.driver import AsyncioDriver
from tcpstack.io.tun import TunLink
from tcpstack.plugins import PluginHost

layers = [
    {{"type": "tun", "device": "tun0"}},
    {{"type": "ipv4", "address": "{STACK_ADDR}/{PREFIX}"}},
    {{"type": "tcp"}},
    {{"type": "echo", "below": "ipv4"}},
]
stack = build_stack(config_from_dict({{"layers": layers}}, host=PluginHost(entry_points=False, extra=[TestPlugin()])))
link = TunLink("tun0", mtu=1500)

async def main() -> None:
    driver = AsyncioDriver(stack, link, asyncio.get_running_loop())
    driver.start()
    print("ready", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""

KERNEL = f"""
import json, socket
out = {{}}
echo = socket.socket(socket.AF_INET, socket.SOCK_RAW, 253)
echo.settimeout(5)
echo.sendto(b"over the graph", ("{STACK_ADDR}", 0))
datagram, (source, _) = echo.recvfrom(2048)
ihl = (datagram[0] & 0x0F) * 4
out["echo"] = [source, datagram[9], datagram[ihl:].decode()]
icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
icmp.settimeout(5)
other = socket.socket(socket.AF_INET, socket.SOCK_RAW, 99)
other.sendto(b"nobody takes this", ("{STACK_ADDR}", 0))
datagram, (source, _) = icmp.recvfrom(2048)
ihl = (datagram[0] & 0x0F) * 4
out["icmp"] = [source, datagram[ihl], datagram[ihl + 1]]
try:
    socket.create_connection(("{STACK_ADDR}", 7), timeout=5)
    out["tcp"] = "connected"
except ConnectionRefusedError:
    out["tcp"] = "refused"
print(json.dumps(out))
"""


def test_the_kernel_reaches_both_transports(netns: Netns, tmp_path: Path) -> None:
    """Protocol 253 comes back from the echo transport, protocol 99 is unreachable, TCP answers a
    SYN to a closed port with RST: one IPv4 layer hands each protocol to its own transport."""
    script = tmp_path / "stack.py"
    script.write_text(STACK)
    proc = netns.spawn([sys.executable, str(script)], stdout=tmp_path / "stack.out", stderr=tmp_path / "stack.err")
    deadline = time.monotonic() + 20
    while "ready" not in (tmp_path / "stack.out").read_text():
        assert proc.poll() is None, (tmp_path / "stack.err").read_text()
        assert time.monotonic() < deadline, "the stack did not start within 20 s"
        time.sleep(0.05)
    kernel = tmp_path / "kernel.py"
    kernel.write_text(KERNEL)
    r = netns.exec([sys.executable, str(kernel)], check=False, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout)
    assert result == {
        "echo": [STACK_ADDR, 253, "over the graph"],
        "icmp": [STACK_ADDR, 3, 2],  # Destination Unreachable, protocol (RFC 1122 §3.2.2.1)
        "tcp": "refused",
    }
    proc.kill()
    proc.wait(timeout=10)
    assert "Traceback" not in (tmp_path / "stack.err").read_text()
