"""Header prediction against the Linux kernel over TUN (layers/tcp/fastpath.py; RFC 9293
§3.10.7.4): a bulk echo both ways arrives intact, with the kernel's in-order data taken by
the fast path (``tcp.fast_path``) and its ACKs of our data too (``tcp.fast_ack``); with
``fast_path = false`` the same transfer is intact and neither counter moves. With TUN offload
the kernel's super-segments (checksums vouched for by the device) are predicted too."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.netns import STACK_ADDR, Netns
from tests.integration.tcputil import kpeer, start_stack, stop_stack, stream_sha256


def config(*, fast: bool, offload: bool) -> str:
    """tun (with or without offload), ipv4, tcp with the fast path on or off."""
    return (
        f'[[layers]]\ntype = "tun"\ndevice = "tun0"\noffload = {str(offload).lower()}\n\n'
        f'[[layers]]\ntype = "ipv4"\naddress = "{STACK_ADDR}/24"\n\n'
        f'[[layers]]\ntype = "tcp"\nfast_path = {str(fast).lower()}\n'
    )


SIZE = 8_000_000


@pytest.mark.parametrize(
    ("fast", "offload"), [(True, False), (False, False), (True, True)], ids=["fast_path", "no_fast_path", "offload"]
)
def test_bulk_echo_with_linux_is_intact_and_predicted(netns: Netns, tmp_path: Path, fast: bool, offload: bool) -> None:
    path = tmp_path / "stack.toml"
    path.write_text(config(fast=fast, offload=offload))
    proc = start_stack(netns, tmp_path, "--config", str(path), "--serve", "echo")
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
    if offload:
        assert counters.get("link.gso_frames_in", 0) > 0, counters  # the kernel did send super-segments
    frames = counters["frames_in"]
    print(f"\nfast_path={fast} offload={offload}: {data} data segments, {acks} ACKs predicted of {frames} frames in")
    if fast:
        assert data > 0 and acks > 0, counters
    else:
        assert data == acks == 0, counters
