"""The kinds of extension the TCP layer defines, and the typed helpers plugins register with.

The core's registry knows no TCP concept: it keeps one table per :class:`ExtensionKind`. TCP
defines two kinds, and plugins add to them from their ``stack_register`` hook::

    from layers.tcp.extensions import add_congestion_control, add_feature

    @hookimpl
    def stack_register(registry):
        add_feature(registry, "quickack", QuickAckSettings, doc="...")
        add_congestion_control(registry, "fixed2", factory, doc="...")

The TCP layer reads them back with :func:`features` and :func:`congestion_controls`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from framework.registry import ExtensionKind, Extensions, Registry


@dataclass(slots=True, frozen=True)
class Feature:
    """A per-connection behaviour a plugin provides (enabled per connection by name)."""

    name: str
    settings: type[Any]
    doc: str
    plugin: str
    syncookie: Any = None
    """The feature's part of a SYN cookie (a :class:`~layers.tcp.syncookies.SynCookieCodec`),
    or ``None``."""


@dataclass(slots=True, frozen=True)
class CongestionAlgorithm:
    """A congestion-control algorithm: ``factory(mss, settings)`` returns a controller."""

    name: str
    factory: Callable[..., Any]
    settings: type[Any] | None
    doc: str
    plugin: str


#: Per-connection features (``features = {name = {...}}`` in the tcp layer).
FEATURES: ExtensionKind[Feature] = ExtensionKind(
    "tcp.feature",
    "feature",
    doc="a per-connection behaviour, switched per connection by name",
    turn_off="to turn the feature off for connections instead, set features = {{ {name} = false }} in the tcp layer",
)

#: Congestion-control algorithms (``congestion_control = "<name>"``).
CONGESTION_CONTROL: ExtensionKind[CongestionAlgorithm] = ExtensionKind(
    "tcp.congestion_control",
    "congestion control",
    doc="a congestion-control algorithm, chosen per connection by name",
)


def features(registry: Registry) -> Extensions[Feature]:
    """The features plugins registered, by name."""
    return registry.kind(FEATURES)


def congestion_controls(registry: Registry) -> Extensions[CongestionAlgorithm]:
    """The congestion-control algorithms plugins registered, by name."""
    return registry.kind(CONGESTION_CONTROL)


def add_feature(registry: Registry, name: str, settings: type[Any], *, doc: str = "", syncookie: Any = None) -> None:
    """Make feature *name* switchable per connection (``features = {name = {...}}`` in the
    tcp layer, ``features={name: {...}}`` in the API, ``--feature name`` on the CLI).

    :param settings: a dataclass of the feature's settings (all fields with defaults).
    :param syncookie: how the feature's negotiated state survives in a SYN cookie (a
        :class:`~layers.tcp.syncookies.SynCookieCodec`); ``None``: a connection opened from a
        cookie runs without the feature's option.
    :raises PluginError: if another plugin already registered *name*.
    """
    features(registry).add(name, Feature(name, settings, doc, registry.current_plugin, syncookie))


def add_congestion_control(
    registry: Registry, name: str, factory: Callable[..., Any], *, settings: type[Any] | None = None, doc: str = ""
) -> None:
    """Make ``congestion_control = "<name>"`` valid. ``factory(mss, settings)`` returns a
    :class:`~layers.tcp.congestion.CongestionControl` for one connection.

    :raises PluginError: if another plugin already registered *name*.
    """
    congestion_controls(registry).add(name, CongestionAlgorithm(name, factory, settings, doc, registry.current_plugin))


__all__ = [
    "CONGESTION_CONTROL",
    "FEATURES",
    "CongestionAlgorithm",
    "Feature",
    "add_congestion_control",
    "add_feature",
    "congestion_controls",
    "features",
]
