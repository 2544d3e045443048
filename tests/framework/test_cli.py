"""The tcpstack command line: help, exit statuses, and one-line errors without tracebacks."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from framework.errors import ConfigError
from tcpstack.cli import EXIT_FAILURE, EXIT_USAGE, _up_config, build_parser, main
from tcpstack.io.tun import device_exists
from tcpstack.logging import configure_logging

ROOT = Path(__file__).resolve().parents[2]
MISSING_DEVICE = "tcpsnone0"
UP_OPTIONS = {
    "--tun": "TUN device to attach to",
    "--address": "IPv4 address",
    "--config": "TOML configuration file",
    "--pcap": "FILE.pcapng is pcapng with the decisions",
    "--create": "create the TUN device",
    "--mtu": "link MTU",
    "--log-format": "JSON lines",
    "--log-level": "least severe level",
}


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """main() configures structlog globally; put the defaults back after each test."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _wide_help(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep argparse from wrapping help lines, so each option's text is on its line."""
    monkeypatch.setenv("COLUMNS", "200")


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    """Run main in-process; return (exit status, stdout, stderr lines)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def option_entries(help_text: str) -> dict[str, str]:
    """Map each option of an argparse help text to its entry (the flag line and its description)."""
    entries: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        stripped = line.strip()
        if line.startswith("  -"):
            current = stripped.split()[0].rstrip(",")
            entries[current] = stripped
        elif current is not None and line.startswith("    ") and stripped:
            entries[current] += " " + stripped
        else:
            current = None
    return entries


def assert_one_error_line(lines: list[str]) -> str:
    """The stderr of a failed run is exactly one "tcpstack: error:" line and no traceback."""
    assert len(lines) == 1, lines
    assert lines[0].startswith("tcpstack: error: ")
    assert "Traceback" not in lines[0]
    return lines[0]


def write_config(tmp_path: Path, ipv4_lines: str) -> Path:
    path = tmp_path / "stack.toml"
    path.write_text(f'[[layers]]\ntype = "tun"\ndevice = "{MISSING_DEVICE}"\n\n[[layers]]\ntype = "ipv4"\n{ipv4_lines}')
    return path


@pytest.fixture
def no_such_device() -> str:
    """A TUN device name that does not exist (so no test ever attaches to a real device)."""
    assert not device_exists(MISSING_DEVICE)
    return MISSING_DEVICE


# ---------------------------------------------------------------------------------- help


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    """tcpstack --help exits 0 and lists the commands."""
    code, out, err = run_main(["--help"], capsys)
    assert code == 0
    assert err == []
    assert "up " in out and "run a stack on a TUN device" in out
    assert "COMMAND --help" in out


def test_up_help_describes_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    """tcpstack up --help exits 0 and describes every option on its own line."""
    code, out, _ = run_main(["up", "--help"], capsys)
    assert code == 0
    entries = option_entries(out)
    for option, text in UP_OPTIONS.items():
        assert text in entries.get(option, ""), f"{option} is not described with {text!r}"
    assert "{console,json}" in entries["--log-format"]
    assert "{debug,info,warning,error,critical}" in entries["--log-level"]


# ---------------------------------------------------------------------------------- failures


def test_bad_address(capsys: pytest.CaptureFixture[str], no_such_device: str) -> None:
    """A bad --address exits 2 with one error line naming the key path."""
    code, out, err = run_main(["up", "--tun", no_such_device, "--address", "10.0.0.300/24"], capsys)
    assert code == EXIT_USAGE
    line = assert_one_error_line(err)
    assert line == (
        "tcpstack: error: layers[1].address: '10.0.0.300/24' is not an IPv4 address with prefix, like '10.0.0.2/24'"
    )
    assert out == ""


def test_bad_config_file_names_key_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A config file with an unknown key exits 2 naming the key path."""
    path = write_config(tmp_path, 'adress = "10.0.0.2/24"\n')
    code, _, err = run_main(["up", "--config", str(path)], capsys)
    assert code == EXIT_USAGE
    assert assert_one_error_line(err) == "tcpstack: error: layers[1].adress: unknown key (did you mean 'address'?)"


