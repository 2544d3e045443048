"""bench/segment.py and bench/conn_memory.py with tiny counts: they run, their JSON has the
documented shape and their figures are sane (positive, finite). No timing is asserted.

The benchmarks must not be fooled by a stack that loses data: with a fault layer dropping
received frames, the receive case raises instead of reporting a figure; and the frames the
synthetic peer builds are ones the stack's own parsers accept (RFC 791 §3.1 and RFC 9293 §3.1
checksums, RFC 7323 §3 timestamp option)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import inproc
from layers.ipv4.wire import Ipv4Repr
from layers.tcp.wire import TcpRepr, pseudo_base
from tcpstack.config import build_stack, config_from_dict

ROOT = Path(__file__).resolve().parents[2]
CASES = {"receive/default", "receive/none", "send/default", "send/none"}


def run_json(script: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--json", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # quiet: no log lines from the stack
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def positive(x: object) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_segment_reports_microseconds_per_segment_for_every_case() -> None:
    report = run_json("segment.py", "--segments", "200", "--warmup", "50", "--runs", "2")
    assert report["benchmark"] == "segment"
    assert report["layout"]["config_module"] == "tcpstack.config"
    assert Path(report["layout"]["root"]) == ROOT
    assert set(report["cases"]) == CASES
    for case, c in report["cases"].items():
        assert len(c["samples_us"]) == len(c["cpu_samples_us"]) == 2, case
        assert all(positive(x) for x in (*c["samples_us"], *c["cpu_samples_us"])), case
        assert c["min_us"] <= c["median_us"] <= c["max_us"], case
        assert c["segments"] >= 200, case
        # Timestamps agreed with the default plugin set: 1448 bytes per segment; none: 1460.
        assert c["payload"] == (1448 if case.endswith("default") else 1460), case


def test_segment_accepts_a_subset_of_cases_and_refuses_unknown_ones() -> None:
    report = run_json("segment.py", "--segments", "100", "--warmup", "10", "--runs", "1", "--cases", "send/none")
    assert set(report["cases"]) == {"send/none"}
    bad = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "segment.py"), "--cases", "receive/fast"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "unknown case" in bad.stderr


def test_conn_memory_reports_bytes_per_idle_connection() -> None:
    report = run_json("conn_memory.py", "--conns", "50", "--warmup", "5")
    assert report["benchmark"] == "conn_memory"
    assert set(report["results"]) == {"default", "none"}
    for features, r in report["results"].items():
        assert r["conns"] == 50
        # A connection holds at least its object, buffers and table entries: more than 1 KB,
        # and an idle one far less than 10 MB.
        assert 1_000 < r["tracemalloc_bytes_per_conn"] < 10_000_000, features
        assert math.isfinite(r["rss_bytes_per_conn"]), features
        assert positive(r["handshake_us"]), features


def test_the_peers_frames_parse_with_valid_checksums() -> None:
    """What the synthetic peer sends is a correct IPv4/TCP frame (RFC 791 §3.1, RFC 9293 §3.1),
    with the timestamp option laid out as RFC 7323 §3 says."""
    payload = bytes(range(256)) * 5 + b"abc"
    frm = inproc.frame(40000, 0xFFFFFFF0, 42, inproc.ACK, options=inproc.ts_option(7, 9), payload=payload)
    ip, rest = Ipv4Repr.parse(memoryview(frm))  # header checksum verified
    seg = TcpRepr.parse(rest, pseudo_base(ip.src, ip.dst))  # TCP checksum verified
    assert (ip.src, ip.dst) == (inproc.PEER, inproc.LOCAL)
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack) == (40000, inproc.PORT, 0xFFFFFFF0, 42)
    assert seg.ts == (7, 9) and bytes(seg.payload) == payload
    syn = inproc.frame(40000, 1, 0, inproc.SYN, options=inproc.syn_options(5))
    ip, rest = Ipv4Repr.parse(memoryview(syn))
    seg = TcpRepr.parse(rest, pseudo_base(ip.src, ip.dst))
    assert (seg.mss, seg.sack_perm, seg.ts, seg.wscale) == (inproc.LINUX_MSS, True, (5, 0), inproc.PEER_WSCALE)


def test_a_stack_that_loses_data_cannot_report_a_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a fault layer dropping 5% of what arrives, the application does not read every
    byte, and the receive benchmark says so instead of timing it."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import segment  # the module as the script runs it (with its own ``inproc``)

    # Not inproc.load(): it configures logging for the whole process (as the script should).
    layout = segment.inproc.Layout(ROOT, "tcpstack.config", config_from_dict, build_stack)
    config_dict = segment.inproc.config_dict

    def lossy(features: str, **tcp: Any) -> dict[str, Any]:
        data = config_dict(features, **tcp)
        data["layers"].insert(1, {"type": "fault", "drop": 0.05, "direction": "in", "seed": 3})
        return data

    monkeypatch.setattr(segment.inproc, "config_dict", lossy)
    with pytest.raises(RuntimeError, match="the application read"):
        segment.receive(layout, "none", 400, 0)


def test_opcount_counts_bytecodes_in_the_timed_region_only() -> None:
    """bench/opcount.py: per segment, a few thousand bytecodes and some tens of calls (the whole
    run, peer included, would be far more); the default plugin set costs more than none on the
    send path. Counts, not times: the same on any machine."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "opcount.py"), "--segments", "100", "--warmup", "20"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    cases = json.loads(out.stdout)["cases"]
    assert set(cases) == CASES
    for case, c in cases.items():
        assert c["segments"] >= 100, case
        assert 500 < c["bytecodes_per_segment"] < 50_000, case
        assert 10 < c["calls_per_segment"] < c["bytecodes_per_segment"], case
    assert cases["send/default"]["bytecodes_per_segment"] > cases["send/none"]["bytecodes_per_segment"]
