"""Names that moved from framework/ to the tcpstack package fail with an ImportError naming the new place."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("framework.cli", "tcpstack.cli"),
        ("framework.demo", "tcpstack.demo"),
        ("framework.control", "tcpstack.control"),
        ("framework.services", "tcpstack.services"),
        ("framework.configcmd", "tcpstack.configcmd"),
        ("framework.netns", "tcpstack.netns"),
        ("framework.docgen", "tcpstack.docgen"),
        ("framework.logging", "tcpstack.logging"),
        ("framework.io", "tcpstack.io"),
        ("framework.io.tun", "tcpstack.io.tun"),
        ("framework.io.driver", "tcpstack.io.driver"),
        ("framework.api", "tcpstack.streams"),
        ("framework.api.streams", "tcpstack.streams"),
        ("framework.testing", "tcpstack.testing"),
        ("framework.testing.pair", "tcpstack.testing.pair"),
    ],
)
def test_a_moved_module_says_where_it_went(old: str, new: str) -> None:
    with pytest.raises(ImportError, match=r"moved to .*" + new.replace(".", r"\.")):
        importlib.import_module(old)
    assert old not in sys.modules


@pytest.mark.parametrize(
    ("statement", "new"),
    [
        ("from framework.config import DEFAULT_CONFIG", "tcpstack.config"),
        ("from framework.config import default_config_dict", "tcpstack.config"),
        ("from framework.plugins import BUILTIN_PLUGINS", "tcpstack.plugins"),
        ("from framework.api.streams import open_connection", "tcpstack.streams"),
        ("from framework.testing import make_stack", "tcpstack.testing"),
        ("import framework.cli", "tcpstack.cli"),
    ],
)
def test_old_imports_fail_with_the_new_module_in_the_message(statement: str, new: str) -> None:
    """As a fresh program would see it (nothing of tcpstack imported before)."""
    r = subprocess.run([sys.executable, "-c", statement], capture_output=True, text=True)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert "ImportError" in last or "ModuleNotFoundError" in last, last
    assert new in last, last


def test_other_missing_names_are_ordinary_errors() -> None:
    import framework.config

    assert not hasattr(framework.config, "NO_SUCH_NAME")
    with pytest.raises(ImportError, match="cannot import name"):
        exec("from framework.config import NO_SUCH_NAME")
    with pytest.raises(ModuleNotFoundError, match=r"No module named 'framework\.nosuch'"):
        importlib.import_module("framework.nosuch")
