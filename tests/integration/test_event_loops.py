"""``tcpstack up`` on uvloop's event loop (when installed) and on asyncio's (``TCPSTACK_UVLOOP=0``):
the protocol services and a streams service work on both, against the kernel in a namespace."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.integration.netns import Netns
from tests.integration.tcputil import MB, closed_events, kpeer, start_stack, stop_stack, stream_sha256

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_services_on_each_event_loop(netns: Netns, tmp_path: Path, loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if loop == "uvloop" and not HAVE_UVLOOP:
        pytest.skip("uvloop is not installed (pip install 'tcpstack[fast]')")
    monkeypatch.setenv("TCPSTACK_UVLOOP", "1" if loop == "uvloop" else "0")  # the stack inherits it
    proc = start_stack(netns, tmp_path, "--serve", "echo", "--serve", "discard", "--serve", "chargen")
    echo = kpeer(netns, "client", "--port", "7", "--send", str(MB), "--seed", "3")
    assert echo["recv_error"] is None and echo["recv"] == MB and echo["recv_sha"] == stream_sha256(MB, 3), echo
    discard = kpeer(netns, "client", "--port", "9", "--send", str(MB), "--seed", "4")
    assert discard["recv_error"] is None and (discard["sent"], discard["recv"]) == (MB, 0), discard
    chargen = kpeer(netns, "client", "--port", "19", "--no-shutdown", "--shutdown-after-recv", str(MB // 4))
    assert chargen["recv_error"] is None and chargen["recv"] >= MB // 4, chargen
    events = stop_stack(proc, tmp_path, closed=3)
    (up,) = [e for e in events if e["event"] == "stack.up"]
    assert up["loop"] == loop
    assert sorted(e["reason"] for e in closed_events(events)) == ["normal"] * 3
