"""Sequential connections per second against ``tcpstack up --serve discard:9``, live over TUN,
in configurations interleaved in one run, and optionally a py-spy profile of the stack.

Run as root:
    .venv/bin/python bench/conn_rate.py [--conns 500] [--repeat 3] [--loops uvloop,asyncio]
        [--log-levels info,warning] [--root CHECKOUT] [--profile DIR] [--json]

A namespace (tcpstack.netns.Netns) holds the TUN device; for each configuration (event loop x
log level x checkout) ``tcpstack up`` starts in it, the kernel-side client (bench/peer.py
``conns``) makes ``--conns`` sequential connections (connect, FIN, wait for the server's FIN,
close), and the stack is stopped. Configurations take turns, ``--repeat`` rounds, best of each:
on a busy machine compare the ratios of one run, not the absolute figures. Beside the rate, the
stack process's CPU time per connection (``/proc/PID/stat``, least of the rounds), which a busy
machine disturbs less than the wall clock. The loop is chosen
with ``TCPSTACK_UVLOOP`` (``0``: asyncio's); ``info`` is ``tcpstack up``'s default level, at
which every connection logs its ``tcp.closed`` line; ``warning`` shows what the line costs.
``--root`` adds another checkout's ``tcpstack`` (e.g. main, for before/after).

With ``--profile DIR``, each configuration's first round runs under ``py-spy record`` (raw
collapsed stacks, ``DIR/<config>.txt``) and the top functions by own and by total samples are
printed: what a connection costs, by function.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tcpstack.netns import PREFIX, STACK_ADDR, Netns  # noqa: E402

PEER = HERE / "peer.py"


def start(ns: Netns, root: Path, loop: str, level: str, tmp: Path, profile: Path | None) -> subprocess.Popen[bytes]:
    env = {"TCPSTACK_UVLOOP": "1" if loop == "uvloop" else "0", "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "tcpstack.cli", "up", "--tun", ns.device, "--address", f"{STACK_ADDR}/{PREFIX}"]
    cmd += ["--serve", "discard:9", "--log-level", level, "--control", str(tmp / f"{ns.name}.sock")]
    if profile is not None:
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        cmd = [pyspy, "record", "-r", "250", "-f", "raw", "-o", str(profile), "--nonblocking", "--", *cmd]
    full = ["env", "-C", str(root), *(f"{k}={v}" for k, v in env.items()), *cmd]  # -m puts the cwd first
    proc = ns.spawn(full, stdout=tmp / "stack.out", stderr=tmp / "stack.err")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # up when a connection gets through
        if proc.poll() is not None:
            raise RuntimeError(f"tcpstack exited: {(tmp / 'stack.err').read_text()[-2000:]}")
        try:
            r = ns.exec([sys.executable, str(PEER), "conns", STACK_ADDR, "9", "1"], check=False, timeout=10)
        except subprocess.TimeoutExpired:  # a SYN sent before the stack read its device: try again
            continue
        if r.returncode == 0:
            return proc
        time.sleep(0.2)
    raise RuntimeError("tcpstack did not answer within 30 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process *pid* so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy passes it on and writes its profile
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def top(profile: Path, n: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if not any(f.startswith(("Handle._run", "run (tcpstack/io/driver")) for f in frames) or any(
            "importlib" in f for f in frames
        ):
            continue  # start-up (imports, configuration): not the connections' cost
        k = int(count)
        samples += k
        own[frames[-1]] += k
        for f in set(frames):
            total[f] += k
    lines = [f"{samples} samples in the event loop (imports left out); own:"]
    lines += [f"  {100 * c / samples:5.1f}%  {f}" for f, c in own.most_common(n)]
    lines += ["total:"] + [f"  {100 * c / samples:5.1f}%  {f}" for f, c in total.most_common(n)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--loops", default="uvloop,asyncio")
    ap.add_argument("--log-levels", default="info")
    ap.add_argument("--root", type=Path, action="append", default=[], help="another checkout to measure too")
    ap.add_argument("--profile", type=Path, default=None, help="py-spy profiles into this directory")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    roots = [HERE.parent, *[r.resolve() for r in args.root]]
    configs = [
        (root, loop, level) for root in roots for loop in args.loops.split(",") for level in args.log_levels.split(",")
    ]
    best: dict[str, float] = {}
    least_cpu: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ns = Netns(prefix="tcpscr")
        try:
            for rnd in range(args.repeat):
                for root, loop, level in configs:
                    name = f"{root.name}/{loop}/{level}"
                    profile = None
                    if args.profile is not None and rnd == 0:
                        args.profile.mkdir(parents=True, exist_ok=True)
                        profile = args.profile / f"{name.replace('/', '-')}.txt"
                    proc = start(ns, root, loop, level, tmp, profile)
                    try:
                        cpu0 = cpu_seconds(proc.pid)
                        client = [sys.executable, str(PEER), "conns", STACK_ADDR, "9", str(args.conns)]
                        out = ns.exec(client, timeout=600)
                        cpu_us = (cpu_seconds(proc.pid) - cpu0) / args.conns * 1e6
                        rate = args.conns / float(out.stdout.split()[-1])
                    finally:
                        stop(proc)
                    if profile is None:  # a profiled run is slower: not a figure
                        best[name] = max(best.get(name, 0.0), rate)
                        least_cpu[name] = min(least_cpu.get(name, float("inf")), cpu_us)
                    if not args.json:
                        print(
                            f"round {rnd + 1} {name:<40} {rate:8.0f} conn/s {cpu_us:6.0f} µs CPU/conn"
                            f"{' (profiled)' if profile else ''}",
                            flush=True,
                        )
                    time.sleep(1)  # TIME-WAIT of the client's ports is the kernel's business, not ours
        finally:
            ns.close()
    if args.json:
        report = {"conns": args.conns, "repeat": args.repeat, "best_conn_per_s": best}
        report["least_cpu_us_per_conn"] = least_cpu
        print(json.dumps(report))
    else:
        print("best:")
        for name, rate in best.items():
            print(f"  {name:<40} {rate:8.0f} conn/s {least_cpu[name]:6.0f} µs CPU/conn (the stack process)")
        if args.profile is not None:
            for p in sorted(args.profile.glob("*.txt")):
                print(f"\n== {p.name}\n{top(p)}")
    os.sync()


if __name__ == "__main__":
    main()
