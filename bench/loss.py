"""tcpstack loss benchmark: our loss recovery against the Linux kernel's, through the same faults.

Run as root:  .venv/bin/python bench/loss.py [--size-mb 100] [--kernel-cc cubic]

It builds a network namespace of its own (removed at the end, also on failure) with a TUN
device, the kernel at 10.0.0.1 and ``tcpstack up`` at 10.0.0.2 serving http (port 80), without
TUN offload. For each fault setting (none; then 1%, 5% and 10% drop, each with 5% duplication
and 5% reordering, both directions, seed 7) the stack is started with a ``fault`` layer between
its link and IPv4 layers, and two transfers of ``--size-mb`` MB run through it:

- ours sending: the kernel downloads ``GET /bytes/N`` from our http service (bench/peer.py
  ``get``); the SHA-256 of the body is checked against the service's pattern;
- the kernel sending: the kernel POSTs N bytes to our http service, which answers the body's
  SHA-256 (bench/peer.py ``post``); checked against what was sent.

Both faults and the clocks are the same for the two senders: the fault layer sits in our stack,
so it drops, duplicates and reorders the kernel's data and our ACKs exactly as it does our data
and the kernel's ACKs. A sender's *slowdown* is its time through the faults divided by its own
time without faults, in the same run; the table gives the absolute seconds of every transfer and,
beside them, ours, the kernel's slowdown and their ratio (ours / kernel's: 1.0 means our recovery
costs what the kernel's does). The baseline without faults is short and noisy on a shared
machine, so each sender's is the best of ``--repeat`` runs (3 by default, as bench/run.py's
figures; the fastest run's counters are shown, and it is intact only if every run was); each
faulted transfer runs once. Retransmissions and
retransmission timeouts: ours from the stack's ``tcp.closed`` log line of the connection, the
kernel's from the namespace's ``Tcp: RetransSegs`` and ``TcpExt: TCPTimeouts`` before and after.

The kernel's congestion control is set per socket (``--kernel-cc``, default ``cubic``, which is
our default and Linux's): this machine's default may be another algorithm (e.g. bbr, which does
not reduce its window on loss), which would compare congestion control rather than recovery.
``--kernel-cc default`` leaves the system's choice. This is a benchmark, not a test: it asserts
nothing; a transfer that arrives corrupted is reported as such.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tcpstack.netns import STACK_ADDR, Netns  # noqa: E402
from tcpstack.services import pattern_bytes  # noqa: E402

PEER = str(ROOT / "bench" / "peer.py")
DROPS = (0.01, 0.05, 0.10)
DUPLICATE = 0.05
REORDER = 0.05
SEED = 7
PORT = 80


@dataclass(slots=True)
class Transfer:
    seconds: float
    retransmits: int
    timeouts: int
    intact: bool


def config(drop: float | None) -> str:
    """The stack's TOML: TUN, then (with faults) the fault layer, IPv4, TCP."""
    fault = ""
    if drop is not None:
        fault = (
            f'[[layers]]\ntype = "fault"\ndrop = {drop}\nduplicate = {DUPLICATE}\n'
            f'reorder = {REORDER}\nseed = {SEED}\ndirection = "both"\n\n'
        )
    return (
        '[[layers]]\ntype = "tun"\ndevice = "tun0"\n\n'
        + fault
        + f'[[layers]]\ntype = "ipv4"\naddress = "{STACK_ADDR}/24"\n\n[[layers]]\ntype = "tcp"\n'
    )


def kernel_counters(ns: Netns) -> tuple[int, int]:
    """``Tcp: RetransSegs`` (/proc/net/snmp) and ``TcpExt: TCPTimeouts`` (/proc/net/netstat) of
    the namespace."""
    out = []
    for path, group, name in (
        ("/proc/net/snmp", "Tcp:", "RetransSegs"),
        ("/proc/net/netstat", "TcpExt:", "TCPTimeouts"),
    ):
        lines = [line.split() for line in ns.exec(["cat", path]).stdout.splitlines() if line.startswith(group)]
        out.append(int(lines[1][lines[0].index(name)]))
    return out[0], out[1]


def closed_lines(log: Path) -> list[dict[str, object]]:
    """The ``tcp.closed`` events of a JSON-format stack log so far."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if '"tcp.closed"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def our_counters(log: Path, seen: int) -> tuple[int, int]:
    """Retransmissions and timeouts of the sending connection that closed after the first *seen*
    lines (its one ``tcp.closed`` line; waited for, since the close may lag the transfer)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = closed_lines(log)[seen:]
        if lines:
            return (
                sum(int(str(line.get("retransmits", 0))) for line in lines),
                sum(int(str(line.get("timeouts", 0))) for line in lines),
            )
        time.sleep(0.1)
    return -1, -1


