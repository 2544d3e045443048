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
the predicted ISN 5 MB below 2**32, so a 10 MB transfer crosses the wrap half-way; a timing
error of up to 0.3 s (4.7 M ticks) still crosses it. With a kernel client, the client is started
first and its connect() happens at a chosen instant (a spin-wait in kpeer.py; error about 30 µs),
whenever the stack comes up (until it does, the kernel sends the same SYN again). With a kernel
server the SYN-ACK's time depends on when ``tcpstack connect`` gets its SYN out, so the program
imports everything and builds its stack first, then waits for a chosen instant to connect; a probe
started the same way measures instant-to-SYN-ACK (about 15 ms), and the echo is 20 MB, so a
prediction off by up to 0.64 s still wraps. No step depends on how fast a program starts, so a
loaded machine cannot make the numbers miss the wrap, and nothing is retried.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

from tcpstack.services import pattern_bytes
from tests.integration.netns import Netns
from tests.integration.tcputil import (
    KERNEL_ADDR,
    KPEER,
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
AT_MARGIN_NS = 5_000_000_000  # for a client program to start (and build its stack) before the instant it connects


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


def _offset_for(fixed: int, at_ns: int, before: int = BEFORE_WRAP) -> tuple[int, int]:
    """(predicted kernel ISN at *at_ns*, seqshift offset that puts it *before* octets below 2**32)."""
    predicted = (fixed + at_ns // TICK_NS) % WRAP
    return predicted, (WRAP - before - predicted) % WRAP


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

    # 2. The transfer: connect at a chosen instant with the offset that goes with it. The client is
    # started first and waits for the instant on its own, so our start-up time does not matter: should
    # the stack come up after the instant, the kernel sends the same SYN (same ISN) again until it does.
    at_ns = time.time_ns() + AT_MARGIN_NS
    predicted, offset = _offset_for(fixed, at_ns)
    pcap = tmp_path / "wrap.pcap"
    config = _config(tmp_path / "wrap.toml", pcap, offset=offset)
    args = ["--port", "7", "--bind-port", str(KERNEL_PORT), "--at-ns", str(at_ns), "--send", str(10 * MB)]
    client = netns.spawn(
        [sys.executable, str(KPEER), "client", *args, "--seed", "41"],
        stdout=tmp_path / "client.out",
        stderr=tmp_path / "client.err",
    )
    proc = start_stack(netns, tmp_path, "--config", str(config), "--serve", "echo")
    assert client.wait(timeout=180) == 0, (tmp_path / "client.err").read_text()
    r = json.loads((tmp_path / "client.out").read_text().strip().splitlines()[-1])
    assert "error" not in r and r["recv_error"] is None and "send_error" not in r, r
    late = (r["connect_ns"] - at_ns) / 1e9  # more than 0.3 s would miss the wrap: the client was not ready
    assert r["recv"] == 10 * MB and r["recv_sha"] == r["sent_sha"] == stream_sha256(10 * MB, 41)
    events = stop_stack(proc, tmp_path, closed=1)
    (closed,) = closed_events(events)
    assert (closed["reason"], closed["bytes_in"], closed["bytes_out"]) == ("normal", 10 * MB, 10 * MB)

    segs = tcp_segments(pcap)
    syns = [s for s in segs if s.syn and s.src == KERNEL_ADDR]
    assert syns and len({s.seq for s in syns}) == 1, syns  # the same SYN, however often the kernel sent it
    syn = syns[0]
    actual = (syn.seq - offset) % WRAP  # the kernel's real ISN
    error = _distance(actual, (predicted + (r["connect_ns"] - at_ns) // TICK_NS) % WRAP)
    print(f"\nkernel ISN prediction error: {error} (64 ns ticks), client {late:.3f} s late")
    theirs = [s.seq for s in segs if s.src == KERNEL_ADDR and s.length]
    assert wrapped(theirs), f"the kernel's data never crossed 2**32 in our view (SYN at {syn.seq:#x}, {late=})"
    assert wrapped([s.ack for s in segs if s.src == STACK_ADDR and s.has_ack])  # our ACKs followed


#: ``tcpstack connect ARGS`` that opens its connection at a chosen wall-clock instant: the program's imports
#: and the building of its stack on the TUN device (the slow and, on a loaded machine, widely varying part
#: of its start-up) happen before it, so only sending the SYN lies between the instant and the kernel's
#: SYN-ACK. (It waits inside the CLI's own ``_open``, the step that builds the stack.)
CONNECT_AT = """
import sys, time
import tcpstack.cli as cli
at_ns = int(sys.argv[1])
build = cli._open
def _open(args):
    opened = build(args)
    while (left := at_ns - time.time_ns()) > 2_000_000:
        time.sleep((left - 1_000_000) / 1e9)
    while time.time_ns() < at_ns:
        pass
    return opened
cli._open = _open
sys.exit(cli.main(sys.argv[2:]))
"""
ECHO = 20 * MB  # with the kernel's ISN 10 MB below 2**32 the prediction may be off by 0.64 s either way


def _connect_at(at_ns: int, config: Path) -> list[str]:
    cmd = connect_cmd(SERVER_PORT, "--config", str(config), "--log-format", "json")
    assert cmd[1:3] == ["-m", "tcpstack.cli"]
    return [sys.executable, "-c", CONNECT_AT, str(at_ns), *cmd[3:]]


def test_both_directions_cross_2_32_on_a_tcpstack_connect_echo(netns: Netns, tmp_path: Path) -> None:
    """RFC 9293 §3.4: `tcpstack connect` echoes 20 MB through a kernel server with both sides' numbers wrapping."""
    data = write_stream(tmp_path / "in", ECHO, 42)
    # 1. Probe with the same 4-tuple (port_seed fixes our port): the time from the chosen instant to the
    # kernel's SYN-ACK, and the fixed part of the kernel's ISN.
    probe_pcap = tmp_path / "probe.pcap"
    probe_cfg = _config(tmp_path / "probe.toml", probe_pcap, port_seed=PORT_SEED)
    server = start_kserver(netns, tmp_path, "--port", str(SERVER_PORT), "--mode", "sha", label="probe-server")
    at_ns = time.time_ns() + AT_MARGIN_NS
    r = ns_run(netns, _connect_at(at_ns, probe_cfg), timeout=60)
    assert r.returncode == 0, r.stderr
    check_log(r.stderr)
    kserver_result(server, tmp_path, label="probe-server")
    segs = tcp_segments(probe_pcap)
    (syn_ack,) = [s for s in segs if s.syn and s.src == KERNEL_ADDR]
    our_port = syn_ack.dport
    syn_ack_ns = int(syn_ack.at * 1e9)
    fixed = _fixed_part(syn_ack.seq, syn_ack_ns)
    startup_ns = syn_ack_ns - at_ns

    # 2. The transfer, started the same way; our ISS is fixed, the kernel's is shifted.
    iss = WRAP - ECHO // 2
    server = start_kserver(netns, tmp_path, "--port", str(SERVER_PORT), "--mode", "echo")
    at_ns = time.time_ns() + AT_MARGIN_NS
    _predicted, offset = _offset_for(fixed, at_ns + startup_ns, before=ECHO // 2)
    pcap = tmp_path / "wrap.pcap"
    config = _config(tmp_path / "wrap.toml", pcap, offset=offset, iss=iss, port_seed=PORT_SEED)
    out = tmp_path / "out"
    r = ns_run(netns, _connect_at(at_ns, config), stdin=data, stdout=out, timeout=180)
    assert r.returncode == 0, r.stderr
    check_log(r.stderr)
    assert file_sha256(out) == stream_sha256(ECHO, 42)
    k = kserver_result(server, tmp_path)
    assert (k["recv"], k["recv_sha"], k["eof"]) == (ECHO, stream_sha256(ECHO, 42), True)

    segs = tcp_segments(pcap)
    (syn,) = [s for s in segs if s.syn and s.src == STACK_ADDR]
    syn_acks = [s for s in segs if s.syn and s.src == KERNEL_ADDR]
    assert len({s.seq for s in syn_acks}) == 1, syn_acks  # the same SYN-ACK, however often it came
    assert (syn.seq, syn.sport) == (iss, our_port)
    ours = [s.seq for s in segs if s.src == STACK_ADDR and s.length]
    assert wrapped(ours), "our data's sequence numbers never crossed 2**32"
    error = _distance(syn_acks[0].seq, WRAP - ECHO // 2)
    print(f"\nkernel ISN prediction error: {error} (64 ns ticks), start-up {startup_ns / 1e6:.0f} ms")
    theirs = [s.seq for s in segs if s.src == KERNEL_ADDR and s.length]
    assert wrapped(theirs), f"the kernel's data never crossed 2**32 in our view (prediction off by {error} ticks)"


if __name__ == "__main__":  # pragma: no cover
    import pytest

    sys.exit(pytest.main([__file__, "-v"]))
