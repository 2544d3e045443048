"""tcpstack benchmark: our stack, a minimal Python TCP endpoint and the Linux kernel, in one run.

Run as root:  .venv/bin/python bench/run.py [--size-mb 100] [--conns 2000] [--repeat 3] [--flows 8]
                  [--workers-seconds 5] [--json]

It builds three network namespaces of its own (removed at the end, also on failure):

- ``tun``: a TUN device with the kernel at 10.0.0.1 and, in turn, ``tcpstack up`` (discard on
  port 9, http on port 80), the same with ``--offload``, and bench/minimal_tcp.py (the same two
  ports) without and with offload, at 10.0.0.2;
- ``a`` and ``b``: joined by a veth pair (10.9.0.1 / 10.9.0.2), kernel to kernel.

and measures, with the same kernel-side client (bench/peer.py) in every case:

- bulk kernel -> peer: the client sends N MB to a server that discards it (our discard service,
  the minimal receiver, or a kernel sink), timed until the server has closed after the client's FIN;
- bulk peer -> kernel: the client downloads N MB (our http service ``GET /bytes/N``, the minimal
  sender, or a kernel source);
- sequential connections: connect, FIN, wait for the server's FIN, close; connections per second
  (ours and the kernel's; the minimal endpoint is a bulk-transfer device only);
- both bulk transfers again with TUN offload (checksum and segmentation offload), ours and the
  minimal endpoint's, against the same kernel figures (the veth pair offloads anyway);
- ``bench/segment.py``'s µs per segment in process (run as a subprocess after the rest, median
  of ``--segment-runs`` runs of ``--segments`` segments).

The minimal endpoint (bench/minimal_tcp.py) verifies and computes every checksum with the
function our stack uses, so it is the physical limit of Python on this machine: the ratios
ours/minimal say how much of it we reach, ours/kernel how far Python is from the kernel. Each
figure is the best of ``--repeat`` rounds; a round measures every configuration once, in turn
(ours, ours with offload, the minimal endpoint both ways, the kernel, then 1 and 2 workers), so
a slow spell of a shared machine falls on all of them alike rather than on one figure. The
minimal endpoint's counters (``minimal_checks``) are summed over the rounds.

Workers: ``tcpstack up`` (one process) and ``tcpstack up --workers 2`` on the same multi-queue
TUN device, without offload, each with ``--flows`` (8) parallel flows each way (bench/flows.py:
one kernel-side process per flow, all started together), aggregate bytes moved in a fixed
``--workers-seconds``, the most of the ``--repeat`` rounds. ``--json``'s ``workers`` holds ``flows``,
``seconds``, ``bytes`` (``one``/``two`` -> direction -> bytes moved), ``mb_per_s`` (the same as
MB/s) and ``two_vs_one`` (direction -> the ratio of bytes moved).

The machine may be a virtual one whose host takes CPU time away (``steal`` in ``/proc/stat``):
``--json``'s ``steal_percent`` gives, for each part of a round (``ours_plain``,
``ours_offload``, ``minimal``, ``kernel``, ``workers``), the share of all CPU time the host took
while it ran, over all rounds, and the table prints it. A part with much steal measured a slower machine than the
others did: compare runs, and their ratios, with that in mind.
This is a benchmark, not a test: it asserts nothing about speed. ``--json`` prints the
report as JSON (keys in :data:`JSON_KEYS`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import framework.checksum  # noqa: E402
from tcpstack.netns import STACK_ADDR, Netns  # noqa: E402

PEER = str(ROOT / "bench" / "peer.py")
MINIMAL = str(ROOT / "bench" / "minimal_tcp.py")
SEGMENT = str(ROOT / "bench" / "segment.py")
FLOWS = str(ROOT / "bench" / "flows.py")

#: The report's top-level keys (``--json``); tests/integration/test_bench_run.py checks them.
JSON_KEYS = (
    "benchmark",
    "date",
    "python",
    "checksum_module",
    "size_mb",
    "conns",
    "repeat",
    "figures",
    "ratios",
    "minimal_checks",
    "segment_us",
    "workers",
    "steal_percent",
)
#: Directions: the kernel sends to the peer (ours, minimal, kernel sink), or the peer sends.
DIRECTIONS = ("kernel_to_peer", "peer_to_kernel")
MODES = ("plain", "offload")
WORKER_RUNS = (("one", ()), ("two", ("--workers", "2")))


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class VethPair:
    """Two namespaces joined by a veth pair: a=10.9.0.1, b=10.9.0.2."""

    def __init__(self) -> None:
        tag = f"{os.getpid()}"
        self.a, self.b = f"tcps-bench-a-{tag}", f"tcps-bench-b-{tag}"
        self.procs: list[subprocess.Popen[bytes]] = []
        sh("ip", "netns", "add", self.a)
        sh("ip", "netns", "add", self.b)
        try:
            sh(
                "ip",
                "link",
                "add",
                "veth-a",
                "netns",
                self.a,
                "type",
                "veth",
                "peer",
                "name",
                "veth-b",
                "netns",
                self.b,
            )
            for ns, dev, addr in ((self.a, "veth-a", "10.9.0.1/24"), (self.b, "veth-b", "10.9.0.2/24")):
                sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
                sh("ip", "netns", "exec", ns, "ip", "addr", "add", addr, "dev", dev)
                sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
        except BaseException:
            self.close()
            raise

    def serve(self, kind: str, port: int) -> None:
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", self.b, sys.executable, PEER, kind, str(port)]))

    def client(self, *args: str) -> float:
        out = subprocess.run(
            ["ip", "netns", "exec", self.a, sys.executable, PEER, *args], check=True, capture_output=True, text=True
        )
        return float(out.stdout.strip())

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class Steal:
    """The share of CPU time the hypervisor took (``/proc/stat``'s ``steal``), per part of the
    run, over all the rounds."""

    def __init__(self) -> None:
        self._ticks: dict[str, list[int]] = {}  # part -> [steal, all]
        self._name = ""
        self._start: list[int] = []

    @staticmethod
    def _read() -> list[int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]  # user .. steal
        return fields + [0] * (8 - len(fields))

    def part(self, name: str) -> None:
        """End the current part (if any) and start *name*."""
        self.end()
        self._name, self._start = name, self._read()

    def end(self) -> None:
        if self._name:
            delta = [b - a for a, b in zip(self._start, self._read(), strict=True)]
            ticks = self._ticks.setdefault(self._name, [0, 0])
            ticks[0] += delta[7]
            ticks[1] += sum(delta)
            self._name = ""

    @property
    def percent(self) -> dict[str, float]:
        return {name: round(100 * st / max(1, total), 1) for name, (st, total) in self._ticks.items()}


def stop(p: subprocess.Popen[bytes]) -> None:
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def start_minimal(ns: Netns, tmp: Path, offload: bool) -> subprocess.Popen[bytes]:
    """bench/minimal_tcp.py on the namespace's TUN device; returns once it has opened it."""
    label = "minimal-offload" if offload else "minimal"
    out = tmp / f"{label}.out"
    p = ns.spawn(
        [sys.executable, MINIMAL, *(["--offload"] if offload else [])], stdout=out, stderr=tmp / f"{label}.err"
    )
    deadline = time.monotonic() + 20
    while "ready" not in out.read_text():
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"minimal_tcp.py did not start: {(tmp / f'{label}.err').read_text()}")
        time.sleep(0.05)
    return p


