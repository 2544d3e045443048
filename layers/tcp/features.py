"""Per-connection features: validating and merging ``{name: settings}`` tables.

A feature is a behaviour a plugin registers with ``add_feature(registry, name, settings_cls)``
and installs on a connection in its ``tcp_connection_setup`` hook. Three places switch
features, each overriding the one before, name by name:

1. the stack's defaults: :data:`DEFAULT_FEATURES` merged with the ``tcp`` layer's
   ``features`` table in the configuration (and ``--feature``/``--no-feature``);
2. a listener's ``features=`` (``start_server``), for the connections it accepts;
3. a connection's ``features=`` (``open_connection``).

A value is a settings table (``{"timeout": 0.01}``), ``True``/``{}`` for the defaults, or
``False``/``None`` to turn the feature off.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from framework.registry import Registry
from framework.settings import validate_settings
from layers.tcp.extensions import congestion_controls, features

#: What a user gets without configuring anything: how a modern host stack is set up.
DEFAULT_FEATURES: dict[str, Any] = {
    "window_scaling": {},
    "timestamps": {},
    "sack": {},
    "rack_tlp": {},  # RFC 8985 (Linux's default loss detection); does nothing without SACK
    "delayed_ack": {},
    "nagle": {},
}

#: The default congestion-control algorithm (RFC 9438; Linux's default too).
DEFAULT_CONGESTION_CONTROL = "cubic"


def resolve(registry: Registry, table: Mapping[str, Any] | None, path: str, problems: list[str]) -> dict[str, Any]:
    """Validate a features table; return ``{name: settings object, or None for off}``."""
    out: dict[str, Any] = {}
    for name, where, value in _entries(table, path, "features", problems):
        feature = features(registry).get(name)
        if feature is None:
            problems.append(f"{where}: unknown feature {name!r} ({_hint(registry, name, features(registry))})")
            continue
        if value is None or value is False:
            out[name] = None
            continue
        if value is True:
            value = {}
        obj = validate_settings(feature.settings, value, where, problems)
        if obj is not None:
            out[name] = obj
    return out


def _entries(table: object, path: str, what: str, problems: list[str]) -> list[tuple[str, str, Any]]:
    """``(name, key path, value)`` of a table of named settings; a problem if it is no table."""
    if not table:
        return []
    if not isinstance(table, Mapping):
        problems.append(f"{path}: expected a table of {what}, got {table!r}")
        return []
    return [(str(name), f"{path}.{name}", value) for name, value in table.items()]


def _hint(registry: Registry, name: str, known: Mapping[str, Any]) -> str:
    """What was probably meant, disabled plugins, and the known names."""
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    if registry.disabled:
        hint += f"plugins disabled by [plugins] disable: {', '.join(registry.disabled)}; "
    return f"{hint}known: {', '.join(sorted(known)) or 'none'}"


def check_algorithm(registry: Registry, name: object, path: str, problems: list[str]) -> None:
    """A congestion-control algorithm name must be one a plugin registered."""
    if not isinstance(name, str):
        problems.append(f"{path}: expected the name of an algorithm, got {name!r}")
    elif (algorithms := congestion_controls(registry)) and name not in algorithms:
        problems.append(f"{path}: unknown algorithm {name!r} ({_hint(registry, name, algorithms)})")


def resolve_algorithm_settings(
    registry: Registry, table: Mapping[str, Any] | None, path: str, problems: list[str]
) -> dict[str, Any]:
    """Validate ``congestion = { NAME = { KEY = VALUE } }``: settings per algorithm; every
    algorithm that takes settings gets its defaults unless the table names it."""
    algorithms = congestion_controls(registry)
    out: dict[str, Any] = {name: alg.settings() for name, alg in algorithms.items() if alg.settings is not None}
    for name, where, value in _entries(table, path, "algorithms", problems):
        alg = algorithms.get(name)
        if alg is None:
            problems.append(f"{where}: unknown algorithm {name!r} ({_hint(registry, name, algorithms)})")
        elif alg.settings is None:
            problems.append(f"{where}: the algorithm {name!r} takes no settings")
        else:
            obj = validate_settings(alg.settings, value, where, problems)
            if obj is not None:
                out[name] = obj
    return out


def defaults(registry: Registry, problems: list[str]) -> dict[str, Any]:
    """:data:`DEFAULT_FEATURES` restricted to the features whose plugins are registered."""
    present = {k: v for k, v in DEFAULT_FEATURES.items() if k in features(registry)}
    return resolve(registry, present, "features", problems)


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply resolved *overrides* to resolved *base*: ``None`` removes a feature."""
    out = dict(base)
    for name, value in overrides.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return {k: v for k, v in out.items() if v is not None}
