"""Every hookspec has a section in docs/hooks.md headed by its exact signature, wherever it is
declared: the stack's own hooks (framework/hookspecs.py) and the hooks layers add through
``stack_addhooks`` (layers/tcp/hookspecs.py), found through a plugin host with every built-in
plugin."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from framework import hookspecs
from tcpstack.plugins import PluginHost

ROOT = Path(__file__).resolve().parents[2]
HOOKS_DOC = ROOT / "docs" / "hooks.md"

HOOKS = PluginHost(entry_points=False).hook_names()


def hookspec_names() -> list[str]:
    return sorted(HOOKS)


def signature_line(name: str) -> str:
    """``name(arg: Type, ...) -> Return`` exactly as written in the module that declares it."""
    tree = ast.parse(Path(inspect.getfile(HOOKS[name])).read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    return f"{name}({ast.unparse(node.args)}){returns}"


def headings() -> list[str]:
    """The markdown headings of docs/hooks.md, without '#' marks and backticks."""
    if not HOOKS_DOC.exists():
        pytest.fail(f"{HOOKS_DOC.relative_to(ROOT)} does not exist: document every hook there")
    lines = HOOKS_DOC.read_text().splitlines()
    return [line.lstrip("#").replace("`", "").strip() for line in lines if line.startswith("#")]


def test_hookspecs_are_found() -> None:
    """The host finds the hooks of the core and of the layers (so the documentation test below
    checks something), each in the module that declares it."""
    assert {"stack_register", "stack_configured", "stack_closed", "stack_addhooks"} <= set(hookspec_names())
    assert HOOKS["stack_register"] is hookspecs
    assert HOOKS["tcp_connection_setup"].__name__ == "layers.tcp.hookspecs"
    assert signature_line("stack_register") == "stack_register(registry: Registry) -> None"
    assert signature_line("tcp_connection_setup") == "tcp_connection_setup(setup: TcpSetup) -> None"


def test_the_core_declares_stack_hooks_only() -> None:
    """framework/hookspecs.py declares the hooks of the stack as a whole; a layer's hooks live
    with the layer."""
    core = [name for name, module in HOOKS.items() if module is hookspecs]
    assert core and all(name.startswith("stack_") for name in core), core


@pytest.mark.parametrize("name", hookspec_names())
def test_hook_has_section_headed_by_signature(name: str) -> None:
    """docs/hooks.md has a section whose heading is the hook's exact signature."""
    signature = signature_line(name)
    matching = [h for h in headings() if name in h]
    assert matching, f"docs/hooks.md has no section heading for hook {name!r}"
    assert any(signature in h for h in matching), (
        f"docs/hooks.md's heading for {name!r} does not show its signature {signature!r}: {matching}"
    )
