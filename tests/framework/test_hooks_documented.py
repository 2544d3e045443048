"""Every hookspec has a section in docs/hooks.md headed by its exact signature."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from framework import hookspecs

ROOT = Path(__file__).resolve().parents[2]
HOOKS_DOC = ROOT / "docs" / "hooks.md"
SPEC_MARK = f"{hookspecs.PROJECT}_spec"  # the attribute pluggy.HookspecMarker sets on a spec


def hookspec_names() -> list[str]:
    return sorted(
        name
        for name, func in inspect.getmembers(hookspecs, inspect.isfunction)
        if getattr(func, SPEC_MARK, None) is not None
    )


def signature_line(name: str) -> str:
    """``name(arg: Type, ...) -> Return`` exactly as written in framework/hookspecs.py."""
    tree = ast.parse(Path(hookspecs.__file__).read_text())
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
    """The spec marker finds the hooks (so the documentation test below checks something)."""
    assert {"stack_register", "stack_configured", "stack_closed"} <= set(hookspec_names())
    assert signature_line("stack_register") == "stack_register(registry: Registry) -> None"


@pytest.mark.parametrize("name", hookspec_names())
def test_hook_has_section_headed_by_signature(name: str) -> None:
    """docs/hooks.md has a section whose heading is the hook's exact signature."""
    signature = signature_line(name)
    matching = [h for h in headings() if name in h]
    assert matching, f"docs/hooks.md has no section heading for hook {name!r}"
    assert any(signature in h for h in matching), (
        f"docs/hooks.md's heading for {name!r} does not show its signature {signature!r}: {matching}"
    )
