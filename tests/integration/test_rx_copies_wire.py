"""Receiving with fewer copies against the Linux kernel over TUN (issue 11 item 3): the kernel sends
bulk data to an embedded stack (tests/integration/rx_app.py) whose driver reads every frame into
one reused buffer; a streams application (StreamReader fed views of the receive buffer) and an
``asyncio.BufferedProtocol`` application (the receive buffer copies into its own buffer) get every
byte intact (SHA-256), without and with TUN offload (64 KB super-segments)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.netns import Netns
from tests.integration.tcputil import kpeer, stream_sha256

APP = Path(__file__).with_name("rx_app.py")
SIZE = 20_000_000


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=20)


@pytest.mark.parametrize("offload", [False, True], ids=["plain", "offload"])
def test_the_kernel_sends_bulk_data_to_stream_and_buffered_applications(
    netns: Netns, tmp_path: Path, offload: bool
) -> None:
    out, err = tmp_path / "app.out", tmp_path / "app.err"
    cmd = [sys.executable, str(APP), str(tmp_path / "ctl.sock"), *(["--offload"] if offload else [])]
    proc = netns.spawn(cmd, stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while "ready" not in out.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, "the application did not start listening"
            time.sleep(0.05)
        assert proc.poll() is None, err.read_text()
        for port, seed in ((9001, 5), (9002, 6)):  # the StreamReader app, then the BufferedProtocol app
            r = kpeer(netns, "client", "--port", str(port), "--send", str(SIZE), "--seed", str(seed))
            assert "error" not in r and r["recv_error"] is None and "send_error" not in r, r
            assert r["sent"] == SIZE
            assert r["head"] == f"{SIZE} {stream_sha256(SIZE, seed)}\n", (port, r["head"])
    finally:
        code = _stop(proc)
    assert code == 0, err.read_text()
