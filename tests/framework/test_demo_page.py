"""tcpstack/demo.py's `--open` and its probe-file reading, without a namespace."""

from __future__ import annotations

import json
import webbrowser
from pathlib import Path

import pytest

from tcpstack import demo


class FakeBrowser:
    def __init__(self, ok: bool) -> None:
        self.ok = ok
        self.opened: list[str] = []

    def open(self, url: str) -> bool:
        self.opened.append(url)
        return self.ok


def test_open_page_uses_the_browser_when_there_is_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    page = tmp_path / "demo.html"
    page.write_text("<html></html>")
    browser = FakeBrowser(True)
    monkeypatch.setattr(webbrowser, "get", lambda: browser)
    assert demo._open_page(page) == "opened in a web browser"
    assert browser.opened == [page.as_uri()]
    monkeypatch.setattr(webbrowser, "get", lambda: FakeBrowser(False))
    assert demo._open_page(page) == "the web browser did not start"


def test_open_page_says_so_without_a_browser(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def none() -> webbrowser.BaseBrowser:
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(webbrowser, "get", none)
    assert "no web browser found" in demo._open_page(tmp_path / "demo.html")


def test_transfers_are_found_by_their_ports_in_the_probe_file(tmp_path: Path) -> None:
    """Which probed connection was which of the demo's transfers: port 80 twice (download, then
    upload), port 81 (the faulted download), the stack's fetch to the kernel's port 8080; other
    connections and lines that are not open records (or not JSON) are left out."""
    opens = [
        (1, "10.0.0.2:80", "10.0.0.1:40000"),
        (2, "10.0.0.2:80", "10.0.0.1:40002"),
        (3, "10.0.0.2:81", "10.0.0.1:40004"),
        (4, "10.0.0.2:7", "10.0.0.1:40006"),
        (5, "10.0.0.2:51000", f"10.0.0.1:{demo.HTTP_PORT}"),
    ]
    lines = [json.dumps({"event": "open", "conn": n, "local": a, "remote": b}) for n, a, b in opens]
    lines.insert(2, json.dumps({"event": "send", "conn": 1, "local": None, "remote": None}))
    lines.append('{"event": "open", "conn": ')  # a line cut short
    probe = tmp_path / "probe.jsonl"
    probe.write_text("\n".join(lines) + "\n")
    assert demo._transfers(probe) == [("download", 1), ("upload", 2), ("download-with-loss", 3), ("fetch", 5)]
