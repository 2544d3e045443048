"""The generated parts of docs/ match the code."""

from __future__ import annotations

from framework import docgen


def test_configuration_reference_is_current() -> None:
    """docs/configuration.md lists every layer type and key as the settings classes define them
    (regenerate with `python -m framework.docgen`)."""
    text = docgen.CONFIG_DOC.read_text()
    assert docgen.render(text) == text
