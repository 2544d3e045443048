"""Network namespaces with a TUN device, for the demo and for tests against the Linux kernel.

Everything created lives inside its own namespace (``<prefix>-<pid>-<n>``): the TUN device, the
kernel-side address, and every process started through :meth:`Netns.spawn`. :meth:`Netns.close`
kills those processes and deletes the namespace; use it in ``finally`` so failures clean up too.
Nothing here touches the machine's own interfaces.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

_counter = itertools.count()

KERNEL_ADDR = "10.0.0.1"
STACK_ADDR = "10.0.0.2"
PREFIX = 24
TXQUEUELEN = 10_000  # frames the kernel queues for the stack (tun's default: 500)


def missing_capability() -> str | None:
    """Why namespace tests cannot run here, or ``None`` if they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and TUN devices)"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun on this machine"
    for tool in ("ip",):
        if shutil.which(tool) is None:
            return f"the '{tool}' command is not installed"
    probe = f"tcps-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class Netns:
    """A namespace holding ``tun0`` (kernel side 10.0.0.1/24) for a stack at 10.0.0.2."""

    def __init__(self, *, mtu: int = 1500, prefix: str = "tcps") -> None:
        self.name = f"{prefix}-{os.getpid()}-{next(_counter)}"
        self.device = "tun0"
        self.procs: list[subprocess.Popen[bytes]] = []
        self._sockets: list[Path] = []
        self._run(["ip", "netns", "add", self.name])
        try:
            self.exec(["ip", "link", "set", "lo", "up"])
            self.exec(["ip", "tuntap", "add", "dev", self.device, "mode", "tun", "multi_queue"])  # --workers needs it
            self.exec(["ip", "link", "set", self.device, "mtu", str(mtu)])
            # The kernel queues what it sends into the TUN device; at tun's default of 500
            # frames a burst (a window of segments, a flood) is dropped before the stack can
            # read it. 10,000 absorbs bursts; a stack that falls behind for good still drops.
            self.exec(["ip", "link", "set", self.device, "txqueuelen", str(TXQUEUELEN)])
            # Linux sends IPv6 router solicitations at link-up; keep the wire to IPv4.
            self.exec(["sysctl", "-qw", f"net.ipv6.conf.{self.device}.disable_ipv6=1"])
            self.exec(["ip", "addr", "add", f"{KERNEL_ADDR}/{PREFIX}", "dev", self.device])
            self.exec(["ip", "link", "set", self.device, "up"])
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _run(cmd: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def exec(self, cmd: Sequence[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait for it."""
        full = ["ip", "netns", "exec", self.name, *cmd]
        if check:
            return self._run(full, timeout)
        return subprocess.run(full, capture_output=True, text=True, timeout=timeout)

    def spawn(self, cmd: Sequence[str], *, stdout: Path, stderr: Path) -> subprocess.Popen[bytes]:
        """Start a process inside the namespace (killed at :meth:`close`)."""
        out = open(stdout, "wb")
        err = open(stderr, "wb")
        p = subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        out.close()
        err.close()
        self.procs.append(p)
        return p

    def tcpstack(self, *args: str, tmp: Path, label: str = "stack") -> subprocess.Popen[bytes]:
        """Start ``tcpstack up`` on this namespace's TUN device; wait until it is attached.

        Its stdout and stderr go to ``tmp/<label>.out`` and ``tmp/<label>.err``.
        """
        cmd = [
            sys.executable,
            "-m",
            "tcpstack.cli",
            "up",
            "--tun",
            self.device,
            "--address",
            f"{STACK_ADDR}/{PREFIX}",
            *args,
        ]
        if "--control" not in args:
            # A private control socket: the default /run/tcpstack/tun0.sock is one per host, and
            # every namespace names its device tun0, so stacks of other runs would collide on it.
            # Short (a socket path has at most 107 bytes), named for this namespace; close() removes it.
            control = Path(tempfile.gettempdir()) / f"{self.name}-{label}.sock"
            self._sockets.append(control)
            cmd += ["--control", str(control)]
        p = self.spawn(cmd, stdout=tmp / f"{label}.out", stderr=tmp / f"{label}.err")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"tcpstack exited early ({p.returncode}): {(tmp / f'{label}.err').read_text()}")
            if "stack.up" in (tmp / f"{label}.err").read_text(errors="replace"):
                return p
            time.sleep(0.05)
        raise RuntimeError("tcpstack did not report stack.up within 20 s")

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        # Processes still inside the namespace (started by a test some other way) die with it.
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        for path in self._sockets:
            path.unlink(missing_ok=True)
