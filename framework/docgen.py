"""Regenerate the reference parts of the docs from the code: ``python -m framework.docgen``.

``docs/configuration.md`` holds, between markers, one table per layer type and plugin settings
section, built from the settings dataclasses (their fields, types, defaults and docstrings).
``tests/framework/test_docs.py`` fails when the committed file differs from what this writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from framework.plugins import PluginHost
from framework.settings import settings_doc

BEGIN = "<!-- BEGIN GENERATED: python -m framework.docgen -->"
END = "<!-- END GENERATED -->"
ROOT = Path(__file__).resolve().parent.parent
CONFIG_DOC = ROOT / "docs" / "configuration.md"


def _table(cls: type) -> list[str]:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, tp, default, doc in settings_doc(cls):
        cell = doc.replace("|", "\\|")
        lines.append(f"| `{key}` | {tp} | `{default}` | {cell} |")
    return lines


def config_reference() -> str:
    host = PluginHost(entry_points=False)
    out: list[str] = []
    for name in sorted(host.registry.layers):
        lt = host.registry.layers[name]
        out += [f"### Layer type `{name}`", "", f"{lt.doc} (registered by `{lt.plugin}`).", ""]
        out += _table(lt.settings)
        out.append("")
    for name in sorted(host.registry.settings):
        out += [f"### `[plugins.{name}]`", ""]
        out += _table(host.registry.settings[name])
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render(text: str) -> str:
    head, sep, rest = text.partition(BEGIN)
    if not sep:
        raise SystemExit(f"{CONFIG_DOC}: marker {BEGIN!r} missing")
    _, sep2, tail = rest.partition(END)
    if not sep2:
        raise SystemExit(f"{CONFIG_DOC}: marker {END!r} missing")
    return f"{head}{BEGIN}\n\n{config_reference()}\n{END}{tail}"


def main() -> int:
    text = CONFIG_DOC.read_text()
    new = render(text)
    if new != text:
        CONFIG_DOC.write_text(new)
        print(f"updated {CONFIG_DOC}")
    else:
        print(f"{CONFIG_DOC} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
