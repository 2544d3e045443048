"""Configuration: a TOML file naming the layers bottom to top, plus plugin settings.

The layers form a tree rooted at the link: each ``[[layers]]`` entry sits on the previous one,
or on the layer its ``below`` key names (:mod:`framework.topology` checks the shape).

Layers come from plugins (``stack_register``); this module knows none of them by name. The
application package holds the built-in default configuration and the list of built-in plugins.

Validation happens entirely in :func:`config_from_dict`: every unknown key, bad value, unknown
layer type or plugin is collected with its key path and raised as one
:class:`~framework.errors.ConfigError`, before anything is created. ``docs/configuration.md``
lists every key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework._moved import module_getattr as _moved_getattr
from framework.capabilities import LinkCapabilities
from framework.errors import ConfigError
from framework.handler import Closeable
from framework.plugins import PluginHost
from framework.registry import LayerType, Registry
from framework.settings import validate_settings
from framework.stack import Stack
from framework.topology import check_shape, resolve_below

__all__ = [
    "MAX_CONFIG_BYTES",
    "LayerConfig",
    "StackConfig",
    "build_stack",
    "check_shape",
    "config_from_dict",
    "load_config",
    "read_toml",
]


@dataclass(slots=True)
class LayerConfig:
    """One entry of ``[[layers]]``: its type, its instance name, and validated settings."""

    type: str
    name: str
    settings: Any
    below: str | None = None
    """The name of the layer it sits on (``None`` for the bottom layer)."""
    keys: tuple[int, ...] = ()
    """The demultiplexing keys under which it takes packets from the layer below (resolved
    from its type's ``accepts``, or for a middleware from the layers above it)."""


@dataclass(slots=True)
class StackConfig:
    """A validated configuration. Build one with :func:`load_config` or :func:`config_from_dict`."""

    layers: list[LayerConfig]
    disable: list[str] = field(default_factory=list)
    plugin_settings_: dict[str, Any] = field(default_factory=dict)
    host: PluginHost | None = field(default=None, repr=False, compare=False)

    def plugin_settings(self, name: str) -> Any:
        """The validated settings object of plugin *name* (its defaults if not configured)."""
        return self.plugin_settings_.get(name)

    def layer(self, type_name: str) -> LayerConfig | None:
        """The first layer of *type_name*, or ``None``."""
        for layer in self.layers:
            if layer.type == type_name:
                return layer
        return None


@dataclass(slots=True)
class CheckContext:
    """What a layer type's own check (``registry.add_layer(..., check=)``) is given besides its
    validated settings: where it is, the rest of the configuration, and where to report.

    The check appends one line per problem to :attr:`problems`, each starting with
    :attr:`path` and the key (``f"{context.path}.mtu: ..."``), and raises nothing.
    """

    path: str
    """The layer's key path (``"layers[2]"``)."""
    problems: list[str]
    """Every problem found in the configuration so far (append to it; a check that only makes
    sense on an otherwise valid configuration tests it for emptiness)."""
    host: PluginHost
    """The plugin host the configuration is validated against (for trial runs of hooks)."""
    below: Sequence[LayerConfig]
    """The validated layers below this one, nearest first."""

    @property
    def registry(self) -> Registry:
        """What plugins registered (layer types, settings, extension kinds)."""
        return self.host.registry

    def link_below(self) -> tuple[LayerConfig, LinkCapabilities] | None:
        """The nearest layer below whose type declared link capabilities, with them (computed
        from its settings: nothing is built), or ``None``."""
        for layer in self.below:
            lt = self.registry.layers.get(layer.type)
            if lt is not None and lt.capabilities is not None:
                return layer, lt.capabilities(layer.settings)
        return None


#: The largest configuration file read (a configuration is a few kilobytes; this keeps a
#: mistaken ``--config /dev/zero`` or a multi-gigabyte file from filling memory).
MAX_CONFIG_BYTES = 1 << 20


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a file that cannot be read, is too large, is not UTF-8 or is not
    TOML raises :class:`ConfigError` with one line saying which."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a configuration file"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # TOML is UTF-8 (toml.io, v1.0.0 "Spec")
        bad = f"byte {exc.start} is {raw[exc.start]:#04x}"
        raise ConfigError([f"{path}: not UTF-8 text ({bad}); a TOML file must be UTF-8"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    except RecursionError:  # arrays or inline tables nested thousands deep
        raise ConfigError([f"{path}: invalid TOML: nested too deeply"]) from None


def load_config(path: str | Path, *, builtin: Sequence[str] = (), entry_points: bool = True) -> StackConfig:
    """Read and validate a configuration file (*builtin*: as for :func:`config_from_dict`)."""
    return config_from_dict(read_toml(path), builtin=builtin, entry_points=entry_points)


def config_from_dict(
    data: Mapping[str, Any],
    *,
    host: PluginHost | None = None,
    builtin: Sequence[str] = (),
    entry_points: bool = True,
) -> StackConfig:
    """Validate plain data (as parsed from TOML) into a :class:`StackConfig`.

    :param host: the plugin host to validate against; by default one is created with the
        configuration's ``plugins.disable`` list, registering the modules *builtin* names.
    :raises ConfigError: listing every problem found, each with its key path.
    """
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise ConfigError([f"configuration: expected a table, got {type(data).__name__}"])
    for key in data:
        if key not in ("layers", "plugins"):
            problems.append(f"{key}: unknown top-level key (known: layers, plugins)")

    plugins = data.get("plugins", {})
    disable: list[str] = []
    plugin_tables: dict[str, Any] = {}
    if not isinstance(plugins, Mapping):
        problems.append("plugins: expected a table")
    else:
        raw_disable = plugins.get("disable", [])
        if not isinstance(raw_disable, list) or not all(isinstance(x, str) for x in raw_disable):
            problems.append(f"plugins.disable: expected a list of strings, got {raw_disable!r}")
        else:
            disable = list(raw_disable)
        plugin_tables = {k: v for k, v in plugins.items() if k != "disable"}

    if host is None:
        try:
            host = PluginHost(builtin=builtin, disabled=disable, entry_points=entry_points)
        except ConfigError as exc:
            problems.extend(exc.problems)
            host = PluginHost(builtin=builtin, entry_points=entry_points)
    registry = host.registry

    plugin_settings: dict[str, Any] = {}
    for name, cls in registry.settings.items():
        obj = validate_settings(cls, plugin_tables.get(name, {}), f"plugins.{name}", problems)
        if obj is not None:
            plugin_settings[name] = obj
    for name in plugin_tables:
        if name not in registry.settings:
            problems.append(f"plugins.{name}: no plugin takes settings under this name")

    layers: list[LayerConfig] = []
    types: list[LayerType | None] = []  # per [[layers]] entry, None if its type is unknown
    entries: list[LayerConfig | None] = []  # per [[layers]] entry, None if it is not valid
    raw_layers = data.get("layers")
    if raw_layers is None:
        problems.append("layers: missing; list the layers bottom to top as [[layers]] tables")
        raw_layers = []
    elif not isinstance(raw_layers, list) or not raw_layers:
        problems.append("layers: expected a non-empty array of tables ([[layers]])")
        raw_layers = []
    # A layer's name is its type; ``below`` names the layer an entry sits on (default: the previous).
    names = [
        raw.get("type") if isinstance(raw, Mapping) and isinstance(raw.get("type"), str) else None for raw in raw_layers
    ]
    parents: list[int | None] = []
    placed = True  # every entry's below resolved
    for i, raw in enumerate(raw_layers):
        path = f"layers[{i}]"
        types.append(None)
        entries.append(None)
        parents.append(None)
        if not isinstance(raw, Mapping):
            problems.append(f"{path}: expected a table")
            continue
        before = len(problems)
        parents[i] = resolve_below(raw, i, names, problems)
        placed = placed and len(problems) == before
        type_name = raw.get("type")
        if not isinstance(type_name, str):
            problems.append(f"{path}.type: required, one of: {', '.join(sorted(registry.layers))}")
            continue
        lt = registry.layers.get(type_name)
        if lt is None:
            problems.append(
                f"{path}.type: unknown layer type {type_name!r} (known: {', '.join(sorted(registry.layers))})"
            )
            continue
        types[i] = lt
        settings = {k: v for k, v in raw.items() if k not in ("type", "below")}
        obj = validate_settings(lt.settings, settings, path, problems)
        if obj is not None:
            parent = parents[i]
            entry = LayerConfig(type_name, type_name, obj, names[parent] if parent is not None else None)
            if lt.check is not None:  # the layer type's own check (names, layers below)
                lt.check(obj, CheckContext(path, problems, host, _path_down(i, parents, entries)))
            entries[i] = entry
            layers.append(entry)
    valid = [layer.name for layer in layers]
    for n in sorted({n for n in valid if valid.count(n) > 1}):
        problems.append(f"layers: more than one layer of type {n!r}")
    known = [t for t in types if t is not None]
    # An unknown type could provide anything, an unresolved below could be anywhere: no guessing.
    if len(known) == len(types) and placed:
        keys = check_shape(known, problems, parents)
        for valid_entry, k in zip(entries, keys, strict=True):
            if valid_entry is not None:
                valid_entry.keys = k

    if problems:
        raise ConfigError(problems)
    return StackConfig(layers=layers, disable=disable, plugin_settings_=plugin_settings, host=host)


def _path_down(i: int, parents: Sequence[int | None], entries: Sequence[LayerConfig | None]) -> list[LayerConfig]:
    """The valid entries below ``layers[i]``, nearest first."""
    out: list[LayerConfig] = []
    p = parents[i]
    while p is not None:
        entry = entries[p]
        if entry is not None:
            out.append(entry)
        p = parents[p]
    return out


def build_stack(config: StackConfig) -> Stack:
    """Create the handlers, assemble the pipeline and return a sans-IO :class:`Stack`.

    :raises ConfigError: if the layers cannot work together (e.g. no link at the bottom).
    """
    from framework.pipeline import Node, Pipeline

    host = config.host or PluginHost(disabled=config.disable)
    registry = host.registry
    handlers = []
    nodes = []
    problems: list[str] = []
    for i, layer in enumerate(config.layers):
        try:
            handler = registry.layers[layer.type].factory(layer.name, layer.settings)
            handlers.append(handler)
            nodes.append(Node(handler, layer.below, layer.keys))
        except ConfigError as exc:
            problems.extend(f"layers[{i}]: {p}" for p in exc.problems)
        except ValueError as exc:
            problems.append(f"layers[{i}]: {exc}")
    try:
        if problems:
            raise ConfigError(problems)
        pipeline = Pipeline(nodes)
    except ConfigError:
        for h in handlers:  # release what was opened (a pcap file) before failing
            if isinstance(h, Closeable):
                h.close()
        raise
    stack = Stack(pipeline, host=host, config=config)
    host.stack_configured(stack)
    return stack


if not TYPE_CHECKING:  # (so that mypy still reports unknown names)
    # Names that moved to the application package fail with an ImportError naming their new module.
    __getattr__ = _moved_getattr("framework.config")
