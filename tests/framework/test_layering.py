"""The rings of docs/architecture.md hold: tcpstack -> plugins -> layers -> framework.

``lint-imports`` (import-linter, configured in pyproject.toml's ``[tool.importlinter]``) checks
every import, including those inside functions and under ``TYPE_CHECKING``; the greps below
check what it cannot see: that framework/ does not even *name* a layer or plugin module.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACTS = 4


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: run scripts/setup (import-linter is a test dependency)")
    env = {"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(cwd), "NO_COLOR": "1"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_import_contracts_hold() -> None:
    """The import-linter contracts of pyproject.toml are kept."""
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {CONTRACTS} kept, 0 broken." in result.stdout, result.stdout


def test_contracts_catch_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    """The same contracts on a tree whose core imports a layer only lazily and under
    TYPE_CHECKING, whose layer imports a plugin and whose UDP imports IPv4: all are reported."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    files = {
        "framework/__init__.py": "",
        "framework/core.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from layers.tcp import Thing\n"
            "def later():\n    import plugins.nagle\n"
        ),
        "layers/__init__.py": "",
        "layers/tcp.py": "import plugins.nagle\nThing = 1\n",
        "layers/ipv4.py": "",
        "layers/udp.py": "import layers.ipv4\n",  # issue 13: a transport names no network layer
        "plugins/__init__.py": "",
        "plugins/nagle.py": "import layers.tcp\n",
        "tcpstack/__init__.py": "import plugins.nagle\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert f"Contracts: 0 kept, {CONTRACTS} broken." in result.stdout, result.stdout
    assert "framework.core -> layers.tcp" in result.stdout and "framework.core -> plugins.nagle" in result.stdout
    assert "layers.tcp -> plugins.nagle" in result.stdout
    assert "layers.udp -> layers.ipv4" in result.stdout


def _framework_sources() -> list[Path]:
    return sorted((ROOT / "framework").rglob("*.py"))


def test_framework_imports_nothing_above_it() -> None:
    """No import statement of framework/ names layers, plugins or tcpstack."""
    pattern = re.compile(r"^\s*(from|import) (layers|plugins|tcpstack)\b")
    hits = [
        f"{path.relative_to(ROOT)}:{no}: {line.strip()}"
        for path in _framework_sources()
        for no, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.match(line)
    ]
    assert hits == []


def _module_names(package: str) -> set[str]:
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names - {package}  # the bare words are configuration keys ([[layers]], [plugins])


def test_framework_names_no_layer_or_plugin_module() -> None:
    """framework/ names no module of layers/, plugins/ or tcpstack/, not even in a string or a
    docstring (logger names such as ``"tcpstack.plugins"`` are names of loggers, not modules).
    One exception: ``framework/_moved.py`` names the ``tcpstack`` modules that names moved to,
    as the text of the ImportError an old import raises (issue 10: "names that moved fail with an
    error that says where they went"); it names no layer or plugin module either."""
    modules = _module_names("layers") | _module_names("plugins") | _module_names("tcpstack")
    assert "layers.tcp.handler" in modules and "plugins.nagle" in modules  # the check sees something
    dotted = re.compile(r"(?<![\w.])(?:layers|plugins|tcpstack)(?:\.[A-Za-z_]\w*)+")
    hits = []
    for path in _framework_sources():
        allowed = _module_names("tcpstack") if path.name == "_moved.py" else set()
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if "get_logger(" in line:
                continue
            for match in dotted.finditer(line):
                parts = match.group().split(".")
                named = [".".join(parts[:i]) for i in range(2, len(parts) + 1)]
                if any(n in modules and n not in allowed for n in named):
                    hits.append(f"{path.relative_to(ROOT)}:{no}: {match.group()}")
    assert hits == []
