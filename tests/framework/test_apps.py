"""``tcpstack up --app [HOST:]PORT=MODULE:CALLABLE`` and ``--app-protocol``: parsing, loading and the
one-line errors, before any device is opened."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tcpstack.apps import AppError, AppSpec, load_app, parse_app
from tcpstack.cli import EXIT_FAILURE, EXIT_USAGE, main


def test_parse_port_and_host() -> None:
    assert parse_app("8080=myapp:handle") == AppSpec("--app", "8080=myapp:handle", None, 8080, "myapp", "handle")
    spec = parse_app("10.0.0.2:80=pkg.mod:App.make", "--app-protocol")
    assert (spec.host, spec.port, spec.module, spec.attribute) == ("10.0.0.2", 80, "pkg.mod", "App.make")


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ("myapp:handle", "expected [HOST:]PORT=MODULE:CALLABLE"),
        ("0=myapp:handle", "PORT must be 1-65535"),
        ("65536=myapp:handle", "PORT must be 1-65535"),
        ("http=myapp:handle", "PORT must be 1-65535"),
        ("localhost:80=myapp:handle", "HOST 'localhost' is not an IPv4 address"),
        ("80=myapp", "expected MODULE:CALLABLE"),
        ("80=my-app:handle", "expected MODULE:CALLABLE"),
        ("80=myapp:", "expected MODULE:CALLABLE"),
    ],
)
def test_bad_specifications_say_what_is_expected(spec: str, text: str) -> None:
    with pytest.raises(AppError, match=rf"^--app '{spec}': .*{text.replace('[', '.').replace(']', '.')}"):
        parse_app(spec)


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "goodapp.py").write_text(
        "import asyncio\n"
        "async def handle(reader, writer):\n    writer.close()\n"
        "class App:\n    @staticmethod\n    def make():\n        return asyncio.Protocol()\n"
        "NOT_CALLABLE = 42\n"
    )
    (tmp_path / "brokenapp.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "raisingapp.py").write_text("raise RuntimeError('config missing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("goodapp", "brokenapp", "raisingapp"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def test_load_finds_the_callable(app_dir: Path) -> None:
    handle = load_app(parse_app("80=goodapp:handle"))
    assert handle.__name__ == "handle"
    assert load_app(parse_app("80=goodapp:App.make", "--app-protocol"))() is not None


@pytest.mark.parametrize(
    ("spec", "text", "usage"),
    [
        ("80=nosuchmodule_xyz:handle", "no module named 'nosuchmodule_xyz'", True),
        ("80=goodapp:missing", "module 'goodapp' has no attribute 'missing'", True),
        ("80=goodapp:NOT_CALLABLE", "goodapp:NOT_CALLABLE is a int, not callable", True),
        ("80=brokenapp:handle", "importing 'brokenapp' failed: ModuleNotFoundError", False),
        ("80=raisingapp:handle", "importing 'raisingapp' failed: RuntimeError: config missing", False),
    ],
)
def test_load_failures_are_one_clear_error(app_dir: Path, spec: str, text: str, usage: bool) -> None:
    with pytest.raises(AppError) as info:
        load_app(parse_app(spec))
    assert text in str(info.value) and info.value.usage is usage


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["--app", "80"], EXIT_USAGE, "--app '80': expected [HOST:]PORT=MODULE:CALLABLE"),
        (["--app-protocol", "80=goodapp:NOT_CALLABLE"], EXIT_USAGE, "not callable"),
        (["--app", "80=raisingapp:handle"], EXIT_FAILURE, "RuntimeError: config missing"),
        (["--app", "80=goodapp:handle", "--serve", "http:80"], EXIT_USAGE, "two servers on one port"),
    ],
)
def test_cli_errors_come_before_the_device_is_opened(
    app_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int, text: str
) -> None:
    """A bad --app is one line on stderr and the exit status, with a device that does not even exist."""
    assert main(["up", "--tun", "tcpsnone0", *args]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tcpstack: error: ") and text in err[0], err
