"""The event loop ``tcpstack up`` runs on: uvloop's when installed, unless TCPSTACK_UVLOOP=0."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from tcpstack.io import driver

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


@pytest.mark.parametrize("value", ["0", "off", "no", "false", " OFF "])
def test_the_variable_turns_uvloop_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(driver.UVLOOP_ENV, value)
    assert driver.loop_factory() is None and driver.event_loop_name() == "asyncio"

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert driver.run(which()).startswith("asyncio")


def test_uvloop_is_used_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(driver.UVLOOP_ENV, raising=False)
    if not HAVE_UVLOOP:
        assert driver.event_loop_name() == "asyncio"
        return

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert driver.event_loop_name() == "uvloop"
    assert driver.run(which()).startswith("uvloop")


def test_without_uvloop_installed_asyncio_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(driver.UVLOOP_ENV, raising=False)

    def missing(name: str) -> object:
        raise ImportError(name)

    monkeypatch.setattr(driver.importlib, "import_module", missing)
    assert driver.loop_factory() is None and driver.event_loop_name() == "asyncio"
