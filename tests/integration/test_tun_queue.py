"""The TUN transmit queue (issue 11, item 6): devices the stack creates get a queue long enough
for bursts; ``tcpstack up`` warns once, with the fix, about an attached device whose queue is short."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from tcpstack.io.tun import MIN_TXQUEUELEN, TXQUEUELEN, short_queue_fix
from tests.integration.netns import Netns
from tests.integration.tcputil import check_log, start_stack, stop_stack


def test_short_queue_fix_names_the_command() -> None:
    assert short_queue_fix("tun0", 500) == f"ip link set tun0 txqueuelen {TXQUEUELEN}"
    assert short_queue_fix("tun0", MIN_TXQUEUELEN) is None
    assert short_queue_fix("tun0", None) is None


def test_up_warns_once_about_a_short_queue_with_the_fix(netns_capability: None, tmp_path: Path) -> None:
    ns = Netns(txqueuelen=500)
    try:
        proc = start_stack(ns, tmp_path)
        events = stop_stack(proc, tmp_path)
    finally:
        ns.close()
    warnings = [e for e in events if e["event"] == "tun.short_queue"]
    assert len(warnings) == 1, warnings
    (warning,) = warnings
    assert warning["level"] == "warning" and warning["txqueuelen"] == 500
    assert warning["fix"] == f"ip link set tun0 txqueuelen {TXQUEUELEN}"


def test_up_is_quiet_about_a_long_queue(netns: Netns, tmp_path: Path) -> None:
    proc = start_stack(netns, tmp_path)
    events = stop_stack(proc, tmp_path)
    assert netns.exec(["cat", "/sys/class/net/tun0/tx_queue_len"]).stdout.strip() == str(TXQUEUELEN)
    assert [e for e in events if e["event"] == "tun.short_queue"] == []


_CREATE = """
import sys
from tcpstack.io.tun import TunLink, device_txqueuelen
link = TunLink("tcpsq0", create=True)
print(device_txqueuelen(link.name))
link.close()
"""


def test_a_device_the_stack_creates_gets_the_long_queue(netns: Netns) -> None:
    out = netns.exec([sys.executable, "-c", _CREATE]).stdout.split()
    assert out == [str(TXQUEUELEN)]


def test_up_with_workers_warns_once(netns_capability: None, tmp_path: Path) -> None:
    ns = Netns(txqueuelen=500)
    try:
        proc = start_stack(ns, tmp_path, "--workers", "2")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        ns.close()
    events = check_log((tmp_path / "stack.err").read_text())
    assert next(e["workers"] for e in events if e["event"] == "stack.up")  # the workers came up
    warnings = [e for e in events if e["event"] == "tun.short_queue"]
    assert len(warnings) == 1, warnings