def test_config_file_with_several_problems(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Every problem of a config file gets its own error line; the exit status is 2."""
    path = write_config(tmp_path, 'adress = "10.0.0.2/24"\nttl = 0\n')
    code, _, err = run_main(["up", "--config", str(path)], capsys)
    assert code == EXIT_USAGE
    assert err == [
        "tcpstack: error: layers[1].adress: unknown key (did you mean 'address'?)",
        "tcpstack: error: layers[1].ttl: 0 is out of range [1, 255]",
    ]


def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A config file that does not exist exits 2 with one error line."""
    missing = tmp_path / "nope.toml"
    code, _, err = run_main(["up", "--config", str(missing)], capsys)
    assert code == EXIT_USAGE
    assert assert_one_error_line(err) == f"tcpstack: error: {missing}: cannot read: No such file or directory"


def test_invalid_toml_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A config file that is not TOML exits 2 with one error line."""
    path = tmp_path / "bad.toml"
    path.write_text("[[layers]\n")
    code, _, err = run_main(["up", "--config", str(path)], capsys)
    assert code == EXIT_USAGE
    assert assert_one_error_line(err).startswith(f"tcpstack: error: {path}: invalid TOML: ")


def test_missing_tun_device(capsys: pytest.CaptureFixture[str], no_such_device: str) -> None:
    """A TUN device that does not exist (without --create) exits 1 saying so."""
    code, _, err = run_main(["up", "--tun", no_such_device], capsys)
    assert code == EXIT_FAILURE
    line = assert_one_error_line(err)
    assert "does not exist" in line
    if os.path.exists("/dev/net/tun"):
        assert f"'{no_such_device}'" in line and "--create" in line


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        ('[[layers]]\ntype = "memory"\n', "layers: 'tcpstack up' needs a layer of type 'tun' at the bottom"),
        (
            '[[layers]]\ntype = "memory"\n[[layers]]\ntype = "tun"\n',
            "layers[1] (tun): must be the bottom layer, below layers[0] (memory)",
        ),
    ],
)
def test_up_needs_tun_at_the_bottom(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, layers: str, expected: str
) -> None:
    """tcpstack up rejects a configuration whose bottom layer is not a TUN device."""
    path = tmp_path / "stack.toml"
    path.write_text(layers)
    code, _, err = run_main(["up", "--config", str(path)], capsys)
    assert code == EXIT_USAGE
    assert assert_one_error_line(err) == f"tcpstack: error: {expected}"


class FakeTun:
    """Stands in for TunLink so the command can get past opening the device without privileges."""

    instances: list[FakeTun] = []

    def __init__(self, device: str, *, mtu: int, create: bool, kernel_address: str | None, offload: bool) -> None:
        self.name, self.mtu, self.closed = device, mtu, False
        FakeTun.instances.append(self)

    def close(self) -> None:
        self.closed = True


def test_build_error_is_one_line_and_closes_link(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A configuration that validates but cannot be assembled (a capture file only opening shows cannot be
    created) exits 2 with one line; the link is closed."""
    monkeypatch.setattr("tcpstack.io.tun.TunLink", FakeTun)
    monkeypatch.setattr(FakeTun, "instances", [])
    code, _, err = run_main(["up", "--tun", MISSING_DEVICE, "--pcap", "/proc/tcpstack-test.pcap"], capsys)
    assert code == EXIT_USAGE
    assert assert_one_error_line(err).startswith("tcpstack: error: layers[1]: pcap.path: cannot open /proc/")
    (link,) = FakeTun.instances
    assert link.closed


def test_mtu_above_the_link_is_found_before_the_device_is_opened(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An ipv4.mtu above the link's is a validation error (as `config check` reports it): exit 2, one line,
    and the device is never opened."""
    monkeypatch.setattr("tcpstack.io.tun.TunLink", FakeTun)
    monkeypatch.setattr(FakeTun, "instances", [])
    path = write_config(tmp_path, "mtu = 9000\n")
    code, _, err = run_main(["up", "--config", str(path)], capsys)
    assert code == EXIT_USAGE
    line = assert_one_error_line(err)
    assert line == "tcpstack: error: layers[1].mtu: 9000 exceeds the MTU 1500 of the tun layer below"
    assert FakeTun.instances == []


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A command-line usage error (argparse) exits 2 without a traceback."""
    code, _, err = run_main(["up", "--log-format", "xml"], capsys)
    assert code == EXIT_USAGE
    assert not any("Traceback" in line for line in err)
    assert "invalid choice: 'xml'" in err[-1]


# ---------------------------------------------------------------------------------- overrides


def test_command_line_overrides() -> None:
    """--tun, --create, --mtu, --address and --pcap override the default configuration."""
    args = build_parser().parse_args(
        ["up", "--tun", "tun7", "--create", "--mtu", "1400", "--address", "10.1.0.2/16", "--pcap", "x.pcap"]
    )
    data = _up_config(args)
    assert data["layers"] == [
        {"type": "tun", "device": "tun7", "create": True, "mtu": 1400},
        {"type": "pcap", "path": "x.pcap"},
        {"type": "ipv4", "address": "10.1.0.2/16"},
        {"type": "tcp"},
    ]


def test_pcap_override_repoints_existing_layer(tmp_path: Path) -> None:
    """--pcap re-points a pcap layer the configuration already has instead of adding another."""
    path = tmp_path / "stack.toml"
    path.write_text('[[layers]]\ntype = "tun"\n[[layers]]\ntype = "pcap"\npath = "a.pcap"\n[[layers]]\ntype = "ipv4"\n')
    data = _up_config(build_parser().parse_args(["up", "--config", str(path), "--pcap", "b.pcap"]))
    assert [layer["type"] for layer in data["layers"]] == ["tun", "pcap", "ipv4"]
    assert data["layers"][1]["path"] == "b.pcap"


def test_address_needs_ipv4_layer(tmp_path: Path) -> None:
    """--address with a configuration that has no ipv4 layer is a ConfigError."""
    path = tmp_path / "stack.toml"
    path.write_text('[[layers]]\ntype = "tun"\n')
    with pytest.raises(ConfigError) as info:
        _up_config(build_parser().parse_args(["up", "--config", str(path), "--address", "10.0.0.2/24"]))
    assert info.value.problems == ["layers: --address needs a layer of type 'ipv4'"]


# ---------------------------------------------------------------------------------- logging


def test_json_log_format_writes_json_lines() -> None:
    """--log-format json renders each event as one JSON object per line, filtered by level."""
    stream = io.StringIO()
    configure_logging(fmt="json", level="info", stream=stream)
    log = structlog.get_logger("tests.cli")
    log.info("stack.up", device="tun0", mtu=1500)
    log.debug("packet.dropped", layer="ipv4", reason="bad_checksum")  # below the level: not shown
    log.warning("link.slow", queued=3)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["event"] for r in records] == ["stack.up", "link.slow"]
    assert records[0]["device"] == "tun0" and records[0]["mtu"] == 1500
    assert records[0]["level"] == "info" and records[1]["level"] == "warning"
    assert all(r["timestamp"].endswith("Z") for r in records)


def test_console_log_format_and_debug_level() -> None:
    """The console format writes readable lines, and level debug shows debug events."""
    stream = io.StringIO()
    configure_logging(fmt="console", level="debug", stream=stream)
    structlog.get_logger("tests.cli").debug("packet.dropped", layer="ipv4", reason="bad_checksum")
    text = stream.getvalue()
    assert "packet.dropped" in text and "reason=bad_checksum" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


@pytest.mark.parametrize(("fmt", "level"), [("xml", "info"), ("json", "verbose")])
def test_configure_logging_rejects_unknown_values(fmt: str, level: str) -> None:
    """An unknown log format or level is a ValueError naming it."""
    with pytest.raises(ValueError, match=r"xml|verbose"):
        configure_logging(fmt=fmt, level=level)


# ---------------------------------------------------------------------------------- subprocess


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", COLUMNS="200")
    env.pop("TCPSTACK_TRACE_PLUGINS", None)
    return env


def run_cli(args: list[str], prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    cmd = [*prefix, sys.executable, "-m", "tcpstack.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)


def test_installed_script_help() -> None:
    """The installed tcpstack script runs: --help and up --help exit 0 as separate processes."""
    script = Path(sys.executable).parent / "tcpstack"
    if not script.exists():
        pytest.skip(f"no installed script at {script}")
    for args in (["--help"], ["up", "--help"]):
        proc = subprocess.run([str(script), *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
    assert all(option in proc.stdout for option in UP_OPTIONS)


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["up", "--tun", MISSING_DEVICE, "--address", "10.0.0.2/33"], EXIT_USAGE, "layers[1].address"),
        (["up", "--config", "/nonexistent/stack.toml"], EXIT_USAGE, "cannot read"),
        (["up", "--tun", MISSING_DEVICE], EXIT_FAILURE, "does not exist"),
    ],
)
def test_subprocess_errors_have_no_traceback(no_such_device: str, args: list[str], code: int, needle: str) -> None:
    """As a real process, each failure exits with its status and prints one line, no traceback."""
    proc = run_cli(args)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert needle in assert_one_error_line(proc.stderr.splitlines())


def _unprivileged_prefix() -> tuple[str, ...] | None:
    """A command prefix that runs a program as an unprivileged user, or None if impossible."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv"):
        return ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    if shutil.which("runuser"):
        return ("runuser", "-u", "nobody", "--")
    return None


def test_permission_denied_without_privileges() -> None:
    """Creating a TUN device without privileges exits 1 with one "permission denied" line."""
    prefix = _unprivileged_prefix()
    if prefix is None:
        pytest.skip("running as root and neither setpriv nor runuser is available to drop privileges")
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("this kernel or container has no /dev/net/tun")
    device = "tcpsperm0"
    assert not device_exists(device)
    probe = run_cli(["--help"], prefix)
    if probe.returncode != 0:
        pytest.skip(f"the unprivileged user cannot run the program from this checkout: {probe.stderr.strip()}")
    proc = run_cli(["up", "--tun", device, "--create"], prefix)
    assert proc.returncode == EXIT_FAILURE, proc.stderr
    line = assert_one_error_line(proc.stderr.splitlines())
    assert "permission" in line.lower()
    assert not device_exists(device)


class TestFeatureOptions:
    def test_parse_feature_settings(self) -> None:
        """--feature NAME:KEY=VALUE,... parses numbers, booleans and strings."""
        from tcpstack.cli import parse_feature

        assert parse_feature("keepalive:idle=60,interval=2.5,garbage_octet=true") == (
            "keepalive",
            {"idle": 60, "interval": 2.5, "garbage_octet": True},
        )
        assert parse_feature("nagle") == ("nagle", {})

    def test_bad_feature_spec_is_a_usage_error(self) -> None:
        """A malformed --feature is one clear error line before anything starts."""
        args = build_parser().parse_args(["up", "--feature", "nagle:cork"])
        with pytest.raises(ConfigError, match="expected KEY=VALUE"):
            _up_config(args)

    def test_feature_flags_edit_the_tcp_layer(self) -> None:
        """--feature, --no-feature and --congestion-control become the tcp layer's settings."""
        args = build_parser().parse_args(
            ["up", "--feature", "keepalive:idle=60", "--no-feature", "nagle", "--congestion-control", "reno"]
        )
        tcp = _up_config(args)["layers"][-1]
        assert tcp == {
            "type": "tcp",
            "features": {"keepalive": {"idle": 60}, "nagle": False},
            "congestion_control": "reno",
        }

    def test_unknown_feature_and_algorithm_exit_2_naming_the_key(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Unknown feature or algorithm names are reported with their key path, exit status 2."""
        code = main(["up", "--tun", "tcpsnone0", "--feature", "nagl", "--congestion-control", "vegas"])
        err = capsys.readouterr().err
        assert code == 2
        assert "layers[2].features.nagl: unknown feature 'nagl'" in err
        assert "layers[2].congestion_control: unknown algorithm 'vegas'" in err


class TestConfigCommand:
    def test_init_writes_an_example_that_checks_clean(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`config init FILE` writes a commented example that `config check` accepts, showing the resolved stack."""
        path = tmp_path / "stack.toml"
        assert main(["config", "init", str(path)]) == 0
        assert path.read_text().startswith("# tcpstack configuration")
        assert main(["config", "check", str(path)]) == 0
        out = capsys.readouterr().out
        assert "valid" in out and "0. tun: device='tun0'" in out and "2. tcp:" in out
        assert "feature delayed_ack: timeout=0.04" not in out  # the example sets the default value
        assert "congestion control: cubic" in out and "feature sack: defaults" in out

    def test_init_refuses_to_overwrite(self, tmp_path: Path) -> None:
        """`config init` never overwrites a file unless --force."""
        path = tmp_path / "stack.toml"
        path.write_text("keep me")
        assert main(["config", "init", str(path)]) == 1
        assert path.read_text() == "keep me"
        assert main(["config", "init", "--force", str(path)]) == 0

    def test_check_reports_every_problem(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`config check` lists every problem with its key path and exits 2."""
        path = tmp_path / "bad.toml"
        path.write_text('[[layers]]\ntype="tun"\nmtuu=5\n[[layers]]\ntype="tcp"\nfeatures={bogus={}}\n')
        assert main(["config", "check", str(path)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert "tcpstack: error: layers[0].mtuu: unknown key (did you mean 'mtu'?)" in err
        assert any(line.startswith("tcpstack: error: layers[1].features.bogus: unknown feature") for line in err)


def test_events_name_the_last_pcap_frame_while_linked() -> None:
    """With a capture linked, every emitted event carries pcap_frame (the last frame's 1-based number)."""
    from types import SimpleNamespace

    from tcpstack.logging import link_pcap

    stream = io.StringIO()
    configure_logging(fmt="json", level="debug", stream=stream)
    counter = SimpleNamespace(frames=0)
    log = structlog.get_logger("tests.cli")
    link_pcap(counter)
    try:
        counter.frames = 7
        log.debug("tcp.decision", decision="ACK delayed")
        counter.frames = 8
        log.info("tcp.closed")
    finally:
        link_pcap(None)
    log.info("stack.down")
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r.get("pcap_frame") for r in records] == [7, 8, None]


def test_snaplen_sets_the_capture_and_is_validated(capsys: pytest.CaptureFixture[str]) -> None:
    """--snaplen sets the pcap layer's snaplen; without a capture, or out of range, it is a usage error."""
    data = _up_config(build_parser().parse_args(["up", "--pcap", "x.pcap", "--snaplen", "128"]))
    assert {"type": "pcap", "path": "x.pcap", "snaplen": 128} in data["layers"]
    with pytest.raises(ConfigError, match="--snaplen: no capture"):
        _up_config(build_parser().parse_args(["up", "--snaplen", "128"]))
    assert main(["up", "--tun", MISSING_DEVICE, "--pcap", "x.pcap", "--snaplen", "10"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "snaplen" in err and "68" in err, err


def test_offload_flag_sets_the_tun_layer() -> None:
    """--offload turns on the tun layer's offload (the I/O edge then opens the device with IFF_VNET_HDR)."""
    data = _up_config(build_parser().parse_args(["up", "--offload"]))
    assert data["layers"][0]["offload"] is True
    assert "offload" not in _up_config(build_parser().parse_args(["up"]))["layers"][0]


@pytest.mark.parametrize("args", [["--watch", "nan"], ["--watch", "inf"], ["--watch", "0"], ["--count", "3"]])
def test_bad_watch_options_are_usage_errors(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`tcpstack ss --watch nan|inf|0` and `--count` without `--watch`: one error line, exit 2, no traceback."""
    assert main(["ss", "--control", "/nonexistent.sock", *args]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("tcpstack: error:") and "Traceback" not in err


def test_congestion_control_option_takes_settings() -> None:
    """--congestion-control NAME:KEY=VALUE selects the algorithm and fills the tcp layer's congestion table."""
    data = _up_config(build_parser().parse_args(["up", "--congestion-control", "slow:divisor=8"]))
    tcp = next(x for x in data["layers"] if x["type"] == "tcp")
    assert tcp["congestion_control"] == "slow" and tcp["congestion"] == {"slow": {"divisor": 8}}
    plain = _up_config(build_parser().parse_args(["up", "--congestion-control", "reno"]))
    assert "congestion" not in next(x for x in plain["layers"] if x["type"] == "tcp")
    with pytest.raises(ConfigError, match="--congestion-control 'reno:oops': expected KEY=VALUE"):
        _up_config(build_parser().parse_args(["up", "--congestion-control", "reno:oops"]))
