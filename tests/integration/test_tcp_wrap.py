"""Transfers with the Linux kernel whose sequence numbers cross 2**32 (RFC 9293 §3.4), both ways.

*Our* sequence numbers are placed with the ``tcp`` layer's ``initial_sequence``. The *kernel's*
are random, so a ``seqshift`` layer between ``tun`` and ``ipv4`` adds an offset to them; the
layers are ``tun, seqshift, pcap, ipv4, tcp``, so the capture shows the stack's own view and
each test proves from it that the numbers really wrapped.

Choosing the offset deterministically. Linux computes an ISN as
``siphash(saddr, daddr, sport, dport; boot secret) + (ktime_get_real_ns() >> 6)``
(net/core/secure_seq.c: ``secure_tcp_seq``/``seq_scale``): a fixed value per 4-tuple plus the
wall clock in 64 ns ticks. So a probe connection on the *same 4-tuple* (fixed ports on both
sides) and the wall-clock time it was made give the fixed part; the ISN of a later connection
on that 4-tuple is that plus its own time in 64 ns ticks. The test picks the offset that puts
the predicted ISN 5 MB below 2**32 in our view, so a 10 MB transfer crosses the wrap half-way;
a timing error of up to 0.3 s (4.7 M ticks) still crosses it, and the tests assert the
prediction error too. With a kernel client the transfer's connect() happens at a chosen instant
(a spin-wait in kpeer.py; error about 30 µs). With a kernel server the SYN-ACK's time depends on
when ``tcpstack connect`` gets its SYN out, so the probe measures launch-to-SYN-ACK and the
transfer is launched the same way (error a few ms idle, up to ~0.2 s on a busy machine; a miss is
retried, at most three attempts).
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from framework.services import pattern_bytes
from tests.integration.netns import Netns
from tests.integration.tcputil import (
    KERNEL_ADDR,
    MB,
    STACK_ADDR,
    check_log,
    closed_events,
    connect_cmd,
    file_sha256,
    kpeer,
    kserver_result,
    ns_run,
    start_kserver,
    start_stack,
    stop_stack,
    stream_sha256,
    tcp_segments,
    wrapped,
    write_stream,
)

WRAP = 2**32
BEFORE_WRAP = 5_000_000  # bytes of each 10 MB transfer that lie below 2**32
TICK_NS = 64  # Linux ISN clock: one tick per 64 ns
KERNEL_PORT = 40000  # the kernel client's fixed port (same 4-tuple for probe and transfer)
SERVER_PORT = 5001
PORT_SEED = 1234  # fixes the first ephemeral port `tcpstack connect` picks


def _config(
    path: Path, pcap: Path, *, offset: int | None = None, iss: int | None = None, port_seed: int | None = None
) -> Path:
    """``tun, [seqshift,] pcap, ipv4, tcp``: the capture sits above seqshift (the stack's view)."""
    layers = ['[[layers]]\ntype = "tun"\ndevice = "tun0"\n']
    if offset is not None:
        layers.append(f'[[layers]]\ntype = "seqshift"\noffset = {offset}\n')
    layers.append(f'[[layers]]\ntype = "pcap"\npath = "{pcap}"\nsnaplen = 128\n')
    layers.append('[[layers]]\ntype = "ipv4"\naddress = "10.0.0.2/24"\n')
    tcp = '[[layers]]\ntype = "tcp"\n'
    if iss is not None:
        tcp += f"initial_sequence = {iss}\n"
    if port_seed is not None:
        tcp += f"port_seed = {port_seed}\n"
    layers.append(tcp)
    path.write_text("\n".join(layers))
    return path


def _fixed_part(isn: int, at_ns: int) -> int:
    """The per-4-tuple constant of Linux's ISN, from one observed ISN and its wall-clock time."""
    return (isn - (at_ns // TICK_NS)) % WRAP


def _offset_for(fixed: int, at_ns: int) -> tuple[int, int]:
    """(predicted kernel ISN at *at_ns*, seqshift offset that puts it BEFORE_WRAP below 2**32)."""
    predicted = (fixed + at_ns // TICK_NS) % WRAP
    return predicted, (WRAP - BEFORE_WRAP - predicted) % WRAP


def _distance(a: int, b: int) -> int:
    d = (a - b) % WRAP
    return d if d < WRAP // 2 else d - WRAP


def test_our_sequence_numbers_cross_2_32_during_a_download(netns: Netns, tmp_path: Path) -> None:
    """RFC 9293 §3.4: with ISS = 2**32-1-5e6 our 10 MB send wraps, and curl gets the right SHA-256."""
    pcap = tmp_path / "wrap.pcap"
    iss = 4294967295 - 5_000_000
    config = _config(tmp_path / "wrap.toml", pcap, iss=iss)
    proc = start_stack(netns, tmp_path, "--config", str(config), "--serve", "http")
    out = tmp_path / "body"
    r = ns_run(
        netns,
        [
            "curl",
            "-sS",
            "--max-time",
            "60",
            "-o",
            str(out),
            "-w",
            "%{http_code}",
            f"http://{STACK_ADDR}/bytes/{10 * MB}",
        ],
        timeout=90,
    )
    assert (r.returncode, r.stdout) == (0, b"200"), r.stderr
    assert file_sha256(out) == hashlib.sha256(pattern_bytes(10 * MB)).hexdigest()
    events = stop_stack(proc, tmp_path, closed=1)
    (closed,) = closed_events(events)
    assert closed["reason"] == "normal" and closed["bytes_out"] > 10 * MB
    segs = tcp_segments(pcap)
    (syn_ack,) = [s for s in segs if s.syn and s.src == STACK_ADDR]
    assert syn_ack.seq == iss
    ours = [s.seq for s in segs if s.src == STACK_ADDR and s.length]
    assert wrapped(ours), "our data's sequence numbers never crossed 2**32"
    assert wrapped([s.ack for s in segs if s.src == KERNEL_ADDR and s.has_ack])  # and the kernel's ACKs


def test_kernel_sequence_numbers_cross_2_32_in_our_view_during_an_upload(netns: Netns, tmp_path: Path) -> None:
    """RFC 9293 §3.4: the kernel's 10 MB to our echo server crosses 2**32 in our view (seqshift) and echoes intact."""
    # 1. Probe: a SYN from 10.0.0.1:40000 to 10.0.0.2:7 (refused: nothing listens yet).
    probe_pcap = tmp_path / "probe.pcap"
    probe = start_stack(netns, tmp_path, "--pcap", str(probe_pcap), label="probe")
    r = kpeer(netns, "client", "--port", "7", "--bind-port", str(KERNEL_PORT), "--timeout", "5")
    assert r["error"] == "ECONNREFUSED", r
    stop_stack(probe, tmp_path, label="probe")
    (syn,) = [s for s in tcp_segments(probe_pcap) if s.syn and s.sport == KERNEL_PORT]
    fixed = _fixed_part(syn.seq, r["connect_ns"])

    # 2. The transfer: connect at a chosen instant with the offset that goes with it.
    at_ns = time.time_ns() + 2_000_000_000
    predicted, offset = _offset_for(fixed, at_ns)
    pcap = tmp_path / "wrap.pcap"
    config = _config(tmp_path / "wrap.toml", pcap, offset=offset)
    proc = start_stack(netns, tmp_path, "--config", str(config), "--serve", "echo")
    r = kpeer(
        netns,
        "client",
        "--port",
        "7",
        "--bind-port",
        str(KERNEL_PORT),
        "--at-ns",
        str(at_ns),
        "--send",
        str(10 * MB),
        "--seed",
        "41",
    )
    assert "error" not in r and r["recv_error"] is None and "send_error" not in r, r
    assert r["recv"] == 10 * MB and r["recv_sha"] == r["sent_sha"] == stream_sha256(10 * MB, 41)
    events = stop_stack(proc, tmp_path, closed=1)
    (closed,) = closed_events(events)
    assert (closed["reason"], closed["bytes_in"], closed["bytes_out"]) == ("normal", 10 * MB, 10 * MB)

    segs = tcp_segments(pcap)
    (syn,) = [s for s in segs if s.syn and s.src == KERNEL_ADDR]
    actual = (syn.seq - offset) % WRAP  # the kernel's real ISN
    error = _distance(actual, (predicted + (r["connect_ns"] - at_ns) // TICK_NS) % WRAP)
    print(f"\nkernel ISN prediction error: {error} (64 ns ticks)")
    assert abs(error) < 2_000_000, f"kernel ISN prediction off by {error} (probe {fixed:#x})"
    theirs = [s.seq for s in segs if s.src == KERNEL_ADDR and s.length]
    assert wrapped(theirs), f"the kernel's data never crossed 2**32 in our view (SYN at {syn.seq:#x})"
    assert wrapped([s.ack for s in segs if s.src == STACK_ADDR and s.has_ack])  # our ACKs followed


def test_both_directions_cross_2_32_on_a_tcpstack_connect_echo(netns: Netns, tmp_path: Path) -> None:
    """RFC 9293 §3.4: `tcpstack connect` echoes 10 MB through a kernel server with both sides' numbers wrapping."""
    data = write_stream(tmp_path / "in", 10 * MB, 42)
    # 1. Probe with the same 4-tuple (port_seed fixes our port): time from launch to SYN-ACK.
    probe_pcap = tmp_path / "probe.pcap"
    probe_cfg = _config(tmp_path / "probe.toml", probe_pcap, port_seed=PORT_SEED)
    server = start_kserver(netns, tmp_path, "--port", str(SERVER_PORT), "--mode", "sha", label="probe-server")
    launched = time.time_ns()
    r = ns_run(netns, connect_cmd(SERVER_PORT, "--config", str(probe_cfg), "--log-format", "json"), timeout=60)
    assert r.returncode == 0, r.stderr
    check_log(r.stderr)
    kserver_result(server, tmp_path, label="probe-server")
    segs = tcp_segments(probe_pcap)
    (syn_ack,) = [s for s in segs if s.syn and s.src == KERNEL_ADDR]
    our_port = syn_ack.dport
    syn_ack_ns = int(syn_ack.at * 1e9)
    fixed = _fixed_part(syn_ack.seq, syn_ack_ns)
    startup_ns = syn_ack_ns - launched

    # 2. The transfer, launched the same way; our ISS is fixed, the kernel's is shifted. The
    # launch-to-SYN-ACK time varies with process start-up (a few ms here); should it ever vary
    # by more than the 0.3 s margin, the attempt is repeated (at most three times).
    iss = WRAP - BEFORE_WRAP
    errors = []
    for attempt in range(3):
        server = start_kserver(netns, tmp_path, "--port", str(SERVER_PORT), "--mode", "echo", label=f"kserver{attempt}")
        _predicted, offset = _offset_for(fixed, time.time_ns() + startup_ns)
        pcap = tmp_path / f"wrap{attempt}.pcap"
        config = _config(tmp_path / "wrap.toml", pcap, offset=offset, iss=iss, port_seed=PORT_SEED)
        out = tmp_path / "out"
        r = ns_run(
            netns,
            connect_cmd(SERVER_PORT, "--config", str(config), "--log-format", "json"),
            stdin=data,
            stdout=out,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        check_log(r.stderr)
        assert file_sha256(out) == stream_sha256(10 * MB, 42)
        k = kserver_result(server, tmp_path, label=f"kserver{attempt}")
        assert (k["recv"], k["recv_sha"], k["eof"]) == (10 * MB, stream_sha256(10 * MB, 42), True)

        segs = tcp_segments(pcap)
        (syn,) = [s for s in segs if s.syn and s.src == STACK_ADDR]
        (syn_ack,) = [s for s in segs if s.syn and s.src == KERNEL_ADDR]
        assert (syn.seq, syn.sport) == (iss, our_port)
        ours = [s.seq for s in segs if s.src == STACK_ADDR and s.length]
        assert wrapped(ours), "our data's sequence numbers never crossed 2**32"
        error = _distance(syn_ack.seq, WRAP - BEFORE_WRAP)
        print(f"\nkernel ISN prediction error: {error} (64 ns ticks)")
        errors.append(error)
        if abs(error) < 4_000_000:
            break
    assert abs(errors[-1]) < 4_000_000, f"kernel ISN predictions off by {errors} (64 ns ticks)"
    theirs = [s.seq for s in segs if s.src == KERNEL_ADDR and s.length]
    assert wrapped(theirs), f"the kernel's data never crossed 2**32 in our view (SYN-ACK at {syn_ack.seq:#x})"


if __name__ == "__main__":  # pragma: no cover
    import pytest

    sys.exit(pytest.main([__file__, "-v"]))
