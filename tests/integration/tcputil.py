"""Helpers for the TCP interop tests against the Linux kernel (plain functions, not fixtures).

Everything here runs inside the test's own namespace (:class:`~tests.integration.netns.Netns`):
``kpeer.py`` is the kernel-side socket program, ``tcpstack up``/``tcpstack connect`` the stack.
"""

from __future__ import annotations

import hashlib
import json
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.integration.kpeer import stream, stream_sha256
from tests.integration.netns import KERNEL_ADDR, PREFIX, STACK_ADDR, Netns

KPEER = Path(__file__).with_name("kpeer.py")
MB = 1_000_000
#: The issue's size list: empty, one byte, one full segment (MSS 1460), one byte more, 10 MB, 100 MB.
SIZES = [0, 1, 1460, 1461, 10 * MB, 100 * MB]
SIZE_IDS = ["0B", "1B", "1460B", "1461B", "10MB", "100MB"]

__all__ = ["KERNEL_ADDR", "KPEER", "MB", "SIZES", "SIZE_IDS", "STACK_ADDR", "stream", "stream_sha256"]


# ---------------------------------------------------------------------- the stack


def start_stack(netns: Netns, tmp: Path, *args: str, label: str = "stack") -> subprocess.Popen[bytes]:
    """``tcpstack up`` with JSON logs (so the test can read its events) and *args*."""
    return netns.tcpstack("--log-format", "json", *args, tmp=tmp, label=label)


def check_log(text: str) -> list[dict[str, Any]]:
    """The JSON log's events; fails on a traceback or an error-level event."""
    assert "Traceback" not in text, text[-4000:]
    events = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            raise AssertionError(f"stack log line is not JSON: {line!r}") from None
        assert event.get("level") not in ("error", "critical") and "exception" not in event, event
        events.append(event)
    return events


def stop_stack(
    proc: subprocess.Popen[bytes], tmp: Path, label: str = "stack", *, closed: int = 0
) -> list[dict[str, Any]]:
    """SIGTERM ``tcpstack up``, require exit status 0 and a clean log; return the log's events.

    With *closed*, first wait (at most 15 s) until that many connections have logged
    ``tcp.closed``: a peer's last ACK may still be on its way when the client program exits.
    """
    log = tmp / f"{label}.err"
    deadline = time.monotonic() + 15
    while closed and log.read_text(errors="replace").count('"event": "tcp.closed"') < closed:
        if time.monotonic() > deadline:
            break  # the assertions on the events will say what is missing
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, (tmp / f"{label}.err").read_text()[-4000:]
    events = check_log((tmp / f"{label}.err").read_text())
    assert events and events[-1]["event"] == "stack.down"
    # Checksums are computed and verified in Python (no offload): the kernel's all passed.
    drops = events[-1]["drops"]
    assert not [k for k in drops if "checksum" in k], drops
    if drops:
        print(f"\n{label} drops: {drops}")
    return events


def wait_kernel_sockets_gone(netns: Netns, peer: str, timeout: float = 15) -> None:
    """Wait until the namespace's kernel has no TCP socket (in any state) towards *peer*
    (``"10.0.0.2:13"``): e.g. its LAST-ACK ended, so our ACK of its FIN was processed and sent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = netns.exec(["ss", "-Htan", "dst", peer], check=False, timeout=10)
        if r.returncode == 0 and not r.stdout.strip():
            return
        time.sleep(0.02)
    raise AssertionError(f"the kernel still has sockets to {peer}: {r.stdout}")


def kernel_counters(netns: Netns) -> dict[str, int]:
    """The namespace's TCP MIB counters (``nstat -az``; the kernel keeps them per namespace): what the
    kernel saw, counted by the kernel, whatever the scheduling."""
    out = netns.exec(["nstat", "-azs", "--json"]).stdout
    return {k: int(v) for k, v in json.loads(out)["kernel"].items()}


def counters_delta(before: dict[str, int], after: dict[str, int], *names: str) -> dict[str, int]:
    return {n: after.get(n, 0) - before.get(n, 0) for n in names}


def closed_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == "tcp.closed"]


def connect_cmd(port: int, *args: str, host: str = KERNEL_ADDR) -> list[str]:
    """``tcpstack connect HOST PORT`` on the namespace's tun0 as 10.0.0.2."""
    return [
        sys.executable,
        "-m",
        "tcpstack.cli",
        "connect",
        host,
        str(port),
        "--tun",
        "tun0",
        "--address",
        f"{STACK_ADDR}/{PREFIX}",
        *args,
    ]


# ---------------------------------------------------------------------- running things in the namespace


@dataclass
class Ran:
    returncode: int
    stdout: bytes
    stderr: str
    elapsed: float


