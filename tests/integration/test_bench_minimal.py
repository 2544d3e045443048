"""bench/minimal_tcp.py and bench/run.py with tiny sizes, against the Linux kernel in namespaces.

The minimal endpoint is the measuring device behind bench/run.py's "minimal" column, so it must
be a correct TCP peer for a bulk transfer: the bytes the kernel sends it arrive intact (the
SHA-256 it computes over what it took in order equals the one of what the kernel sent), and the
bytes it sends arrive intact at the kernel, both without and with TUN offload. bench/run.py
--json produces the documented keys. No speed is asserted.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.netns import STACK_ADDR, Netns
from tests.integration.tcputil import ns_run

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = ROOT / "bench" / "minimal_tcp.py"
PEER = ROOT / "bench" / "peer.py"
SIZE = 3_000_001  # odd, not a multiple of any segment size


def _records(out: Path, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        recs = [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]
        if len(recs) >= count or time.monotonic() > deadline:
            return recs
        time.sleep(0.05)


def _peer(netns: Netns, *args: str) -> list[str]:
    r = ns_run(netns, [sys.executable, str(PEER), *args], timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().split()


@pytest.mark.parametrize("offload", [False, True], ids=["plain", "offload"])
def test_minimal_endpoint_moves_bytes_intact_both_ways(netns: Netns, tmp_path: Path, offload: bool) -> None:
    out = tmp_path / "minimal.out"
    cmd = [sys.executable, str(MINIMAL), "--verify", *(["--offload"] if offload else [])]
    p = netns.spawn(cmd, stdout=out, stderr=tmp_path / "minimal.err")
    deadline = time.monotonic() + 20
    while "ready" not in out.read_text():
        assert p.poll() is None and time.monotonic() < deadline, (tmp_path / "minimal.err").read_text()
        time.sleep(0.05)

    # kernel -> minimal receiver (port 9): random bytes, the SHA-256 of what was sent.
    _, sent_digest = _peer(netns, "sendsha", STACK_ADDR, "9", str(SIZE))
    # minimal sender (port 80) -> kernel: "GET /bytes/N", the SHA-256 of the body received.
    _, got_digest = _peer(netns, "get", STACK_ADDR, "80", str(SIZE))

    received, sent = _records(out, 2)
    assert (received["role"], received["bytes"]) == ("receive", SIZE)
    assert received["sha256"] == sent_digest
    assert (sent["role"], sent["bytes"]) == ("send", SIZE)
    assert sent["sha256"] == got_digest
    for rec in (received, sent):
        assert rec["bad_checksum"] == 0, rec
    assert p.poll() is None, (tmp_path / "minimal.err").read_text()


def test_run_json_has_the_documented_keys(netns_capability: None) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--json", "--size-mb", "0.5", "--conns", "3",
         "--repeat", "1", "--segments", "100", "--segment-runs", "1", "--flows", "3", "--workers-seconds", "1"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import run
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert tuple(report) == run.JSON_KEYS
    assert report["benchmark"] == "run"
    assert (report["size_mb"], report["conns"], report["repeat"]) == (0.5, 3, 1)
    steal = report["steal_percent"]
    assert list(steal) == ["ours_plain", "ours_offload", "minimal", "kernel", "workers"], steal
    assert all(0 <= v <= 100 for v in steal.values()), steal

    def positive(x: object) -> bool:
        return isinstance(x, int | float) and math.isfinite(x) and x > 0

    for mode in ("plain", "offload"):
        for direction in ("kernel_to_peer", "peer_to_kernel"):
            fig, ratio = report["figures"][mode][direction], report["ratios"][mode][direction]
            assert set(fig) == {"ours", "minimal", "kernel"}
            assert all(positive(v) for v in fig.values()), fig
            assert ratio["ours_vs_minimal"] == pytest.approx(fig["ours"] / fig["minimal"])
            assert ratio["ours_vs_kernel"] == pytest.approx(fig["ours"] / fig["kernel"])
        checks = report["minimal_checks"][mode]
        assert checks["connections"] == 2  # one each way, best of 1
        assert checks["bad_checksum"] == 0
    conns = report["figures"]["connections"]
    assert positive(conns["ours"]) and positive(conns["kernel"])
    assert report["ratios"]["connections"]["ours_vs_kernel"] == pytest.approx(conns["ours"] / conns["kernel"])
    assert set(report["segment_us"]) == {"receive/default", "receive/none", "send/default", "send/none"}
    assert all(positive(v) for v in report["segment_us"].values())
    workers = report["workers"]
    assert (workers["flows"], workers["seconds"]) == (3, 1)
    for direction in ("kernel_to_peer", "peer_to_kernel"):
        one, two = workers["bytes"]["one"][direction], workers["bytes"]["two"][direction]
        assert positive(one) and positive(two)
        assert workers["two_vs_one"][direction] == pytest.approx(two / one)
        assert workers["mb_per_s"]["two"][direction] == pytest.approx(two / 1e6)