def run_setting(
    ns: Netns, tmp: Path, drop: float | None, size: int, cc: str | None, repeat: int = 1
) -> tuple[Transfer, Transfer]:
    """One stack with this fault setting: (ours sending, the kernel sending). With *repeat* > 1
    each sender runs that many times and the fastest run is kept (its counters with it); the
    result is intact only if every run was."""
    label = "clean" if drop is None else f"drop{drop:g}"
    cfg = tmp / f"{label}.toml"
    cfg.write_text(config(drop))
    stack = ns.tcpstack("--config", str(cfg), "--serve", f"http:{PORT}", "--log-format", "json", tmp=tmp, label=label)
    log = tmp / f"{label}.err"
    want = hashlib.sha256(pattern_bytes(size)).hexdigest()
    ours_runs: list[Transfer] = []
    kernel_runs: list[Transfer] = []
    try:
        for _ in range(repeat):
            seen = len(closed_lines(log))
            r = ns.exec([sys.executable, PEER, "get", STACK_ADDR, str(PORT), str(size)], timeout=7200)
            secs, digest = r.stdout.split()
            ours_runs.append(Transfer(float(secs), *our_counters(log, seen), digest == want))

            retx, rto = kernel_counters(ns)
            args = [sys.executable, PEER, "post", STACK_ADDR, str(PORT), str(size)] + ([cc] if cc else [])
            r = ns.exec(args, timeout=7200)
            secs, mine, theirs = r.stdout.split()
            retx2, rto2 = kernel_counters(ns)
            kernel_runs.append(Transfer(float(secs), retx2 - retx, rto2 - rto, mine == theirs))
    finally:
        stack.send_signal(signal.SIGTERM)
        try:
            stack.wait(timeout=15)
        except subprocess.TimeoutExpired:  # Netns.close kills it
            pass
    return best(ours_runs), best(kernel_runs)


def best(runs: list[Transfer]) -> Transfer:
    """The fastest of *runs*, intact only if all of them were."""
    fastest = min(runs, key=lambda t: t.seconds)
    return Transfer(fastest.seconds, fastest.retransmits, fastest.timeouts, all(t.intact for t in runs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=100, help="transfer size each way (default 100 MB)")
    ap.add_argument(
        "--kernel-cc", default="cubic", help="the kernel sender's congestion control, or 'default' (default cubic)"
    )
    ap.add_argument(
        "--repeat", type=int, default=3, help="runs of each clean baseline; the fastest is kept (default 3)"
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/loss.py: needs root (network namespaces, TUN)", file=sys.stderr)
        return 1
    size = int(args.size_mb * 1_000_000)
    cc = None if args.kernel_cc == "default" else args.kernel_cc
    tmp = Path(tempfile.mkdtemp(prefix="tcpstack-loss-"))
    ns = Netns(prefix="tcps-loss")
    try:
        results: dict[float | None, tuple[Transfer, Transfer]] = {}
        for drop in (None, *DROPS):
            results[drop] = run_setting(ns, tmp, drop, size, cc, args.repeat if drop is None else 1)
            ours, kern = results[drop]
            name = "no faults" if drop is None else f"drop {drop:.0%}"
            print(f"# {name}: ours {ours.seconds:.2f} s, kernel {kern.seconds:.2f} s", file=sys.stderr, flush=True)
        base_ours, base_kern = results[None]
        print(
            f"tcpstack vs Linux kernel ({args.kernel_cc}) as senders, {args.size_mb:g} MB each way, "
            f"faults: drop + {DUPLICATE:.0%} duplicate + {REORDER:.0%} reorder, both directions, seed {SEED}"
        )
        print(f"baselines (none): best of {args.repeat} runs each; faulted runs: one each, SHA-256 checked")
        head = (
            f"{'faults':<12}{'ours s':>9}{'retx':>7}{'rto':>5}{'slow':>7}{'kernel s':>10}{'retx':>7}{'rto':>5}"
            f"{'slow':>7}{'ratio':>7}  intact"
        )
        print(head)
        for drop, (ours, kern) in results.items():
            so, sk = ours.seconds / base_ours.seconds, kern.seconds / base_kern.seconds
            name = "none" if drop is None else f"drop {drop:.0%}"
            intact = "yes" if ours.intact and kern.intact else f"ours {ours.intact}, kernel {kern.intact}"
            print(
                f"{name:<12}{ours.seconds:>9.2f}{ours.retransmits:>7}{ours.timeouts:>5}{so:>7.2f}"
                f"{kern.seconds:>10.2f}{kern.retransmits:>7}{kern.timeouts:>5}{sk:>7.2f}{so / sk:>7.2f}  {intact}"
            )
        print("ours s / kernel s: seconds of the transfer (the baseline row: the best of its runs);")
        print("retx: retransmitted segments; rto: retransmission timeouts; slow: time / own best time without faults;")
        print("ratio: our slowdown / the kernel's")
        return 0
    finally:
        ns.close()


if __name__ == "__main__":
    sys.exit(main())
