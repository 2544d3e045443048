"""The example third-party plugin (examples/tcpstack-example-quickack), installed with pip, found by
`tcpstack up` through the `tcpstack` entry-point group and enabled from the command line, against Linux."""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tests.integration.netns import STACK_ADDR, Netns
from tests.integration.tcputil import start_stack
from tests.integration.test_plugins_wire import UPLOAD, kernel, stop_stack


@pytest.fixture
def quickack_installed() -> None:
    if not any(ep.name == "quickack" for ep in entry_points(group="tcpstack")):
        message = "tcpstack-example-quickack is not installed (scripts/setup installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def test_cli_enables_the_installed_plugin(quickack_installed: None, netns: Netns, tmp_path: Path) -> None:
    """`--no-feature delayed_ack --feature quickack:quick=3`: the plugin's policy answers the kernel's first
    three data segments at once, then delays (its tcp.decision events); the closed line lists the feature."""
    proc = start_stack(
        netns,
        tmp_path,
        *("--serve", "discard:9", "--log-level", "debug"),
        *("--no-feature", "delayed_ack", "--feature", "quickack:quick=3"),
    )
    kernel(netns, UPLOAD, STACK=STACK_ADDR, COUNT=20, PACE=0.001)
    events = stop_stack(proc, tmp_path)
    up = next(e for e in events if e.get("event") == "stack.up")
    assert "quickack" in up["plugins"]
    decisions = [e for e in events if e.get("event") == "tcp.decision" and e.get("plugin") == "quickack"]
    reasons = [e.get("reason", e["decision"]) for e in decisions]
    assert reasons[:3] == ["quick-ACK phase"] * 3, reasons
    assert "ACK delayed" in reasons[3:] or "two full-sized segments" in reasons[3:], reasons
    [closed] = [e for e in events if e.get("event") == "tcp.closed"]
    assert "quickack" in closed["features"] and "delayed_ack" not in closed["features"]
