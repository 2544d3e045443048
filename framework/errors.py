"""The exception hierarchy: every exception this project raises on purpose.

Policy (docs/architecture.md, "Errors"):

- local misuse (bad arguments, wrong state) raises at once;
- remote misbehaviour never raises out of the core: a :class:`WireError` is caught at the
  layer boundary and becomes a counted, logged drop;
- configuration problems are collected and raised together as one :class:`ConfigError`.
"""

from __future__ import annotations

from collections.abc import Iterable


class StackError(Exception):
    """Base for every exception this project raises on purpose."""


class ConfigError(StackError):
    """Invalid configuration. Carries every problem found, each with its key path."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: list[str] = list(problems)
        if not self.problems:
            raise ValueError("ConfigError needs at least one problem")
        super().__init__("; ".join(self.problems))


class PluginError(StackError):
    """A plugin misbehaved, e.g. two plugins claimed the same per-connection slot."""


class InvalidStateError(StackError):
    """The caller asked for something the current state forbids."""


class WireError(StackError):
    """Malformed or unsupported bytes.

    Internal: always caught at the layer boundary and turned into ``ctx.stats.drop(layer, reason)``;
    it never escapes :meth:`framework.stack.Stack.receive_frame`.
    """

    def __init__(self, layer: str, reason: str) -> None:
        super().__init__(f"{layer}: {reason}")
        self.layer = layer
        self.reason = reason


class LinkError(StackError):
    """The I/O edge could not open or use a link (missing device, no permission)."""
