"""Configuration: a TOML file naming the layers bottom to top, plus plugin settings.

.. code-block:: toml

    [[layers]]            # bottom: the link
    type = "tun"
    device = "tun0"       # the TUN device; a layer's name is always its type
    [[layers]]
    type = "pcap"
    path = "capture.pcap"
    [[layers]]
    type = "ipv4"
    address = "10.0.0.2/24"

    [plugins]
    disable = ["layers.middleware.fault"]

Validation happens entirely in :func:`config_from_dict`: every unknown key, bad value, unknown
layer type or plugin is collected with its key path and raised as one
:class:`~framework.errors.ConfigError`, before anything is created. ``docs/configuration.md``
lists every key.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framework.errors import ConfigError
from framework.plugins import PluginHost
from framework.settings import validate_settings
from framework.stack import Stack

#: The built-in default configuration (what ``tcpstack up`` runs without ``--config``).
DEFAULT_CONFIG: dict[str, Any] = {
    "layers": [
        {"type": "tun", "device": "tun0"},
        {"type": "ipv4", "address": "10.0.0.2/24"},
        {"type": "tcp"},
    ],
    "plugins": {"disable": []},
}


@dataclass(slots=True)
class LayerConfig:
    """One entry of ``[[layers]]``: its type, its instance name, and validated settings."""

    type: str
    name: str
    settings: Any


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


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; unreadable or malformed files raise :class:`ConfigError`."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None


def load_config(path: str | Path, *, entry_points: bool = True) -> StackConfig:
    """Read and validate a configuration file."""
    return config_from_dict(read_toml(path), entry_points=entry_points)


def default_config_dict() -> dict[str, Any]:
    """A fresh deep copy of :data:`DEFAULT_CONFIG`, safe to modify."""
    return copy.deepcopy(DEFAULT_CONFIG)


def config_from_dict(
    data: Mapping[str, Any],
    *,
    host: PluginHost | None = None,
    entry_points: bool = True,
) -> StackConfig:
    """Validate plain data (as parsed from TOML) into a :class:`StackConfig`.

    :param host: the plugin host to validate against; by default one is created with the
        configuration's ``plugins.disable`` list.
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
            host = PluginHost(disabled=disable, entry_points=entry_points)
        except ConfigError as exc:
            problems.extend(exc.problems)
            host = PluginHost(entry_points=entry_points)
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
    raw_layers = data.get("layers")
    if raw_layers is None:
        problems.append("layers: missing; list the layers bottom to top as [[layers]] tables")
        raw_layers = []
    elif not isinstance(raw_layers, list) or not raw_layers:
        problems.append("layers: expected a non-empty array of tables ([[layers]])")
        raw_layers = []
    for i, raw in enumerate(raw_layers):
        path = f"layers[{i}]"
        if not isinstance(raw, Mapping):
            problems.append(f"{path}: expected a table")
            continue
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
        settings = {k: v for k, v in raw.items() if k != "type"}
        obj = validate_settings(lt.settings, settings, path, problems)
        if obj is not None:
            # Settings that name things plugins provide (features, algorithms) check them here.
            check = getattr(obj, "check_registry", None)
            if callable(check):
                check(registry, path, problems)
            # ... and may try the plugins' hooks on them (e.g. two features claiming one slot).
            trial = getattr(obj, "check_host", None)
            if callable(trial) and not problems:
                trial(host, path, problems)
            layers.append(LayerConfig(type_name, type_name, obj))
    names = [layer.name for layer in layers]
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"layers: more than one layer of type {n!r}")

    if problems:
        raise ConfigError(problems)
    return StackConfig(layers=layers, disable=disable, plugin_settings_=plugin_settings, host=host)


def build_stack(config: StackConfig) -> Stack:
    """Create the handlers, assemble the pipeline and return a sans-IO :class:`Stack`.

    :raises ConfigError: if the layers cannot work together (e.g. no link at the bottom).
    """
    from framework.pipeline import Pipeline

    host = config.host or PluginHost(disabled=config.disable)
    registry = host.registry
    handlers = []
    problems: list[str] = []
    for i, layer in enumerate(config.layers):
        try:
            handlers.append(registry.layers[layer.type].factory(layer.name, layer.settings))
        except ConfigError as exc:
            problems.extend(f"layers[{i}]: {p}" for p in exc.problems)
        except ValueError as exc:
            problems.append(f"layers[{i}]: {exc}")
    try:
        if problems:
            raise ConfigError(problems)
        pipeline = Pipeline(handlers)
    except ConfigError:
        for h in handlers:  # release what was opened (a pcap file) before failing
            close = getattr(h, "close", None)
            if callable(close):
                close()
        raise
    stack = Stack(pipeline, host=host, config=config)
    host.stack_configured(stack)
    return stack
