"""Loss recovery against the Linux kernel over TUN (issue 9): a lost retransmission is found by
RACK, not by the retransmission timer.

``tcpstack up`` runs through ``rulestack.py``, which adds one scripted rule to the ``fault``
layer: our 30th data segment and its first retransmission are dropped, nothing else. A kernel
``curl`` downloads 1 MB from our http service. Which datagrams are dropped does not depend on
timing, so the bound holds on a loaded machine: RFC 8985 §6.2 step 5 marks the retransmission
lost as soon as a segment sent after it is delivered and RACK.rtt + reo_wnd has passed (a few
milliseconds here); the minimum RTO is 200 ms and restarts with every ACK of new data, so the
only way to a timeout is to miss the lost retransmission. The namespace is deleted afterwards by
the ``netns`` fixture, even on failure.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import pytest

from tcpstack.services import pattern_bytes
from tests.integration.netns import STACK_ADDR, Netns
from tests.integration.tcputil import closed_events, stop_stack

pytestmark = pytest.mark.timeout(60)

RULESTACK = Path(__file__).with_name("rulestack.py")
SIZE = 1_000_000


def test_lost_retransmission_is_repaired_without_a_timeout(netns: Netns, tmp_path: Path) -> None:
    """RFC 8985 §6.2 step 5 (and RFC 6675 §5 (4.3)): with our 30th data segment dropped and then its
    first retransmission too, the download arrives intact, the segment goes out a third time, and the
    connection's summary counts no retransmission timeout (``timeouts`` of ``tcp.closed``)."""
    config = tmp_path / "stack.toml"
    config.write_text(
        '[[layers]]\ntype = "tun"\ndevice = "tun0"\n\n[[layers]]\ntype = "fault"\n\n'
        f'[[layers]]\ntype = "ipv4"\naddress = "{STACK_ADDR}/24"\n\n[[layers]]\ntype = "tcp"\n'
    )
    args = ["--tun", netns.device, "--address", f"{STACK_ADDR}/24", "--config", str(config)]
    proc = netns.spawn(
        [sys.executable, str(RULESTACK), "30", *args, "--serve", "http:80", "--log-format", "json"],
        stdout=tmp_path / "stack.out",
        stderr=tmp_path / "stack.err",
    )
    deadline = time.monotonic() + 20
    while "stack.up" not in (tmp_path / "stack.err").read_text(errors="replace"):
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stack.err").read_text()[-3000:]
        time.sleep(0.05)
    out = tmp_path / "body"
    r = netns.exec(
        ["curl", "-sS", "--fail", "--max-time", "30", "-o", str(out), f"http://{STACK_ADDR}/bytes/{SIZE}"],
        check=False,
        timeout=40,
    )
    events = stop_stack(proc, tmp_path, closed=1)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(pattern_bytes(SIZE)).hexdigest()
    [summary] = closed_events(events)
    assert events[-1]["drops"].get("fault.injected", 0) == 2, events[-1]  # exactly the two scripted drops
    assert summary["retransmits"] >= 2, summary
    assert summary["timeouts"] == 0, summary
