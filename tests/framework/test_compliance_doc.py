"""docs/compliance.md only cites tests that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "compliance.md"
REF = re.compile(r"`(tests/[\w/]+\.py)::([\w:]+)`")


def _names(path: Path) -> set[str]:
    """Every ``Class::test`` and ``test`` defined in a test file."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    names.add(f"{node.name}::{item.name}")
    return names


def test_every_cited_test_exists() -> None:
    """Each `path::Class::test` reference in the compliance matrix names a real test."""
    refs = REF.findall(DOC.read_text())
    assert len(refs) > 30, "the matrix should cite the tests behind it"
    cache: dict[str, set[str]] = {}
    missing = []
    for path, name in refs:
        file = ROOT / path
        if not file.exists():
            missing.append(f"{path} (no such file)")
            continue
        names = cache.setdefault(path, _names(file))
        if name not in names:
            missing.append(f"{path}::{name}")
    assert not missing, "compliance.md cites tests that do not exist:\n" + "\n".join(missing)
