"""Regenerate the reference parts of the docs from the code: ``python -m tcpstack.docgen``.

- ``docs/configuration.md``: one table per layer type and plugin settings section, built from
  the settings dataclasses (their fields, types, defaults and docstrings);
- ``docs/tcp.md``: the state-transition table of ``layers/tcp/state.py``.

Each generated part sits between markers. ``tests/framework/test_docs.py`` fails when a
committed file differs from what this writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from framework.registry import LayerType
from framework.settings import settings_doc
from tcpstack.plugins import PluginHost

BEGIN = "<!-- BEGIN GENERATED: python -m tcpstack.docgen -->"
END = "<!-- END GENERATED -->"
ROOT = Path(__file__).resolve().parent.parent
CONFIG_DOC = ROOT / "docs" / "configuration.md"
TCP_DOC = ROOT / "docs" / "tcp.md"


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
        out += [f"Place: {_placement(lt)}.", ""]
        out += _table(lt.settings)
        out.append("")
    for name in sorted(host.registry.settings):
        out += [f"### `[plugins.{name}]`", ""]
        out += _table(host.registry.settings[name])
        out.append("")
    from layers.tcp.extensions import congestion_controls, features
    from layers.tcp.features import DEFAULT_CONGESTION_CONTROL, DEFAULT_FEATURES

    for name in sorted(features(host.registry)):
        feature = features(host.registry)[name]
        default = "on by default" if name in DEFAULT_FEATURES else "off by default"
        out += [
            f"### Feature `{name}`",
            "",
            f"{feature.doc} (registered by `{feature.plugin}`; {default}). In the `tcp` layer's `features` table"
            f" (`features = {{ {name} = {{ ... }} }}`, `true` for the defaults, `false` for off), per listener"
            f" or connection with `features=`, or `--feature {name}:KEY=VALUE`.",
            "",
        ]
        out += _table(feature.settings) if settings_doc(feature.settings) else ["No settings."]
        out.append("")
    algorithms = congestion_controls(host.registry)
    out += ["### Congestion-control algorithms", "", "| name | registered by | description |", "|---|---|---|"]
    for name in sorted(algorithms):
        mark = " (the default)" if name == DEFAULT_CONGESTION_CONTROL else ""
        out.append(f"| `{name}`{mark} | `{algorithms[name].plugin}` | {algorithms[name].doc} |")
    return "\n".join(out).rstrip() + "\n"


def _placement(lt: LayerType) -> str:
    """Where a layer type may sit, from what it declared at registration (the shape check)."""
    parts = []
    if lt.bottom:
        parts.append("must be the bottom layer")
    parts += [f"needs a layer that provides `{need}` below it" for need in lt.requires]
    if lt.provides:
        parts.append("provides " + ", ".join(f"`{p}`" for p in lt.provides) + " to the layers above")
    if not lt.passes_up:
        parts.append("passes nothing up, so no layer may sit above it")
    return "; ".join(parts) if parts else "anywhere"


def state_table() -> str:
    from layers.tcp.state import TO_CLOSED_FROM_ANY, TRANSITIONS

    lines = ["| state | event | next state |", "|---|---|---|"]
    for (state, trigger), new in TRANSITIONS.items():
        lines.append(f"| {state.value} | {trigger.value} | {new.value} |")
    anywhere = ", ".join(sorted(t.value for t in TO_CLOSED_FROM_ANY))
    lines.append(f"| any but CLOSED | {anywhere} | CLOSED |")
    return "\n".join(lines) + "\n"


def render(text: str, body: str | None = None, path: Path = CONFIG_DOC) -> str:
    """Replace the generated part of *text* with *body* (default: the configuration reference)."""
    head, sep, rest = text.partition(BEGIN)
    if not sep:
        raise SystemExit(f"{path}: marker {BEGIN!r} missing")
    _, sep2, tail = rest.partition(END)
    if not sep2:
        raise SystemExit(f"{path}: marker {END!r} missing")
    return f"{head}{BEGIN}\n\n{config_reference() if body is None else body}\n{END}{tail}"


def targets() -> list[tuple[Path, str]]:
    return [(CONFIG_DOC, config_reference()), (TCP_DOC, state_table())]


def main() -> int:
    for path, body in targets():
        text = path.read_text()
        new = render(text, body, path)
        if new != text:
            path.write_text(new)
            print(f"updated {path}")
        else:
            print(f"{path} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
