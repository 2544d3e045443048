"""`tcpstack config check FILE` and `tcpstack up --config FILE` agree on every configuration: the same
verdict and the same error lines, because both run one validation (`configcmd.validate_for_up`) before
`up` opens its device. The pipeline's shape is part of it: what a layer needs below it, the link at the
bottom, and no layer where it can never see traffic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from framework.errors import LinkError
from tcpstack.cli import EXIT_FAILURE, EXIT_USAGE, main
from tcpstack.config import build_stack, read_toml
from tcpstack.configcmd import validate_for_up

DEVICE = "tcpsnone0"
STOP = "fake TUN device: validation passed, stopping here"
TUN = f'[[layers]]\ntype = "tun"\ndevice = "{DEVICE}"\n'
MEMORY = '[[layers]]\ntype = "memory"\n'
IPV4 = '[[layers]]\ntype = "ipv4"\naddress = "10.0.0.2/24"\n'
TCP = '[[layers]]\ntype = "tcp"\n'
FAULT = '[[layers]]\ntype = "fault"\ndrop = 0.01\nseed = 1\n'
PCAP = '[[layers]]\ntype = "pcap"\npath = "{tmp}/capture.pcap"\n'

GOOD = {
    "the default shape": TUN + IPV4 + TCP,
    "middleware between the link and ipv4": TUN + PCAP + FAULT + IPV4 + TCP,
    "a capture between ipv4 and tcp": TUN + IPV4 + PCAP + TCP,
    "no transport": TUN + IPV4,
    "only the link": TUN,
}

BAD = {
    "tcp without ipv4": (TUN + TCP, ["layers[1] (tcp): needs an ipv4 layer below it"]),
    "tcp below ipv4": (
        TUN + TCP + IPV4,
        [
            "layers[1] (tcp): needs an ipv4 layer below it (layers[2] (ipv4) is above it)",
            "layers[2] (ipv4): never sees traffic: layers[1] (tcp) below it passes nothing up; "
            "place it below layers[1]",
        ],
    ),
    "tun not at the bottom": (
        IPV4 + TUN + TCP,
        [
            "layers[0] (ipv4): needs a link layer below it (layers[1] (tun) is above it)",
            "layers[1] (tun): must be the bottom layer, below layers[0] (ipv4)",
        ],
    ),
    "a middleware below the link": (
        FAULT + TUN + IPV4,
        [
            "layers[0] (fault): needs a link layer below it (layers[1] (tun) is above it)",
            "layers[1] (tun): must be the bottom layer, below layers[0] (fault)",
        ],
    ),
    "fault above tcp": (
        TUN + IPV4 + TCP + FAULT,
        ["layers[3] (fault): never sees traffic: layers[2] (tcp) below it passes nothing up; place it below layers[2]"],
    ),
    "pcap above tcp": (
        TUN + IPV4 + TCP + PCAP,
        ["layers[3] (pcap): never sees traffic: layers[2] (tcp) below it passes nothing up; place it below layers[2]"],
    ),
    "ipv4 without a link": (
        IPV4 + TCP,
        [
            "layers: 'tcpstack up' needs a layer of type 'tun' at the bottom",
            "layers[0] (ipv4): needs a link layer below it",
        ],
    ),
    "a memory link": (MEMORY + IPV4 + TCP, ["layers: 'tcpstack up' needs a layer of type 'tun' at the bottom"]),
    "two links": (
        TUN + IPV4 + MEMORY,
        ["layers[2] (memory): must be the bottom layer, below layers[0] (tun)"],
    ),
    "two ipv4 layers": (TUN + IPV4 + IPV4, ["layers: more than one layer of type 'ipv4'"]),
    "an ipv4 mtu above the link's": (
        TUN + IPV4 + "mtu = 9000\n" + TCP,
        ["layers[1].mtu: 9000 exceeds the MTU 1500 of the tun layer below"],
    ),
    "a capture in a missing directory": (
        TUN + PCAP.replace("{tmp}", "{tmp}/missing") + IPV4,
        ["layers[1].path: the directory {tmp}/missing does not exist"],
    ),
    "an unknown key": (TUN + IPV4 + "adress = 1\n", ["layers[1].adress: unknown key (did you mean 'address'?)"]),
    "an unknown type (no shape guessed around it)": (
        TUN + '[[layers]]\ntype = "ipv6"\n' + TCP,
        ["layers[1].type: unknown layer type 'ipv6' (known: fault, ipv4, memory, pcap, seqshift, tcp, tun, udp)"],
    ),
}


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


class StopAtTheDevice:
    """Stands in for TunLink: reaching it means `up` accepted the configuration; it opens nothing."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise LinkError(STOP)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(argv)
    err = capsys.readouterr().err.splitlines()
    assert not any("Traceback" in line for line in err)
    return code, err


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stack.toml"
    path.write_text(text.replace("{tmp}", str(tmp_path)))
    return path


@pytest.mark.parametrize("text", GOOD.values(), ids=GOOD.keys())
def test_good_configurations_pass_both_and_build(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`config check` says valid, `up` gets as far as opening the device, and the stack builds without a
    ConfigError (validation left nothing for assembly to find)."""
    monkeypatch.setattr("tcpstack.io.tun.TunLink", StopAtTheDevice)
    path = write(tmp_path, text)
    code, err = run(["config", "check", str(path)], capsys)
    assert (code, err) == (0, [])
    code, err = run(["up", "--config", str(path)], capsys)
    assert (code, err) == (EXIT_FAILURE, [f"tcpstack: error: {STOP}"])
    config = validate_for_up(read_toml(path))
    stack = build_stack(config)
    assert config.host is not None
    config.host.stack_closed(stack)  # closes a capture file


@pytest.mark.parametrize(("text", "problems"), BAD.values(), ids=BAD.keys())
def test_bad_configurations_fail_both_with_the_same_lines(
    text: str,
    problems: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`config check` and `up` exit 2 with the same error lines, each naming its key path; `up` never
    reaches the device."""
    monkeypatch.setattr("tcpstack.io.tun.TunLink", StopAtTheDevice)
    path = write(tmp_path, text)
    expected = [f"tcpstack: error: {p.replace('{tmp}', str(tmp_path))}" for p in problems]
    check = run(["config", "check", str(path)], capsys)
    up = run(["up", "--config", str(path)], capsys)
    assert check == (EXIT_USAGE, expected)
    assert up == check
