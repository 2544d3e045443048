"""``tcpstack demo``: the main job on the built-in default configuration.

It creates its own network namespace with a TUN device, starts ``tcpstack up`` inside it, drives
it with the kernel's own programs, prints what happened, and removes everything it created
(also on Ctrl-C or failure). The stack is reached only inside that namespace.

It exercises ICMP (echo, and a 4000-byte echo the kernel fragments) and TCP: a curl download
and upload through the http service with SHA-256 checks, and nc through the echo service.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from framework.netns import KERNEL_ADDR, STACK_ADDR, Netns


@dataclass(slots=True)
class Step:
    name: str
    ok: bool
    detail: str


def _ping(ns: Netns, *args: str) -> Step:
    r = ns.exec(["ping", "-n", "-W", "2", *args, STACK_ADDR], check=False)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", r.stdout)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", r.stdout)
    sent, got = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    detail = f"{got}/{sent} replies" + (f", avg rtt {rtt.group(1)} ms" if rtt else "")
    return Step(f"ping {' '.join(args)}", r.returncode == 0 and sent == got > 0, detail)


def _curl_download(ns: Netns, size: int) -> Step:
    from framework.services import pattern_bytes

    r = subprocess.run(
        ["ip", "netns", "exec", ns.name, "curl", "-sS", "--max-time", "60", f"http://{STACK_ADDR}/bytes/{size}"],
        capture_output=True,
        timeout=90,
    )
    want = hashlib.sha256(pattern_bytes(size)).hexdigest()
    got = hashlib.sha256(r.stdout).hexdigest()
    ok = r.returncode == 0 and got == want
    detail = (
        f"{len(r.stdout)} bytes, sha256 {'matches' if ok else 'DIFFERS'}" if r.returncode == 0 else r.stderr.decode()
    )
    return Step(f"curl GET /bytes/{size}", ok, detail.strip())


def _curl_upload(ns: Netns, size: int, workdir: Path) -> Step:
    body = os.urandom(size)
    path = workdir / "upload.bin"
    path.write_bytes(body)
    r = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns.name,
            "curl",
            "-sS",
            "--max-time",
            "60",
            "--data-binary",
            f"@{path}",
            f"http://{STACK_ADDR}/upload",
        ],
        capture_output=True,
        timeout=90,
    )
    ok = r.returncode == 0 and r.stdout.decode().strip() == hashlib.sha256(body).hexdigest()
    detail = (
        f"{size} bytes, server's sha256 {'matches' if ok else 'DIFFERS'}" if r.returncode == 0 else r.stderr.decode()
    )
    return Step(f"curl POST {size} bytes", ok, detail.strip())


def _nc_echo(ns: Netns) -> Step:
    text = b"hello from the kernel's nc\n"
    r = subprocess.run(
        ["ip", "netns", "exec", ns.name, "nc", "-N", "-w", "5", STACK_ADDR, "7"],
        input=text,
        capture_output=True,
        timeout=30,
    )
    ok = r.returncode == 0 and r.stdout == text
    return Step("nc to echo (port 7)", ok, "echoed back" if ok else (r.stderr.decode().strip() or repr(r.stdout)))


def run_demo(*, keep: bool = False, pcap: str | None = None, out: object = sys.stdout) -> int:
    """Run the demo; return a process exit status (0 when every step passed)."""

    def say(line: str) -> None:
        print(line, file=out, flush=True)  # type: ignore[call-overload]

    if os.geteuid() != 0:
        print("tcpstack: error: the demo needs root (it creates a network namespace and a TUN device)", file=sys.stderr)
        return 1
    missing = [tool for tool in ("ip", "ping", "curl", "nc") if shutil.which(tool) is None]
    if missing:
        print(
            f"tcpstack: error: the demo needs {', '.join(missing)} (Debian: iproute2, iputils-ping, curl, "
            "netcat-openbsd; scripts/setup installs them)",
            file=sys.stderr,
        )
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="tcpstack-demo-"))
    pcap_path = Path(pcap) if pcap else workdir / "demo.pcap"
    ns = Netns(prefix="tcpstack-demo")
    proc: subprocess.Popen[bytes] | None = None
    steps: list[Step] = []
    try:
        say(f"namespace {ns.name}: kernel at {KERNEL_ADDR} on {ns.device}, tcpstack at {STACK_ADDR}")
        proc = ns.tcpstack("--pcap", str(pcap_path), "--serve", "echo", "--serve", "http", tmp=workdir)
        steps.append(_ping(ns, "-c", "3", "-i", "0.2"))
        steps.append(_ping(ns, "-c", "2", "-i", "0.2", "-s", "4000"))
        steps.append(_curl_download(ns, 10_000_000))
        steps.append(_curl_upload(ns, 5_000_000, workdir))
        steps.append(_nc_echo(ns))
        width = max(len(s.name) for s in steps)
        for s in steps:
            say(f"  {'PASS' if s.ok else 'FAIL'}  {s.name:<{width}}  {s.detail}")
        say(f"pcap: {pcap_path}   stack log: {workdir / 'stack.err'}")
        if keep:
            say(
                "--keep: the namespace stays up. Try:\n"
                f"  sudo ip netns exec {ns.name} ping {STACK_ADDR}\n"
                f"  sudo ip netns exec {ns.name} curl http://{STACK_ADDR}/bytes/100 | od -A d -t x1 | head\n"
                f"  echo hi | sudo ip netns exec {ns.name} nc -N {STACK_ADDR} 7\n"
                f"  sudo ip netns exec {ns.name} tcpdump -ni {ns.device}\n"
                f"Remove it with: sudo ip netns del {ns.name}   (the stack stops with it)"
            )
            return 0 if all(s.ok for s in steps) else 1
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        return 0 if all(s.ok for s in steps) and proc.returncode == 0 else 1
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        return 130
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        print(f"tcpstack: error: demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if not keep:
            ns.close()
