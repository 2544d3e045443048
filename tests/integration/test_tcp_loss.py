"""Interop with the Linux kernel when segments are lost (RFC 5681 §3.2, §4.2).

A seeded ``fault`` layer between ``tun`` and ``ipv4`` drops packets. For outbound losses the
capture sits below it (``--pcap``: what reached the kernel); for inbound losses above it (what
reached our TCP). Checksums are computed and verified in Python, as in every interop test.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tests.integration.netns import Netns
from tests.integration.tcputil import (
    ACK,
    KERNEL_ADDR,
    MB,
    STACK_ADDR,
    closed_events,
    counters_delta,
    kernel_counters,
    kpeer,
    ns_run,
    start_stack,
    stop_stack,
    stream,
    stream_sha256,
    tcp_segments,
)


def _fault_config(
    path: Path, *, drop: float, direction: str, seed: int, pcap_above: Path | None = None, tcp: str = ""
) -> Path:
    pcap = f'[[layers]]\ntype = "pcap"\npath = "{pcap_above}"\nsnaplen = 128\n\n' if pcap_above else ""
    path.write_text(
        '[[layers]]\ntype = "tun"\ndevice = "tun0"\n\n'
        f'[[layers]]\ntype = "fault"\ndrop = {drop}\ndirection = "{direction}"\nseed = {seed}\n\n'
        f"{pcap}"
        '[[layers]]\ntype = "ipv4"\naddress = "10.0.0.2/24"\n\n'
        f'[[layers]]\ntype = "tcp"\n{tcp}'
    )
    return path


def _unanswered_out_of_order(pcap: Path) -> tuple[int, list[str]]:
    """(out-of-order data segments we received from the kernel, those of them whose duplicate ACK
    is missing), from a capture above the fault layer: what our TCP received, and what it sent,
    which reached the kernel as it is (only inbound frames are dropped) and in this order.

    RFC 5681 §4.2 (a SHOULD where RFC 1122 §4.2.2.21 had a MAY): a receiver sends an immediate
    duplicate ACK when an out-of-order segment arrives. "Immediate" is measured in our own batch,
    not on a clock: the stack answers a batch of received frames at once (its output follows the
    batch in the capture), so each out-of-order segment needs a pure ACK naming RCV.NXT as it was
    when the segment arrived (the duplicate ACK, RFC 5681 §2) in the output right after its batch,
    before anything more is read. Out-of-order segments of a batch that also filled every gap are
    not required, since the cumulative ACK rightly replaces their duplicate ACKs.
    """
    segs = tcp_segments(pcap)
    syn = next(s for s in segs if s.syn and s.src == KERNEL_ADDR)
    base = (syn.seq + 1) % 2**32  # offsets below count from the kernel's first data byte
    held: dict[int, int] = {}  # out-of-order segments: start -> end
    nxt = 0  # in-order offset (RCV.NXT)
    ooo = 0
    missing: list[str] = []
    batch: list[int] = []  # RCV.NXT at the arrival of each out-of-order segment of this batch
    frame = 0  # where in the capture the first of them is
    acks: Counter[int] = Counter()  # the cumulative ACKs of the pure ACKs we sent after it
    answering = False  # our output after the batch has begun

    def settle() -> None:
        if batch and held:  # a gap is still open: each of the batch's segments needs its own ACK
            for ack, n in Counter(batch).items():
                if acks[ack] < n:
                    missing.append(f"frame {frame}: {n - acks[ack]} of {n} segments above offset {ack} unanswered")
        batch.clear()
        acks.clear()

    for s in segs:
        if s.src == KERNEL_ADDR:
            if answering:  # a new batch begins
                settle()
                answering = False
            if not s.length:
                continue
            start = (s.seq - base) % 2**32
            end = start + s.length
            if start > nxt:
                held[start] = max(end, held.get(start, 0))
                if not batch:
                    frame = s.index
                batch.append(nxt)
                ooo += 1
            elif end > nxt:
                nxt = end
                while any(a <= nxt for a in held):
                    for a in [a for a in held if a <= nxt]:
                        nxt = max(nxt, held.pop(a))
        else:  # our output: the batch before it is over
            answering = True
            if s.flags == ACK and not s.length:
                acks[(s.ack - base) % 2**32] += 1
    settle()
    return ooo, missing


def _rto_events(events: list[dict[str, Any]]) -> int:
    """Our retransmission timeouts, from the stack's own debug log (``tcp.rto``, RFC 6298 (5.4)): the
    timer's own record, where a silence in the capture would also count a stack that got no CPU."""
    return sum(e.get("event") == "tcp.rto" for e in events)


