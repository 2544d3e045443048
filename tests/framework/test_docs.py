"""The generated parts of docs/ match the code."""

from __future__ import annotations

import pytest

from tcpstack import docgen


@pytest.mark.parametrize(("path", "body"), docgen.targets(), ids=lambda x: getattr(x, "name", "body"))
def test_generated_docs_are_current(path: object, body: str) -> None:
    """docs/configuration.md (every layer type and key) and docs/tcp.md (the state table) match
    the code (regenerate with `python -m tcpstack.docgen`)."""
    from pathlib import Path

    assert isinstance(path, Path)
    text = path.read_text()
    assert docgen.render(text, body, path) == text


def test_relative_links_in_readme_and_docs_resolve() -> None:
    """Every relative link in README.md and docs/*.md names a file that exists (anchors aside)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    broken = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            if not (doc.parent / target.split("#")[0]).exists():
                broken.append(f"{doc.relative_to(root)}: {target}")
    assert not broken, broken


def test_quickstart_uses_real_commands_and_options() -> None:
    """The quickstart's tcpstack commands and options are ones the CLI accepts."""
    import re
    from pathlib import Path

    from tcpstack.cli import build_parser

    text = (Path(__file__).resolve().parents[2] / "docs" / "quickstart.md").read_text()
    parser = build_parser()
    commands = set(re.findall(r"tcpstack (up|demo|ss|stats|fetch|config|connect)\b", text))
    assert {"demo", "up", "ss", "stats", "fetch", "config"} <= commands
    help_text = {c: parser._subparsers._group_actions[0].choices[c].format_help() for c in commands}  # type: ignore[union-attr]
    for option in set(re.findall(r"(--[a-z][a-z-]+)", text)):
        assert any(option in h for h in help_text.values()), option


def test_every_cli_option_is_in_the_cli_reference() -> None:
    """docs/cli.md names every long option of every tcpstack command."""
    import argparse
    from pathlib import Path

    from tcpstack.cli import build_parser

    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    missing = []
    stack = [("tcpstack", build_parser())]
    while stack:
        name, parser = stack.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend((f"{name} {sub}", p) for sub, p in action.choices.items())
            for option in action.option_strings:
                if option.startswith("--") and option != "--help" and f"`{option}" not in text:
                    missing.append(f"{name} {option}")
    assert not missing, missing