def minimal_counters(out: Path) -> dict[str, int]:
    """The minimal endpoint's counters summed over its connections (each prints a JSON line)."""
    total = {"connections": 0, "out_of_order": 0, "bad_checksum": 0, "timeouts": 0}
    for line in out.read_text().splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            total["connections"] += 1
            for key in ("out_of_order", "bad_checksum", "timeouts"):
                total[key] += rec[key]
    return total


def segment_medians(segments: int, runs: int) -> dict[str, float]:
    """bench/segment.py's median µs per segment, case by case (wall clock)."""
    out = subprocess.run(
        [sys.executable, SEGMENT, "--json", "--segments", str(segments), "--runs", str(runs),
         "--warmup", str(min(2000, segments))],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    cases: dict[str, dict[str, Any]] = json.loads(out.stdout)["cases"]
    return {case: round(c["median_us"], 2) for case, c in cases.items()}


def workers_round(ns: Netns, tmp: Path, flows: int, seconds: float, moved: dict[str, dict[str, int]]) -> None:
    """One round of 1 vs 2 workers: bytes *flows* parallel flows move in *seconds*, each way; the
    most each configuration moved in any round is kept in *moved*."""
    for label, extra in WORKER_RUNS:
        stack = ns.tcpstack(*extra, "--serve", "discard:9", "--serve", "http:80", tmp=tmp, label=f"workers-{label}")
        try:
            for direction, kind, port in (("kernel_to_peer", "send", "9"), ("peer_to_kernel", "recv", "80")):
                out = ns.exec([sys.executable, FLOWS, kind, STACK_ADDR, port, str(flows), str(seconds)]).stdout
                best_so_far = moved.setdefault(label, {}).get(direction, 0)
                moved[label][direction] = max(best_so_far, json.loads(out)["bytes"])
        finally:
            stop(stack)


def workers_report(flows: int, seconds: float, moved: dict[str, dict[str, int]]) -> dict[str, Any]:
    return {
        "flows": flows,
        "seconds": seconds,
        "bytes": moved,
        "mb_per_s": {k: {d: n / seconds / 1e6 for d, n in v.items()} for k, v in moved.items()},
        "two_vs_one": {d: moved["two"][d] / moved["one"][d] for d in DIRECTIONS},
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    size = int(args.size_mb * 1_000_000)
    n, repeat = args.conns, args.repeat
    tmp = Path(tempfile.mkdtemp(prefix="tcpstack-bench-"))
    # Seconds per figure, one entry per round; the least is kept (rates: the most).
    times: dict[str, dict[str, dict[str, list[float]]]] = {m: {d: {} for d in DIRECTIONS} for m in MODES}
    conn_times: dict[str, list[float]] = {"ours": [], "kernel": []}
    moved: dict[str, dict[str, int]] = {}
    checks: dict[str, Any] = {m: {} for m in MODES}
    ns = Netns(prefix="tcps-bench")
    veth = None
    steal = Steal()
    try:

        def peer(*a: str) -> float:
            r = ns.exec([sys.executable, PEER, *a], timeout=600)
            return float(r.stdout.strip())

        def bulk(mode: str, who: str, client: Callable[..., float], host: str) -> None:
            times[mode]["kernel_to_peer"].setdefault(who, []).append(client("send", host, "9", str(size)))
            times[mode]["peer_to_kernel"].setdefault(who, []).append(client("recv", host, "80", str(size)))

        veth = VethPair()
        veth.serve("sink", 9)
        veth.serve("source", 80)
        time.sleep(0.5)
        # Rounds: every configuration measured once per round, in turn, so that a slow spell of
        # the machine (another tenant, the host's steal) falls on all of them alike.
        for _ in range(repeat):
            steal.part("ours_plain")
            stack = ns.tcpstack("--serve", "discard:9", "--serve", "http:80", tmp=tmp)
            try:
                bulk("plain", "ours", peer, STACK_ADDR)
                conn_times["ours"].append(peer("conns", STACK_ADDR, "9", str(n)))
            finally:
                stop(stack)
            steal.part("ours_offload")
            stack = ns.tcpstack("--offload", "--serve", "discard:9", "--serve", "http:80", tmp=tmp, label="offload")
            try:
                bulk("offload", "ours", peer, STACK_ADDR)
            finally:
                stop(stack)
            steal.part("minimal")
            for mode in MODES:
                minimal = start_minimal(ns, tmp, mode == "offload")
                try:
                    bulk(mode, "minimal", peer, STACK_ADDR)
                finally:
                    stop(minimal)
                counted = minimal_counters(tmp / ("minimal-offload.out" if mode == "offload" else "minimal.out"))
                for key, value in counted.items():
                    checks[mode][key] = checks[mode].get(key, 0) + value
            steal.part("kernel")
            bulk("plain", "kernel", veth.client, "10.9.0.2")  # the veth pair offloads anyway: one kernel figure
            conn_times["kernel"].append(veth.client("conns", "10.9.0.2", "9", str(n)))
            steal.part("workers")
            workers_round(ns, tmp, args.flows, args.workers_seconds, moved)
        steal.end()
    finally:
        if veth is not None:
            veth.close()
        ns.close()
    figures: dict[str, Any] = {
        m: {d: {who: size / min(ts) / 1e6 for who, ts in times[m][d].items()} for d in DIRECTIONS} for m in MODES
    }
    for d in DIRECTIONS:
        figures["offload"][d]["kernel"] = figures["plain"][d]["kernel"]
    figures["connections"] = {who: n / min(ts) for who, ts in conn_times.items()}
    workers = workers_report(args.flows, args.workers_seconds, moved)
    ratios: dict[str, Any] = {
        m: {
            d: {
                "ours_vs_minimal": figures[m][d]["ours"] / figures[m][d]["minimal"],
                "ours_vs_kernel": figures[m][d]["ours"] / figures[m][d]["kernel"],
            }
            for d in DIRECTIONS
        }
        for m in MODES
    }
    ratios["connections"] = {"ours_vs_kernel": figures["connections"]["ours"] / figures["connections"]["kernel"]}
    report = {
        "benchmark": "run",
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "checksum_module": framework.checksum.__file__,
        "size_mb": args.size_mb,
        "conns": n,
        "repeat": repeat,
        "figures": figures,
        "ratios": ratios,
        "minimal_checks": checks,
        "segment_us": segment_medians(args.segments, args.segment_runs),
        "workers": workers,
        "steal_percent": steal.percent,
    }
    assert tuple(report) == JSON_KEYS
    return report


def print_table(r: dict[str, Any]) -> None:
    f, q = r["figures"], r["ratios"]
    print(
        f"tcpstack vs a minimal Python TCP endpoint vs the Linux kernel over veth, {r['date']} "
        f"({r['size_mb']:g} MB bulk, {r['conns']} connections, best of {r['repeat']}; Python {r['python']})"
    )
    print(f"{'figure':<38}{'tcpstack':>10}{'minimal':>10}{'kernel':>10}{'ours/minimal':>14}{'ours/kernel':>13}")
    names = {"kernel_to_peer": "bulk kernel -> peer", "peer_to_kernel": "bulk peer -> kernel"}
    for m in MODES:
        for d in DIRECTIONS:
            v, x = f[m][d], q[m][d]
            name = f"{names[d]}{', offload' if m == 'offload' else ''} (MB/s)"
            print(
                f"{name:<38}{v['ours']:>10.1f}{v['minimal']:>10.1f}{v['kernel']:>10.1f}"
                f"{x['ours_vs_minimal']:>14.3f}{x['ours_vs_kernel']:>13.3f}"
            )
    c = f["connections"]
    print(f"{'sequential connections (conn/s)':<38}{c['ours']:>10.0f}{'-':>10}{c['kernel']:>10.0f}{'-':>14}"
          f"{q['connections']['ours_vs_kernel']:>13.3f}")  # fmt: skip
    for m, k in r["minimal_checks"].items():
        print(
            f"minimal endpoint, {m}: {k['connections']} connections, {k['out_of_order']} out-of-order, "
            f"{k['bad_checksum']} bad checksums, {k['timeouts']} go-back-N timeouts"
        )
    print("bench/segment.py µs per segment (median): " + ", ".join(f"{k} {v:.2f}" for k, v in r["segment_us"].items()))
    w = r["workers"]
    for d in DIRECTIONS:
        one, two = w["mb_per_s"]["one"][d], w["mb_per_s"]["two"][d]
        print(
            f"1 vs 2 workers, {w['flows']} parallel flows for {w['seconds']:g} s, {names[d]}: "
            f"{one:.1f} vs {two:.1f} MB/s, two/one {w['two_vs_one'][d]:.2f}"
        )
    print("CPU time taken by the host (steal), %: " + ", ".join(f"{k} {v:g}" for k, v in r["steal_percent"].items()))
    print(f"checksum: {r['checksum_module']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=100, help="bulk transfer size (default 100 MB)")
    ap.add_argument("--conns", type=int, default=2000, help="sequential connections per run (default 2000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is kept (default 3)")
    ap.add_argument("--segments", type=int, default=5000, help="bench/segment.py --segments (default 5000)")
    ap.add_argument("--segment-runs", type=int, default=3, help="bench/segment.py --runs (default 3)")
    ap.add_argument("--flows", type=int, default=8, help="parallel flows each way for 1 vs 2 workers (default 8)")
    ap.add_argument(
        "--workers-seconds", type=float, default=5.0, help="seconds each 1 vs 2 workers run lasts (default 5)"
    )
    ap.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/run.py: needs root (network namespaces, TUN)", file=sys.stderr)
        return 1
    if args.flows < 1 or not args.workers_seconds > 0:
        ap.error("--flows must be at least 1 and --workers-seconds positive")
    if args.size_mb <= 0 or args.conns < 1 or args.repeat < 1 or args.segments < 1 or args.segment_runs < 1:
        ap.error("--size-mb must be positive; --conns, --repeat, --segments and --segment-runs at least 1")
    report = measure(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