def test_out_of_order_data_gets_immediate_duplicate_acks(netns: Netns, tmp_path: Path) -> None:
    """RFC 5681 §4.2: without SACK every out-of-order segment from the kernel gets an immediate duplicate ACK
    (fast retransmit). (With SACK, beyond three in one batch the rest are one ACK whose SACK blocks say it all:
    tests/plugins/test_sack_blocks.py.)"""
    # Linux without SACK fast-retransmits on three duplicate ACKs (pure ACKs, same window). How
    # often it still waits for its RTO is not ours to bound: with 1% loss a window may lose several
    # segments, and NewReno's partial ACKs (RFC 6582) then leave it with too few duplicate ACKs to
    # go on; a retransmission may be lost too. Both depend on which packets the seeded fault layer
    # hits, which depends on how the batches fell (the scheduling). What the peer is owed is an
    # immediate duplicate ACK per out-of-order segment, in the output of the batch it came in.
    pcap = tmp_path / "loss.pcap"
    no_sack = "features = { sack = false }\n"
    config = _fault_config(tmp_path / "loss.toml", drop=0.01, direction="in", seed=3, pcap_above=pcap, tcp=no_sack)
    proc = start_stack(netns, tmp_path, "--config", str(config), "--serve", "http")
    before = kernel_counters(netns)
    body = tmp_path / "upload"
    body.write_bytes(stream(4 * MB, 51))
    r = ns_run(
        netns,
        [
            "curl",
            "-sS",
            "--max-time",
            "60",
            "--data-binary",
            f"@{body}",
            "-w",
            " %{http_code} %{time_total}",
            f"http://{STACK_ADDR}/upload",
        ],
        timeout=90,
    )
    assert r.returncode == 0, r.stderr
    digest, code, seconds = r.stdout.decode().split()
    assert (digest, code) == (stream_sha256(4 * MB, 51), "200")
    # The kernel's own counts of what it did with our ACKs (counted by the peer, whatever the scheduling).
    kernel = counters_delta(
        before,
        kernel_counters(netns),
        "TcpRetransSegs",
        "TcpExtTCPTimeouts",
        "TcpExtTCPRenoRecovery",
        "TcpExtTCPFastRetrans",
    )
    events = stop_stack(proc, tmp_path, closed=1)
    assert events[-1]["drops"].get("fault.injected", 0) >= 10  # the test did lose segments
    (closed,) = closed_events(events)
    assert closed["bytes_in"] > 4 * MB
    ooo, missing = _unanswered_out_of_order(pcap)
    print(
        f"\n{4 * MB} bytes up in {float(seconds):.2f} s; {ooo} out-of-order segments, "
        f"{len(missing)} batches short of duplicate ACKs; kernel retransmissions {kernel['TcpRetransSegs']} "
        f"({kernel['TcpExtTCPFastRetrans']} fast, in {kernel['TcpExtTCPRenoRecovery']} recoveries), "
        f"RTO expiries {kernel['TcpExtTCPTimeouts']}"
    )
    assert ooo >= 10
    # RFC 5681 §4.2: each out-of-order segment got its duplicate ACK at once (in its batch's output).
    assert not missing, f"out-of-order segments without an immediate duplicate ACK: {missing[:5]}"
    # And Linux took them as duplicate ACKs (RFC 5681 §2) and repaired losses by fast retransmit
    # (§3.2), as its own counters say.
    assert kernel["TcpExtTCPRenoRecovery"] >= 1 and kernel["TcpExtTCPFastRetrans"] >= 1, kernel


def test_we_recover_outbound_losses(netns: Netns, tmp_path: Path) -> None:
    """RFC 5681 §3.2, RFC 6582: 1% of our segments lost, the kernel still gets 2 MB intact, and we fast-retransmit."""
    pcap = tmp_path / "loss.pcap"
    config = _fault_config(tmp_path / "loss.toml", drop=0.01, direction="out", seed=4)
    args = ("--config", str(config), "--serve", "echo", "--pcap", str(pcap), "--log-level", "debug")
    proc = start_stack(netns, tmp_path, *args)
    r = kpeer(netns, "client", "--port", "7", "--send", str(2 * MB), "--seed", "52")
    assert "error" not in r and r["recv_error"] is None and "send_error" not in r, r
    assert r["recv"] == 2 * MB and r["recv_sha"] == stream_sha256(2 * MB, 52)
    events = stop_stack(proc, tmp_path, closed=1)
    assert events[-1]["drops"].get("fault.injected", 0) >= 5
    (closed,) = closed_events(events)
    total, timed_out = closed["retransmits"], _rto_events(events)
    print(f"\n{2 * MB} bytes in {r['elapsed']:.2f} s; our retransmissions {total}, RTO expiries {timed_out}")
    assert total >= 1 and timed_out <= 2
