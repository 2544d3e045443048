"""Every bad input to the command line is one `tcpstack: error:` line on stderr and a non-zero exit, never
a traceback: configuration files that are not UTF-8, not TOML, too deep, too large, a directory or
unreadable; paths nothing can be written to; bad hosts, ports, URLs and device names; no stack to ask.

Nothing here opens a TUN device: `up` runs on a device name that does not exist, which it reports
(after every check of its input) without creating anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from tcpstack.cli import EXIT_FAILURE, EXIT_USAGE, main
from tcpstack.io.tun import device_exists

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "tcpsnone0"
NOT_UTF8 = b'[[layers]]\ntype = "tun"\ndevice = "t\xff\xfe0"\n'


@pytest.fixture(autouse=True)
def _no_device_and_reset_logging() -> Iterator[None]:
    assert not device_exists(DEVICE)
    yield
    structlog.reset_defaults()
    assert not device_exists(DEVICE)


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("tcpstack: error: ") and "Traceback" not in err
    return lines[0]


def _file(content: bytes) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        path = tmp / "stack.toml"
        path.write_bytes(content)
        return str(path)

    return make


FILES: dict[str, tuple[Callable[[Path], str], str]] = {
    "not UTF-8": (_file(NOT_UTF8), "not UTF-8 text (byte 35 is 0xff); a TOML file must be UTF-8"),
    "a binary file": (_file(bytes(range(256)) * 4), "not UTF-8 text"),
    "NUL bytes": (_file(b"\0" * 64), "invalid TOML: "),
    "invalid TOML": (_file(b"[[layers]\n"), "invalid TOML: "),
    "arrays nested 100,000 deep": (_file(b"a = " + b"[" * 100_000 + b"]" * 100_000 + b"\n"), "nested too deeply"),
    "inline tables nested 5,000 deep": (_file(b"a = " + b"{b = " * 5_000 + b"1" + b"}" * 5_000), "nested too deeply"),
    "a 2 MB file": (_file(b"# " + b"x" * 2_000_000 + b"\n"), "larger than 1048576 bytes; not a configuration file"),
    "/dev/zero": (lambda tmp: "/dev/zero", "/dev/zero: larger than 1048576 bytes"),
    "a directory": (lambda tmp: str(tmp), "cannot read: Is a directory"),
    "a missing file": (lambda tmp: str(tmp / "nope.toml"), "cannot read: No such file or directory"),
}


@pytest.mark.parametrize("command", [["config", "check"], ["up", "--tun", DEVICE, "--config"]], ids=["check", "up"])
@pytest.mark.parametrize(("make", "why"), FILES.values(), ids=FILES.keys())
def test_bad_configuration_file_is_one_line(
    command: list[str],
    make: Callable[[Path], str],
    why: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`config check FILE` and `up --config FILE`: one line naming the file and what is wrong, exit 2."""
    path = make(tmp_path)
    assert main([*command, path]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    line = one_line(err)
    assert line.startswith(f"tcpstack: error: {path}: ") and why in line, line


@pytest.mark.parametrize(
    ("argv", "code", "why"),
    [
        (["config", "init", "/proc/tcpstack-test.toml"], EXIT_FAILURE, "cannot write /proc/tcpstack-test.toml: "),
        (["config", "init", "{tmp}/missing/x.toml"], EXIT_FAILURE, "No such file or directory"),
        (["config", "init", "--force", "{tmp}"], EXIT_FAILURE, "Is a directory"),
        (["up", "--tun", DEVICE, "--pcap", "{tmp}/missing/x.pcap"], EXIT_USAGE, "layers[1].path: the directory"),
        (["up", "--tun", DEVICE, "--pcap", "{tmp}"], EXIT_USAGE, "is a directory; name a file in it"),
        (["up", "--tun", DEVICE, "--pcap", "/proc/tcpstack-test.pcap"], EXIT_FAILURE, "does not exist"),
        (["up", "--tun", "a/b"], EXIT_USAGE, "layers[0].device: must be 1-15 characters"),
        (["up", "--tun", DEVICE, "--serve", "echo:http"], EXIT_USAGE, "port must be 1-65535"),
        (["connect", "--tun", DEVICE, "example.org", "80"], EXIT_USAGE, "HOST 'example.org' is not an IPv4 address"),
        (["connect", "--tun", DEVICE, "10.0.0.1", "70000"], EXIT_USAGE, "PORT 70000 is not in 1-65535"),
        (["connect", "--tun", DEVICE, "10.0.0.1", "7", "--timeout", "nan"], EXIT_USAGE, "--timeout must be in"),
        (["connect", "--tun", DEVICE, "--config", "/dev/zero", "10.0.0.1", "7"], EXIT_USAGE, "larger than"),
        (["ss", "--tun", "../../etc/x"], EXIT_USAGE, "--tun '../../etc/x': must be 1-15 characters"),
        (["ss", "--control", "{tmp}/none.sock"], EXIT_FAILURE, "no stack answers at"),
        (["ss", "--control", "{tmp}"], EXIT_FAILURE, "no stack answers at"),
        (["ss", "--control", "{tmp}/" + "x" * 200], EXIT_FAILURE, "AF_UNIX path too long"),
        (["stats", "--control", "{tmp}/none.sock", "--json"], EXIT_FAILURE, "no stack answers at"),
        (["stats", "--control", "{tmp}/none.sock", "--watch", "0.01", "--count", "2"], EXIT_FAILURE, "no stack"),
        (["fetch", "--control", "{tmp}/none.sock", "ftp://10.0.0.1/"], EXIT_USAGE, "only http:// URLs"),
        (["fetch", "--control", "{tmp}/none.sock", "http://example.org/"], EXIT_USAGE, "must be an IPv4 address"),
        (["fetch", "--control", "{tmp}/none.sock", "http://10.0.0.1:0/"], EXIT_USAGE, "bad port"),
        (["fetch", "--control", "{tmp}/none.sock", "http://10.0.0.1/"], EXIT_FAILURE, "no stack answers at"),
        (["demo", "--pcap", "{tmp}/missing/x.pcap"], EXIT_USAGE, "--pcap: the directory"),
    ],
)
def test_bad_argument_is_one_line(
    argv: list[str], code: int, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each bad argument: its exit status and one line saying what is wrong; nothing is created."""
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(args) == code
    assert why in one_line(capsys.readouterr().err)
    assert not (tmp_path / "missing").exists()


def test_the_issue_inputs_as_real_processes(tmp_path: Path) -> None:
    """The inputs the issue found tracebacks for, through the installed entry point as separate processes:
    one line each, exit status non-zero."""
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(NOT_UTF8)
    for argv in (
        ["config", "check", str(bad)],
        ["up", "--tun", DEVICE, "--config", str(bad)],
        ["config", "init", "/proc/tcpstack-test.toml"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "tcpstack.cli", *argv], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode in (EXIT_FAILURE, EXIT_USAGE), proc
        one_line(proc.stderr)


@pytest.fixture
def unreadable_config() -> Iterator[tuple[tuple[str, ...], str]]:
    """A configuration file its reader may not read, and the command prefix of that reader (an
    unprivileged user when the tests run as root, since root reads anything)."""
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        tool = shutil.which("setpriv")
        assert tool is not None, "setpriv (util-linux) is needed to read as an unprivileged user"
        prefix = (tool, "--reuid=65534", "--regid=65534", "--clear-groups")
    folder = tempfile.mkdtemp(prefix="tcpstack-perm-")
    try:
        os.chmod(folder, 0o755)
        path = os.path.join(folder, "stack.toml")
        Path(path).write_text('[[layers]]\ntype = "tun"\n')
        os.chmod(path, 0)
        yield prefix, path
    finally:
        shutil.rmtree(folder)


def test_configuration_without_read_permission_is_one_line(unreadable_config: tuple[tuple[str, ...], str]) -> None:
    """A configuration file the user may not read: one line "cannot read: Permission denied", exit 2."""
    prefix, path = unreadable_config
    for argv in (["config", "check", path], ["up", "--tun", DEVICE, "--config", path]):
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "tcpstack.cli", *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == EXIT_USAGE, proc
        assert one_line(proc.stderr) == f"tcpstack: error: {path}: cannot read: Permission denied"


class FakeTun:
    """Stands in for TunLink, so `up` gets past opening the device without one."""

    closed: list[bool] = []

    def __init__(self, device: str, **kwargs: object) -> None:
        self.name, self.mtu = device, 1500

    def close(self) -> None:
        FakeTun.closed.append(True)


def test_pid_file_that_cannot_be_written_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`up --pid-file` into a directory that does not exist: one line, exit 1, the device closed again."""
    monkeypatch.setattr("tcpstack.io.tun.TunLink", FakeTun)
    monkeypatch.setattr(FakeTun, "closed", [])
    pid_file = tmp_path / "missing" / "stack.pid"
    assert main(["up", "--tun", DEVICE, "--pid-file", str(pid_file)]) == EXIT_FAILURE
    line = one_line(capsys.readouterr().err)
    assert line == f"tcpstack: error: --pid-file {pid_file}: cannot write: No such file or directory"
    assert FakeTun.closed == [True]
