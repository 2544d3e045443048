"""``tcpstack demo``: the main job on the built-in default configuration.

It creates its own network namespace with a TUN device, starts ``tcpstack up`` inside it (the
default plugin set, the echo and http services, a pcap, a private control socket), drives it
with the kernel's own programs, prints what happened, and removes everything it created (also
on Ctrl-C or failure). The stack is reached only inside that namespace.

Steps: ICMP echo (and a 4000-byte echo the kernel fragments); a large curl download and upload
through the http service with SHA-256 checks, each with a progress bar and its throughput; nc
through the echo service; and the stack as a *client*: it fetches a file from a kernel HTTP
server (``python3 -m http.server``) in the namespace, asked through its control socket
(``tcpstack fetch``). The closing table comes from the stack's own ``tcp.closed`` log lines.

The stack runs with the probe on (``--probe``) and writes a pcapng capture whose frames carry the
decisions as comments. One more download goes through a fault layer that drops 3% of what a
second http service (port 81) sends, so losses and recoveries show. Afterwards the demo draws the
graphs of its big transfers (``tcpstack plot``: time-sequence, throughput, RTT, cwnd with the
phases) and one HTML page with all of them, and prints their paths (docs/observability.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from tcpstack.control import request
from tcpstack.netns import KERNEL_ADDR, STACK_ADDR, Netns

HTTP_PORT = 8080  # the kernel's HTTP server, for the stack-as-client step
FAULT_PORT = 81  # the second http service: what it sends goes through the fault layer
FAULT_DROP = 0.03
FAULT_SEED = 7
CHUNK = 1 << 16


@dataclass(slots=True)
class Step:
    name: str
    ok: bool
    detail: str


@contextmanager
def _progress(console: Console, label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar with bytes and throughput; yields ``advance(nbytes)``."""
    columns = (
        TextColumn(f"  {label:<26}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _mbps(nbytes: int, seconds: float) -> str:
    return f"{nbytes / max(seconds, 1e-9) / 1e6:.1f} MB/s"


def _ping(ns: Netns, *args: str) -> Step:
    r = ns.exec(["ping", "-n", "-W", "2", *args, STACK_ADDR], check=False)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", r.stdout)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", r.stdout)
    sent, got = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    detail = f"{got}/{sent} replies" + (f", avg rtt {rtt.group(1)} ms" if rtt else "")
    return Step(f"ping {' '.join(args)}", r.returncode == 0 and sent == got > 0, detail)


def _curl_download(ns: Netns, size: int, console: Console, *, port: int = 80, label: str = "") -> Step:
    from tcpstack.services import pattern_bytes

    where = STACK_ADDR if port == 80 else f"{STACK_ADDR}:{port}"
    name = f"curl GET {'' if port == 80 else f':{port}'}/bytes/{size}{label}"
    cmd = ["ip", "netns", "exec", ns.name, "curl", "-sS", "--max-time", "120", f"http://{where}/bytes/{size}"]
    digest, got = hashlib.sha256(), 0
    start = time.monotonic()
    # Unbuffered: each read returns what the pipe holds (one system call), so the bar moves.
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        bar = "download (stack -> kernel)" if port == 80 else f"download, {FAULT_DROP:.0%} dropped"
        with _progress(console, bar, size) as advance:
            while chunk := proc.stdout.read(CHUNK):
                digest.update(chunk)
                got += len(chunk)
                advance(len(chunk))
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.wait(timeout=30)
    seconds = time.monotonic() - start
    ok = proc.returncode == 0 and got == size and digest.hexdigest() == hashlib.sha256(pattern_bytes(size)).hexdigest()
    if proc.returncode != 0:
        return Step(name, False, err or f"curl exited {proc.returncode}")
    detail = f"{got} bytes in {seconds:.2f} s ({_mbps(got, seconds)}), sha256 {'matches' if ok else 'DIFFERS'}"
    return Step(name, ok, detail)


def _curl_upload(ns: Netns, size: int, console: Console) -> Step:
    """curl streams its standard input as a chunked POST (``-T -``); the service answers with
    the SHA-256 of what it received. The bar counts what curl has taken from us."""
    name = f"curl POST {size} bytes"
    cmd = ["ip", "netns", "exec", ns.name, "curl", "-sS", "--max-time", "120", "-X", "POST", "-T", "-"]
    cmd.append(f"http://{STACK_ADDR}/upload")
    digest = hashlib.sha256()
    start = time.monotonic()
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdin is not None
        try:
            with _progress(console, "upload (kernel -> stack)", size) as advance:
                sent = 0
                while sent < size:
                    chunk = os.urandom(min(CHUNK, size - sent))
                    digest.update(chunk)
                    proc.stdin.write(chunk)
                    sent += len(chunk)
                    advance(len(chunk))
        except BrokenPipeError:
            pass  # curl failed early; its exit status and message say why
        out, err = proc.communicate(timeout=120)  # closes curl's standard input: the end of the body
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        return Step(name, False, err.decode(errors="replace").strip() or f"curl exited {proc.returncode}")
    ok = out.decode().strip() == digest.hexdigest()
    verdict = "matches" if ok else "DIFFERS"
    detail = f"{size} bytes in {seconds:.2f} s ({_mbps(size, seconds)}), server's sha256 {verdict}"
    return Step(name, ok, detail)


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


def _wait_listening(ns: Netns, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = ns.exec(["ss", "-Hltn", f"sport = :{port}"], check=False)
        if r.stdout.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"the kernel's HTTP server did not listen on port {port} within {timeout:.0f} s")


def _stack_fetch(ns: Netns, control: Path, workdir: Path, size: int) -> Step:
    """The stack as a TCP client: it GETs a file from the kernel's ``python3 -m http.server``."""
    www = workdir / "www"
    www.mkdir()
    body = os.urandom(size)
    (www / "page.bin").write_bytes(body)
    ns.spawn(
        [sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind", KERNEL_ADDR, "--directory", str(www)],
        stdout=workdir / "httpd.out",
        stderr=workdir / "httpd.err",
    )
    _wait_listening(ns, HTTP_PORT)
    url = f"http://{KERNEL_ADDR}:{HTTP_PORT}/page.bin"
    name = f"stack fetches {url}"
    fetched = workdir / "fetched.bin"
    reply = request(control, "fetch", wait=65.0, url=url, output=str(fetched), timeout=60.0)
    if "error" in reply:
        return Step(name, False, str(reply["error"]))
    ok = reply["status"] == 200 and reply["sha256"] == hashlib.sha256(body).hexdigest()
    ok = ok and fetched.read_bytes() == body  # what the stack wrote, byte for byte
    fetched.unlink()
    detail = (
        f"{reply['status']}, {reply['bytes']} bytes in {reply['seconds']:.2f} s "
        f"({_mbps(reply['bytes'], reply['seconds'])}) from {reply['local']}, sha256 {'matches' if ok else 'DIFFERS'}"
    )
    return Step(name, ok, detail)


def closed_connections(log: Path) -> list[dict[str, Any]]:
    """The ``tcp.closed`` events of a JSON-lines stack log."""
    rows = []
    for line in log.read_text(errors="replace").splitlines():
        if '"tcp.closed"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "tcp.closed":
            rows.append(event)
    return rows


def _role(conn: str) -> str:
    """``10.0.0.2:80>10.0.0.1:41234`` -> who talked to whom, seen from the stack."""
    local, _, remote = conn.partition(">")
    lport = local.rpartition(":")[2]
    services = {"80": "http", "81": "http", "7": "echo", "9": "discard", "13": "daytime", "19": "chargen"}
    if lport in services:
        return f"{services[lport]} :{lport} <- {remote}"
    return f"client :{lport} -> {remote}"


def _features(row: dict[str, Any]) -> str:
    return " ".join([str(row.get("congestion", "?")), *row.get("features", [])])


def summary_table(rows: list[dict[str, Any]]) -> Table:
    """One row per connection, from its ``tcp.closed`` line (features in the caption when
    every connection had the same)."""
    shared = {_features(r) for r in rows}
    same = len(shared) == 1
    caption = f"every connection: {shared.pop()}" if same else None
    table = Table(
        title="connections (from the stack's tcp.closed log lines)",
        title_justify="left",
        caption=caption,
        caption_justify="left",
    )
    columns = ["connection", *([] if same else ["features"])]
    columns += ["bytes in", "bytes out", "duration", "retrans", "srtt", "cwnd", "end"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("connection", "features", "end") else "right")
    for r in rows:
        srtt = r.get("srtt")
        cells = [_role(str(r.get("conn", "?"))), *([] if same else [_features(r)])]
        cells += [
            f"{r.get('bytes_in', 0):,}",
            f"{r.get('bytes_out', 0):,}",
            f"{r.get('duration', 0.0):.3f} s",
            str(r.get("retransmits", 0)),
            f"{srtt * 1000:.2f} ms" if isinstance(srtt, (int, float)) else "-",
            f"{r.get('cwnd', 0):,}",
            str(r.get("reason", "?")),
        ]
        table.add_row(*cells)
    return table


def _wait_closed(log: Path, count: int, timeout: float = 5.0) -> None:
    """Give the last FIN/ACK exchanges a moment so every connection has its line."""
    deadline = time.monotonic() + timeout
    while len(closed_connections(log)) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def _config(path: Path, pcap: Path) -> Path:
    """The default configuration, plus a fault layer that drops :data:`FAULT_DROP` of what the
    port-:data:`FAULT_PORT` service sends and a pcap layer above it (so the capture holds the
    dropped segments too: what the stack sent, not what reached the kernel)."""
    text = (
        '[[layers]]\ntype = "tun"\ndevice = "tun0"\n\n'
        f'[[layers]]\ntype = "fault"\ndrop = {FAULT_DROP}\ndirection = "out"\nports = [{FAULT_PORT}]\n'
        f"seed = {FAULT_SEED}\n\n"
        # Headers only (128 bytes a frame): the capture shows the TCP behaviour, not 40 MB of data.
        f'[[layers]]\ntype = "pcap"\npath = {json.dumps(str(pcap))}\nsnaplen = 128\n\n'
        '[[layers]]\ntype = "ipv4"\naddress = "10.0.0.2/24"\n\n'
        '[[layers]]\ntype = "tcp"\n'
    )
    path.write_text(text)
    return path


@dataclass(slots=True)
class Graph:
    what: str
    conn: int
    path: Path


def _opened(probe: Path) -> list[tuple[int, str, str]]:
    """``(number, local, remote)`` of each connection the probe file saw open."""
    out = []
    for line in probe.read_text(errors="replace").splitlines():
        if '"open"' not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("event") == "open" and isinstance(rec.get("conn"), int):
            out.append((rec["conn"], str(rec.get("local")), str(rec.get("remote"))))
    return sorted(out)


def _transfers(probe: Path) -> list[tuple[str, int]]:
    """Which probed connection was which big transfer: ``(what, number)``."""
    http = [n for n, local, _ in _opened(probe) if local.endswith(":80")]
    faulted = [n for n, local, _ in _opened(probe) if local.endswith(f":{FAULT_PORT}")]
    fetch = [n for n, _, remote in _opened(probe) if remote.endswith(f":{HTTP_PORT}")]
    found = list(zip(("download", "upload"), http, strict=False))
    found += [("download-with-loss", n) for n in faulted[:1]]
    found += [("fetch", n) for n in fetch[:1]]
    return found


def draw_graphs(pcap: Path, probe: Path, outdir: Path) -> tuple[list[Graph], Path]:
    """The graphs of the demo's big transfers (one PNG each) and the page with all of them
    (``tcpstack plot``, docs/observability.md); the capture and the probe file are read once."""
    import io

    from tcpstack.plot.command import PlotError, figures, page

    wanted = _transfers(probe)
    if not wanted:
        raise RuntimeError(f"the probe file {probe} names none of the demo's transfers")
    try:
        result = figures(str(pcap), probe=str(probe), conns=[str(n) for _, n in wanted], many=True, err=io.StringIO())
    except PlotError as exc:
        raise RuntimeError(f"drawing the graphs: {exc}") from None
    graphs = []
    for (what, number), drawn in zip(wanted, result.drawn, strict=True):
        path = outdir / f"{what}.png"
        drawn.figure.savefig(path, format="png", dpi=100)
        graphs.append(Graph(what, number, path))
    html = outdir / "demo.html"
    html.write_text(page(result, str(pcap), str(probe)), encoding="utf-8")
    return graphs, html


def _open_page(html: Path) -> str:
    """Open *html* in a web browser, if the machine has one; what happened, in words."""
    import webbrowser

    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return "no web browser found here; open the page yourself"
    return "opened in a web browser" if browser.open(html.as_uri()) else "the web browser did not start"


def _check_tools() -> list[str]:
    return [tool for tool in ("ip", "ping", "curl", "nc", "ss") if shutil.which(tool) is None]


def run_demo(
    *,
    keep: bool = False,
    pcap: str | None = None,
    out: IO[str] | None = None,
    download: int = 20_000_000,
    upload: int = 10_000_000,
    fetch: int = 5_000_000,
    offload: bool = False,
    faulted: int = 5_000_000,
    open_page: bool = False,
) -> int:
    """Run the demo; return a process exit status (0 when every step passed). With *offload*
    the stack runs with TUN checksum and segmentation offload (``tcpstack up --offload``); with
    *open_page* the page of graphs is opened in a web browser when there is one."""
    stream = out or sys.stdout
    # Not a terminal (CI, a pipe): no live bars, only their final state, and a wide enough table.
    console = Console(file=stream, highlight=False, width=None if stream.isatty() else 120)

    def say(*items: Any, markup: bool = False) -> None:
        console.print(*items, markup=markup, soft_wrap=True)

    if os.geteuid() != 0:
        print("tcpstack: error: the demo needs root (it creates a network namespace and a TUN device)", file=sys.stderr)
        return 1
    missing = _check_tools()
    if missing:
        print(
            f"tcpstack: error: the demo needs {', '.join(missing)} (Debian: iproute2, iputils-ping, curl, "
            "netcat-openbsd; scripts/setup installs them)",
            file=sys.stderr,
        )
        return 1
    workdir: Path | None = None
    ns: Netns | None = None
    kept = False  # --keep leaves the namespace only after a run that reached its summary
    steps: list[Step] = []
    try:
        workdir = Path(tempfile.mkdtemp(prefix="tcpstack-demo-"))
        pcap_path = Path(pcap).resolve() if pcap else workdir / "demo.pcapng"
        probe_path = workdir / "probe.jsonl"
        control = workdir / "control.sock"
        log = workdir / "stack.err"
        ns = Netns(prefix="tcpstack-demo")
        say(f"namespace {ns.name}: kernel at {KERNEL_ADDR} on {ns.device}, tcpstack at {STACK_ADDR}")
        proc = ns.tcpstack(
            *("--config", str(_config(workdir / "stack.toml", pcap_path)), "--probe", str(probe_path)),
            *("--control", str(control), "--log-format", "json"),
            *("--serve", "echo", "--serve", "http", "--serve", f"http:{FAULT_PORT}"),
            *(["--offload"] if offload else []),
            tmp=workdir,
        )
        mode = "default plugins and the probe, TUN offload on" if offload else "default plugins and the probe"
        say(f"stack up ({mode}), capture {pcap_path} (headers), control socket {control}")
        say(f"  port {FAULT_PORT} serves http through a fault layer that drops {FAULT_DROP:.0%} of what it sends")
        steps.append(_ping(ns, "-c", "3", "-i", "0.2"))
        steps.append(_ping(ns, "-c", "2", "-i", "0.2", "-s", "4000"))
        steps.append(_curl_download(ns, download, console))
        steps.append(_curl_upload(ns, upload, console))
        steps.append(_curl_download(ns, faulted, console, port=FAULT_PORT, label=f" ({FAULT_DROP:.0%} dropped)"))
        steps.append(_nc_echo(ns))
        steps.append(_stack_fetch(ns, control, workdir, fetch))
        width = max(len(s.name) for s in steps)
        for s in steps:
            mark = "[green]PASS[/green]" if s.ok else "[bold red]FAIL[/bold red]"
            say(f"  {mark}  {s.name:<{width}}  {s.detail}", markup=True)
        tcp_steps = 5  # download, upload, faulted download, echo, fetch: one connection each
        _wait_closed(log, tcp_steps)
        if not keep:
            proc.send_signal(signal.SIGTERM)  # the capture and the probe file are complete once it exits
            proc.wait(timeout=15)
        console.print(summary_table(closed_connections(log)))
        say(f"capture: {pcap_path}   probe: {probe_path}   stack log (JSON lines): {log}")
        graphs, html = draw_graphs(pcap_path, probe_path, workdir)
        say("graphs (tcpstack plot; how to read them: docs/observability.md):")
        for g in graphs:
            say(f"  {g.what:<24} connection {g.conn:<4} {g.path}")
        say(f"  page with all of them:  {html}")
        if open_page:
            say(f"  {_open_page(html)}")
        if keep:
            kept = True
            running = " ".join(str(p.pid) for p in ns.procs if p.poll() is None)
            say(
                "--keep: the namespace and the stack stay up. Try:\n"
                f"  sudo ip netns exec {ns.name} ping {STACK_ADDR}\n"
                f"  sudo ip netns exec {ns.name} curl http://{STACK_ADDR}/bytes/100 | od -A d -t x1 | head\n"
                f"  echo hi | sudo ip netns exec {ns.name} nc -N {STACK_ADDR} 7\n"
                f"  sudo tcpstack ss --control {control}        # live connections\n"
                f"  sudo tcpstack probe --control {control} --watch 1   # the probe's records as they come\n"
                f"  sudo tcpstack fetch --control {control} http://{KERNEL_ADDR}:{HTTP_PORT}/page.bin\n"
                f"  sudo ip netns exec {ns.name} tcpdump -ni {ns.device}\n"
                "Remove it (the stack and the kernel HTTP server, by the process IDs the demo started) with:\n"
                f"  sudo kill {running}; sudo ip netns del {ns.name}",
                markup=False,
            )
            return 0 if all(s.ok for s in steps) else 1
        ok = all(s.ok for s in steps) and proc.returncode == 0
        say("[green]demo passed[/green]" if ok else "[bold red]demo FAILED[/bold red]", markup=True)
        return 0 if ok else 1
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        return 130
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        print(f"tcpstack: error: demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if not kept:
            # A second Ctrl-C must not abandon the namespace halfway through its removal.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                if ns is not None:
                    ns.close()
                if workdir is not None:
                    shutil.rmtree(workdir / "www", ignore_errors=True)  # the served file; pcap and log stay
                    if ns is None:
                        shutil.rmtree(workdir, ignore_errors=True)  # nothing was captured
            finally:
                signal.signal(signal.SIGINT, previous)
