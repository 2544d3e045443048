"""The public API against the Linux kernel: an unmodified aiohttp application served through
``stack.create_server`` and fetched with curl, and the ten-line embedding example
(examples/embed_echo.py) seen by ``tcpstack ss``, silent unless it configures logging."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tcpstack.services import pattern_bytes
from tests.integration.netns import KERNEL_ADDR, STACK_ADDR, Netns

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).with_name("aiohttp_app.py")
EXAMPLE = ROOT / "examples" / "embed_echo.py"
STREAM_BYTES = 10 * 1024 * 1024


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Wait for a condition (a deadline that only bounds a hang, not a fixed count of sleeps)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def _ss(control: Path) -> list[dict[str, object]] | None:
    r = subprocess.run(
        [sys.executable, "-m", "tcpstack.cli", "ss", "--control", str(control), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return [json.loads(line) for line in r.stdout.splitlines()] if r.returncode == 0 else None  # JSON lines


def _listening(rows: list[dict[str, object]]) -> set[object]:
    return {r["local"] for r in rows if r["state"] == "LISTEN" and r["remote"] == "*:*"}


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=20)


def test_an_aiohttp_application_answers_curl(netns: Netns, tmp_path: Path) -> None:
    """aiohttp's own server (web.AppRunner's protocol factory) on stack.create_server: JSON routes, a static
    file (web.FileResponse, through loop.sendfile), a 10 MiB streamed response, all four on one kept-alive
    connection (curl's num_connects: 1, then 0); bodies checked by size and SHA-256."""
    static = tmp_path / "static.bin"
    static.write_bytes(os.urandom(700_000))
    control = tmp_path / "ctl.sock"
    proc = netns.spawn(
        [sys.executable, str(APP), str(control), str(static)], stdout=tmp_path / "app.out", stderr=tmp_path / "app.err"
    )
    try:
        _wait_until(lambda: "ready" in (tmp_path / "app.out").read_text() or proc.poll() is not None, "ready")
        assert proc.poll() is None, (tmp_path / "app.err").read_text()
        names = ["json", "items/12", "static", "stream"]
        args: list[str] = []
        for name in names:
            args += ["-o", str(tmp_path / name.replace("/", "_")), f"http://{STACK_ADDR}:8080/{name}"]
        fmt = "%{http_code} %{num_connects} %{size_download}\\n"
        r = netns.exec(["curl", "-sS", "--max-time", "120", "-w", fmt, *args], check=False, timeout=180)
        assert r.returncode == 0, r.stderr
        rows = [line.split() for line in r.stdout.splitlines()]
        assert [row[0] for row in rows] == ["200"] * 4, rows
        # Keep-alive: one connection opened for the first URL, reused for the other three.
        assert [row[1] for row in rows] == ["1", "0", "0", "0"], rows
        assert json.loads((tmp_path / "json").read_bytes()) == {"hello": "world", "peer": KERNEL_ADDR}
        assert json.loads((tmp_path / "items_12").read_bytes()) == {"n": 12, "square": 144}
        assert (
            hashlib.sha256((tmp_path / "static").read_bytes()).digest() == hashlib.sha256(static.read_bytes()).digest()
        )
        body = (tmp_path / "stream").read_bytes()
        assert len(body) == STREAM_BYTES and body == pattern_bytes(STREAM_BYTES)
        # The embedded stack's control socket answers `tcpstack ss`: aiohttp's listener is there.
        rows_ss = _ss(control)
        assert rows_ss is not None and "*:8080" in _listening(rows_ss)
    finally:
        code = _stop(proc)
    assert code == 0, (tmp_path / "app.err").read_text()
    assert not control.exists()


HOLD = (
    "import socket,sys,time\n"
    f"s=socket.create_connection(('{STACK_ADDR}',7))\n"
    "s.sendall(b'hello, stack'); print(s.recv(100).decode(), s.getsockname()[1], flush=True)\n"
    "time.sleep(30)\n"
)


def test_the_embedding_example_echoes_shows_in_ss_and_prints_nothing(netns: Netns, tmp_path: Path) -> None:
    """examples/embed_echo.py (tcpstack.open_stack in ten lines): echo from the kernel side, its connection
    in `tcpstack ss`, a clean exit on Ctrl-C, and not one byte on stdout or stderr."""
    control = tmp_path / "ctl.sock"
    out, err = tmp_path / "example.out", tmp_path / "example.err"
    proc = netns.spawn([sys.executable, str(EXAMPLE), str(control)], stdout=out, stderr=err)
    client = None
    try:
        _wait_until(lambda: control.exists() or proc.poll() is not None, "control socket")
        assert proc.poll() is None, err.read_text()
        r = netns.exec(
            [
                sys.executable,
                "-c",
                f"import socket;s=socket.create_connection(('{STACK_ADDR}',7));"
                "s.sendall(b'x'*100000);s.shutdown(1);d=b''\nwhile (c:=s.recv(65536)): d+=c\nprint(len(d))",
            ],
            check=False,
        )
        assert r.returncode == 0 and r.stdout.split() == ["100000"], r.stderr
        client = netns.spawn([sys.executable, "-c", HOLD], stdout=tmp_path / "hold.out", stderr=tmp_path / "hold.err")
        _wait_until(lambda: bool((tmp_path / "hold.out").read_text().strip()), "the held connection")
        echoed, port = (tmp_path / "hold.out").read_text().rsplit(maxsplit=1)
        assert echoed == "hello, stack"
        rows = _ss(control)
        assert rows is not None
        assert "*:7" in _listening(rows)
        (conn,) = [row for row in rows if row["remote"] == f"{KERNEL_ADDR}:{port}"]
        assert conn["state"] == "ESTABLISHED" and conn["local"] == f"{STACK_ADDR}:7"
    finally:
        if client is not None:
            client.kill()
        code = _stop(proc)
    assert code == 0
    assert out.read_bytes() == b"" and err.read_bytes() == b""
    assert not control.exists()


def test_an_embedded_stack_logs_once_the_program_configures_logging(netns: Netns, tmp_path: Path) -> None:
    """The same program with tcpstack.configure_logging() first: the stack's events appear on stderr."""
    control = tmp_path / "ctl.sock"
    program = EXAMPLE.read_text().replace(
        "async def main() -> None:\n", "async def main() -> None:\n    tcpstack.configure_logging(level='debug')\n"
    )
    assert "configure_logging" in program
    script = tmp_path / "logged.py"
    script.write_text(program)
    err = tmp_path / "logged.err"
    proc = netns.spawn([sys.executable, str(script), str(control)], stdout=tmp_path / "logged.out", stderr=err)
    try:
        _wait_until(lambda: control.exists() or proc.poll() is not None, "control socket")
        r = netns.exec(
            [
                sys.executable,
                "-c",
                f"import socket;s=socket.create_connection(('{STACK_ADDR}',7));s.sendall(b'x');print(s.recv(10))",
            ],
            check=False,
        )
        assert r.returncode == 0, r.stderr
        _wait_until(lambda: "tcp.state" in err.read_text(), "a logged state change")
    finally:
        assert _stop(proc) == 0
    assert (tmp_path / "logged.out").read_bytes() == b""


USER_APP = """
import asyncio


async def shout(reader, writer):
    while data := await reader.read(65536):
        writer.write(data.upper())
        await writer.drain()
    writer.close()


class Reverse(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.data = transport, b""

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.transport.write(self.data[::-1])
        return False  # the transport closes after the reply
"""


def test_tcpstack_up_serves_a_users_handler_and_protocol_factory(
    netns: Netns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tcpstack up --app 7000=userapp:shout --app-protocol 10.0.0.2:7001=userapp:Reverse`: both answer the
    kernel's clients; ss lists both listeners."""
    (tmp_path / "userapp.py").write_text(USER_APP)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    control = tmp_path / "ctl.sock"
    proc = netns.tcpstack(
        "--app", "7000=userapp:shout", "--app-protocol", f"{STACK_ADDR}:7001=userapp:Reverse",
        "--control", str(control), tmp=tmp_path,
    )  # fmt: skip
    try:
        for port, expected in ((7000, "HELLO STACK"), (7001, "kcats olleh")):
            r = netns.exec(
                [sys.executable, "-c", f"import socket;s=socket.create_connection(('{STACK_ADDR}',{port}));"
                 "s.sendall(b'hello stack');s.shutdown(1);d=b''\nwhile (c:=s.recv(100)): d+=c\nprint(d.decode())"],
                check=False,
            )  # fmt: skip
            assert r.returncode == 0 and r.stdout.strip() == expected, (r.stdout, r.stderr)
        rows = _ss(control)
        assert rows is not None
        assert {"*:7000", "*:7001"} <= _listening(rows)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, (tmp_path / "stack.err").read_text()
    assert "userapp:shout@7000" in (tmp_path / "stack.err").read_text()
