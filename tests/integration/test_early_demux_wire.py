"""Early demux against the Linux kernel over TUN (layers/tcp/demux.py; docs/architecture.md,
"Early demux"): a bulk echo both ways arrives intact, and the kernel's in-order data and its
ACKs of ours are taken straight from the link (``tcp.early_demux``), each also counted as the
pipeline counts it (``frames_in``, ``tcp.fast_path``, ``tcp.fast_ack``). With
``early_demux = false``, or a pcap layer between the link and IPv4 (which must see every
frame), the same transfer is intact and early demux is never taken; the capture then holds
every frame."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.netns import STACK_ADDR, Netns
from tests.integration.tcputil import kpeer, start_stack, stop_stack, stream_sha256

SIZE = 8_000_000


def config(*, early: bool, offload: bool, pcap: Path | None) -> str:
    """tun (with or without offload), [pcap,] ipv4, tcp with early demux on or off."""
    text = f'[[layers]]\ntype = "tun"\ndevice = "tun0"\noffload = {str(offload).lower()}\n\n'
    if pcap is not None:
        text += f'[[layers]]\ntype = "pcap"\npath = "{pcap}"\n\n'
    text += f'[[layers]]\ntype = "ipv4"\naddress = "{STACK_ADDR}/24"\n\n'
    return text + f'[[layers]]\ntype = "tcp"\nearly_demux = {str(early).lower()}\n'


@pytest.mark.parametrize(
    ("early", "offload", "pcap"),
    [(True, False, False), (True, True, False), (False, False, False), (True, False, True)],
    ids=["early_demux", "offload", "switched_off", "pcap"],
)
def test_bulk_echo_with_linux_is_intact_and_early_demuxed(
    netns: Netns, tmp_path: Path, early: bool, offload: bool, pcap: bool
) -> None:
    path = tmp_path / "stack.toml"
    capture = tmp_path / "cap.pcap" if pcap else None
    path.write_text(config(early=early, offload=offload, pcap=capture))
    proc = start_stack(netns, tmp_path, "--config", str(path), "--serve", "echo")
    try:
        r = kpeer(netns, "client", "--port", "7", "--send", str(SIZE), "--seed", "5")
        assert "error" not in r and r["recv_error"] is None and "send_error" not in r, r
        assert (r["sent"], r["recv"]) == (SIZE, SIZE)
        assert r["recv_sha"] == r["sent_sha"] == stream_sha256(SIZE, 5)
    finally:
        events = stop_stack(proc, tmp_path, closed=1)
    (closed,) = [e for e in events if e["event"] == "tcp.closed"]
    assert closed["reason"] == "normal" and (closed["bytes_in"], closed["bytes_out"]) == (SIZE, SIZE)
    counters = events[-1]["events"]
    taken = counters.get("tcp.early_demux", 0)
    data, acks = counters.get("tcp.fast_path", 0), counters.get("tcp.fast_ack", 0)
    frames = counters["frames_in"]
    print(f"\nearly={early} offload={offload} pcap={pcap}: {taken} of {frames} frames early-demuxed ({data}, {acks})")
    assert data > 0 and acks > 0, counters  # header prediction runs on every variant
    if early and not pcap:
        # Most frames in are the kernel's in-order data and ACKs: all predicted, all taken early.
        assert taken > frames // 2, counters
        assert taken <= data + acks, counters
    else:
        assert taken == 0, counters
    if capture is not None:
        assert capture.stat().st_size > SIZE  # the capture saw the data (and more: headers)
