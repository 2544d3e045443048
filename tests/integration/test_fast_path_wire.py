"""Header prediction against the Linux kernel over TUN (layers/tcp/fastpath.py; RFC 9293
§3.10.7.4): a bulk echo both ways arrives intact, with the kernel's in-order data taken by
the fast path (``tcp.fast_path``) and its ACKs of our data too (``tcp.fast_ack``); with
``fast_path = false`` the same transfer is intact and neither counter moves."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.netns import STACK_ADDR, Netns
from tests.integration.tcputil import kpeer, start_stack, stop_stack, stream_sha256

CONFIG = (
    f'[[layers]]\ntype = "tun"\ndevice = "tun0"\n\n[[layers]]\ntype = "ipv4"\naddress = "{STACK_ADDR}/24"\n\n'
    '[[layers]]\ntype = "tcp"\n'
)
SIZE = 8_000_000


@pytest.mark.parametrize("fast", [True, False], ids=["fast_path", "no_fast_path"])
def test_bulk_echo_with_linux_is_intact_and_predicted(netns: Netns, tmp_path: Path, fast: bool) -> None:
    config = tmp_path / "stack.toml"
    config.write_text(CONFIG + f"fast_path = {'true' if fast else 'false'}\n")
    proc = start_stack(netns, tmp_path, "--config", str(config), "--serve", "echo")
    try:
        r = kpeer(netns, "client", "--port", "7", "--send", str(SIZE), "--seed", "9")
        assert "error" not in r and r["recv_error"] is None and "send_error" not in r, r
        assert (r["sent"], r["recv"]) == (SIZE, SIZE)
        assert r["recv_sha"] == r["sent_sha"] == stream_sha256(SIZE, 9)
    finally:
        events = stop_stack(proc, tmp_path, closed=1)
    (closed,) = [e for e in events if e["event"] == "tcp.closed"]
    assert closed["reason"] == "normal" and (closed["bytes_in"], closed["bytes_out"]) == (SIZE, SIZE)
    counters = events[-1]["events"]
    data, acks = counters.get("tcp.fast_path", 0), counters.get("tcp.fast_ack", 0)
    print(f"\nfast_path={fast}: {data} data segments and {acks} ACKs predicted, frames in {counters['frames_in']}")
    if fast:
        assert data > 0 and acks > 0, counters
    else:
        assert data == acks == 0, counters
