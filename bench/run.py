"""tcpstack benchmark: our stack against the Linux kernel, measured in the same run.

Run as root:  .venv/bin/python bench/run.py [--size-mb 100] [--conns 500] [--repeat 3]

It builds three network namespaces of its own (removed at the end, also on failure):

- ``tun``: a TUN device with the kernel at 10.0.0.1 and ``tcpstack up`` at 10.0.0.2 serving
  discard (port 9) and http (port 80);
- ``a`` and ``b``: joined by a veth pair (10.9.0.1 / 10.9.0.2), kernel to kernel.

and measures, with the same kernel-side client (bench/peer.py) in every case:

- bulk kernel -> peer: the client sends N MB to a server that discards it (our discard service,
  or a kernel sink), timed until the server has closed after the client's FIN;
- bulk peer -> kernel: the client downloads N MB (our http service ``GET /bytes/N``, or a
  kernel source);
- sequential connections: connect, FIN, wait for the server's FIN, close; connections per second;
- both bulk transfers again with the stack on ``--offload`` (TUN checksum and segmentation
  offload), against the same kernel figures.

Each figure is the best of ``--repeat`` runs. The table gives ours, the kernel's, and ours as a
fraction of the kernel's. This is a benchmark, not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tcpstack.netns import STACK_ADDR, Netns  # noqa: E402

PEER = str(ROOT / "bench" / "peer.py")


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class VethPair:
    """Two namespaces joined by a veth pair: a=10.9.0.1, b=10.9.0.2."""

    def __init__(self) -> None:
        tag = f"{os.getpid()}"
        self.a, self.b = f"tcps-bench-a-{tag}", f"tcps-bench-b-{tag}"
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
        self.procs: list[subprocess.Popen[bytes]] = []

    def serve(self, kind: str, port: int) -> None:
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", self.b, sys.executable, PEER, kind, str(port)]))

    def client(self, *args: str) -> float:
        out = subprocess.run(
            ["ip", "netns", "exec", self.a, sys.executable, PEER, *args], check=True, capture_output=True, text=True
        )
        return float(out.stdout.strip())

    def close(self) -> None:
        for p in getattr(self, "procs", []):
            p.kill()
            p.wait()
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def best(fn: object, repeat: int) -> float:
    return min(fn() for _ in range(repeat))  # type: ignore[operator]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=100, help="bulk transfer size (default 100 MB)")
    ap.add_argument("--conns", type=int, default=500, help="sequential connections per run (default 500)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is kept (default 3)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/run.py: needs root (network namespaces, TUN)", file=sys.stderr)
        return 1
    size = args.size_mb * 1_000_000
    tmp = Path(tempfile.mkdtemp(prefix="tcpstack-bench-"))
    ns = Netns(prefix="tcps-bench")
    veth = None
    stack = None
    try:
        stack = ns.tcpstack("--serve", "discard:9", "--serve", "http:80", tmp=tmp)
        veth = VethPair()
        veth.serve("sink", 9)
        veth.serve("source", 80)
        time.sleep(0.5)

        def ours(*a: str) -> float:
            r = ns.exec([sys.executable, PEER, *a], timeout=600)
            return float(r.stdout.strip())

        rows = []
        t_ours = best(lambda: ours("send", STACK_ADDR, "9", str(size)), args.repeat)
        t_kern = best(lambda: veth.client("send", "10.9.0.2", "9", str(size)), args.repeat)
        rows.append(("bulk kernel -> peer (MB/s)", size / t_ours / 1e6, size / t_kern / 1e6))
        t_ours = best(lambda: ours("recv", STACK_ADDR, "80", str(size)), args.repeat)
        t_kern = best(lambda: veth.client("recv", "10.9.0.2", "80", str(size)), args.repeat)
        rows.append(("bulk peer -> kernel (MB/s)", size / t_ours / 1e6, size / t_kern / 1e6))
        n = args.conns
        t_ours = best(lambda: ours("conns", STACK_ADDR, "9", str(n)), args.repeat)
        t_kern = best(lambda: veth.client("conns", "10.9.0.2", "9", str(n)), args.repeat)
        rows.append(("sequential connections (conn/s)", n / t_ours, n / t_kern))

        # The same bulk transfers with TUN offload (IFF_VNET_HDR + TUNSETOFFLOAD), same kernel figures.
        stack.send_signal(signal.SIGTERM)
        stack.wait(timeout=15)
        stack = ns.tcpstack("--offload", "--serve", "discard:9", "--serve", "http:80", tmp=tmp, label="offload")
        time.sleep(0.5)
        kern_send, kern_recv = rows[0][2], rows[1][2]
        t_ours = best(lambda: ours("send", STACK_ADDR, "9", str(size)), args.repeat)
        rows.append(("bulk kernel -> peer, offload (MB/s)", size / t_ours / 1e6, kern_send))
        t_ours = best(lambda: ours("recv", STACK_ADDR, "80", str(size)), args.repeat)
        rows.append(("bulk peer -> kernel, offload (MB/s)", size / t_ours / 1e6, kern_recv))

        print(f"tcpstack vs Linux kernel ({args.size_mb} MB bulk, {n} connections, best of {args.repeat})")
        print(f"{'figure':<38}{'tcpstack':>12}{'kernel':>12}{'ratio':>9}")
        for name, a, b in rows:
            print(f"{name:<38}{a:>12.1f}{b:>12.1f}{a / b:>9.3f}")
        stack.send_signal(signal.SIGTERM)
        stack.wait(timeout=15)
        return 0
    finally:
        if veth is not None:
            veth.close()
        ns.close()


if __name__ == "__main__":
    sys.exit(main())