def ns_run(
    netns: Netns,
    cmd: Sequence[str],
    *,
    stdin: Path | bytes | None = None,
    stdout: Path | None = None,
    timeout: float = 120,
) -> Ran:
    """Run *cmd* in the namespace; stdin from a file or bytes, stdout to a file or captured."""
    full = ["ip", "netns", "exec", netns.name, *cmd]
    stdin_f: IO[bytes] | int = subprocess.DEVNULL
    if isinstance(stdin, Path):
        stdin_f = open(stdin, "rb")
    out_f: IO[bytes] | int = open(stdout, "wb") if stdout is not None else subprocess.PIPE
    t0 = time.monotonic()
    try:
        p = subprocess.run(
            full,
            stdin=stdin_f if not isinstance(stdin, bytes) else None,
            input=stdin if isinstance(stdin, bytes) else None,
            stdout=out_f,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
    finally:
        for f in (stdin_f, out_f):
            if not isinstance(f, int):
                f.close()
    return Ran(p.returncode, p.stdout or b"", p.stderr.decode(errors="replace"), time.monotonic() - t0)


def kpeer(netns: Netns, *args: str, timeout: float = 180) -> dict[str, Any]:
    """Run ``kpeer.py`` in the namespace to completion; return its JSON result."""
    r = ns_run(netns, [sys.executable, str(KPEER), *args], timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def start_kserver(netns: Netns, tmp: Path, *args: str, label: str = "kserver") -> subprocess.Popen[bytes]:
    """Start ``kpeer.py server`` on 10.0.0.1 in the namespace; return once it listens."""
    out = tmp / f"{label}.out"
    p = netns.spawn([sys.executable, str(KPEER), "server", *args], stdout=out, stderr=tmp / f"{label}.err")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().startswith("ready"):
            return p
        if p.poll() is not None:
            raise RuntimeError(f"kernel server exited early: {(tmp / f'{label}.err').read_text()}")
        time.sleep(0.02)
    raise RuntimeError("kernel server did not become ready within 20 s")


def kserver_result(proc: subprocess.Popen[bytes], tmp: Path, label: str = "kserver", timeout: float = 60) -> Any:
    assert proc.wait(timeout=timeout) == 0, (tmp / f"{label}.err").read_text()
    return json.loads((tmp / f"{label}.out").read_text().strip().splitlines()[-1])


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_stream(path: Path, n: int, seed: int) -> Path:
    path.write_bytes(stream(n, seed))
    return path


# ---------------------------------------------------------------------- pcap


@dataclass(frozen=True, slots=True)
class Seg:
    """One TCP segment as recorded in a LINKTYPE_RAW pcap (index = position in the file)."""

    index: int
    at: float  # wall-clock seconds when the stack recorded it
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    length: int  # payload octets (from the IP total length, so snaplen truncation does not matter)

    @property
    def syn(self) -> bool:
        return bool(self.flags & 0x02)

    @property
    def fin(self) -> bool:
        return bool(self.flags & 0x01)

    @property
    def rst(self) -> bool:
        return bool(self.flags & 0x04)

    @property
    def has_ack(self) -> bool:
        return bool(self.flags & 0x10)


FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def _records(path: Path) -> list[tuple[float, bytes]]:
    """(wall-clock time, datagram) of every record of a classic LINKTYPE_RAW pcap file."""
    data = path.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", data, 0)
    assert magic == 0xA1B2C3D4 and linktype == 101, (hex(magic), linktype)
    out = []
    off = 24
    while off + 16 <= len(data):
        sec, usec, incl, _orig = struct.unpack_from("<IIII", data, off)
        out.append((sec + usec / 1e6, data[off + 16 : off + 16 + incl]))
        off += 16 + incl
    return out


def ip_packets(path: Path) -> list[tuple[str, str, int]]:
    """(source, destination, protocol) of every IPv4 datagram in the capture."""
    return [
        (".".join(map(str, p[12:16])), ".".join(map(str, p[16:20])), p[9])
        for _, p in _records(path)
        if len(p) >= 20 and p[0] >> 4 == 4
    ]


def tcp_segments(path: Path) -> list[Seg]:
    """Every unfragmented IPv4/TCP segment in a pcap written by the stack's ``pcap`` layer.

    A small parser of its own (instead of scapy) so a capture of a 10 MB transfer reads in
    well under a second.
    """
    segs: list[Seg] = []
    for index, (when, pkt) in enumerate(_records(path)):
        if len(pkt) < 40 or pkt[0] >> 4 != 4 or pkt[9] != 6:
            continue
        if int.from_bytes(pkt[6:8], "big") & 0x3FFF:
            continue  # a fragment
        ihl = (pkt[0] & 15) * 4
        total = int.from_bytes(pkt[2:4], "big")
        sport, dport, seq, ack, off_flags, window = struct.unpack_from("!HHIIHH", pkt, ihl)
        thl = (off_flags >> 12) * 4
        segs.append(
            Seg(
                index=index,
                at=when,
                src=".".join(map(str, pkt[12:16])),
                dst=".".join(map(str, pkt[16:20])),
                sport=sport,
                dport=dport,
                seq=seq,
                ack=ack,
                flags=off_flags & 0x3F,
                window=window,
                length=total - ihl - thl,
            )
        )
    return segs


def wrapped(values: Sequence[int]) -> bool:
    """Whether a run of 32-bit sequence numbers crossed 2**32: some were in the top 2**24 of
    the space and some in the bottom 2**24 (a 10 MB transfer cannot span more than that)."""
    return any(v >= 2**32 - 2**24 for v in values) and any(v < 2**24 for v in values)
