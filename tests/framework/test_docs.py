"""The generated parts of docs/ match the code."""

from __future__ import annotations

import pytest

from framework import docgen


@pytest.mark.parametrize(("path", "body"), docgen.targets(), ids=lambda x: getattr(x, "name", "body"))
def test_generated_docs_are_current(path: object, body: str) -> None:
    """docs/configuration.md (every layer type and key) and docs/tcp.md (the state table) match
    the code (regenerate with `python -m framework.docgen`)."""
    from pathlib import Path

    assert isinstance(path, Path)
    text = path.read_text()
    assert docgen.render(text, body, path) == text
