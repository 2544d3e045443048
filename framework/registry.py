"""What configuration can name: layer types and plugin settings, registered by plugins.

Built-in layers register themselves through the ``stack_register`` hook exactly like a
third-party plugin would, so nothing about a layer is special-cased in the framework.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from framework.errors import PluginError
from framework.handler import PacketHandler

#: ``factory(name, settings) -> handler``. ``settings`` is an instance of the settings class.
LayerFactory = Callable[[str, Any], PacketHandler]


@dataclass(slots=True, frozen=True)
class LayerType:
    """A layer type and its place in a pipeline (checked by configuration validation, which
    knows no protocol: it only matches these declarations)."""

    type_name: str
    factory: LayerFactory
    settings: type[Any]
    doc: str
    plugin: str
    provides: tuple[str, ...] = ()
    """What this layer offers the layers above it (``"link"``, ``"ipv4"``, ...)."""
    requires: tuple[str, ...] = ()
    """What some layer below it must provide."""
    bottom: bool = False
    """It must be the bottom layer (a link: frames enter and leave the stack through it)."""
    passes_up: bool = True
    """It hands inbound packets to the layer above; ``False`` for a top layer (a transport
    consumes every packet), so nothing above it would ever see traffic."""
    demux: str | None = None
    """The demultiplexing key it sets in ``pkt.upper`` on every packet it passes up
    (``"ip.protocol"``, ``"ip.version"``): several layers may sit on it, told apart by it."""
    accepts: Mapping[str, tuple[int, ...]] = field(default_factory=dict, hash=False)
    """The keys, per demultiplexing key, under which it takes packets from the layer below
    (``{"ip.protocol": (6,)}`` for TCP). A layer with neither ``demux`` nor ``accepts`` is a
    pass-through middleware: it takes the keys of the layers above it."""


@dataclass(slots=True, frozen=True)
class Feature:
    """A per-connection behaviour a plugin provides (enabled per connection by name)."""

    name: str
    settings: type[Any]
    doc: str
    plugin: str
    syncookie: Any = None
    """The feature's part of a SYN cookie (an object the transport layer defines), or ``None``."""


@dataclass(slots=True, frozen=True)
class CongestionAlgorithm:
    """A congestion-control algorithm: ``factory(mss, settings)`` returns a controller."""

    name: str
    factory: Callable[..., Any]
    settings: type[Any] | None
    doc: str
    plugin: str


class Registry:
    """Layer types, per-connection features, congestion-control algorithms and plugin settings
    classes, by name."""

    def __init__(self) -> None:
        self.layers: dict[str, LayerType] = {}
        self.settings: dict[str, type] = {}
        self.features: dict[str, Feature] = {}
        self.congestion: dict[str, CongestionAlgorithm] = {}
        self.disabled: list[str] = []
        """Plugins ``[plugins] disable`` blocked (named in errors about what they would provide)."""
        self._current_plugin = "?"

    def add_layer(
        self,
        type_name: str,
        factory: LayerFactory,
        settings: type,
        *,
        doc: str = "",
        provides: Iterable[str] = (),
        requires: Iterable[str] = (),
        bottom: bool = False,
        passes_up: bool = True,
        demux: str | None = None,
        accepts: Mapping[str, Iterable[int]] | None = None,
    ) -> None:
        """Make ``type = "<type_name>"`` valid in ``[[layers]]``.

        :param settings: a dataclass whose fields are the keys allowed in that table.
        :param provides: names of what this layer offers the layers above it (a link provides
            ``"link"``, IPv4 ``"ipv4"``).
        :param requires: names some layer below this one must provide (IPv4 requires
            ``"link"``, TCP ``"ipv4"``); a configuration without one is an error.
        :param bottom: this layer must be the bottom one (a link).
        :param passes_up: ``False`` if this layer never hands an inbound packet to the layer
            above it (a transport at the top): a layer placed above it is an error.
        :param demux: the name of the demultiplexing key this layer sets in ``pkt.upper`` on
            every packet it passes up (IPv4 ``"ip.protocol"``: the protocol number; a link of
            bare IP datagrams ``"ip.version"``). Several layers may then sit on it, each
            taking its own keys.
        :param accepts: the keys under which this layer takes packets from a layer below that
            sets them, by key name: TCP ``{"ip.protocol": [6]}``, IPv4 ``{"ip.version": [4]}``.
            Leave both ``demux`` and ``accepts`` out for a pass-through middleware (pcap,
            fault): it passes on ``pkt.upper`` untouched and takes the keys of the layers
            above it. ``docs/configuration.md`` ("Topology") shows where layers may sit.
        :raises PluginError: if another plugin already registered *type_name*.
        """
        if type_name in self.layers:
            raise PluginError(
                f"layer type {type_name!r} registered twice "
                f"({self.layers[type_name].plugin} and {self._current_plugin})"
            )
        self.layers[type_name] = LayerType(
            type_name,
            factory,
            settings,
            doc,
            self._current_plugin,
            provides=tuple(provides),
            requires=tuple(requires),
            bottom=bottom,
            passes_up=passes_up,
            demux=demux,
            accepts={k: tuple(int(v) for v in vals) for k, vals in (accepts or {}).items()},
        )

    def add_feature(self, name: str, settings: type[Any], *, doc: str = "", syncookie: Any = None) -> None:
        """Make feature *name* switchable per connection (``features = {name = {...}}`` in the
        tcp layer, ``features={name: {...}}`` in the API, ``--feature name`` on the CLI).

        :param settings: a dataclass of the feature's settings (all fields with defaults).
        :param syncookie: how the feature's negotiated state survives in a SYN cookie (for TCP a
            ``layers.tcp.syncookies.SynCookieCodec``); ``None``: a connection opened from a
            cookie runs without the feature's option.
        :raises PluginError: if another plugin already registered *name*.
        """
        if name in self.features:
            raise PluginError(
                f"feature {name!r} registered twice ({self.features[name].plugin} and {self._current_plugin})"
            )
        self.features[name] = Feature(name, settings, doc, self._current_plugin, syncookie)

    def add_congestion_control(
        self, name: str, factory: Callable[..., Any], *, settings: type[Any] | None = None, doc: str = ""
    ) -> None:
        """Make ``congestion_control = "<name>"`` valid. ``factory(mss, settings)`` returns a
        :class:`~layers.tcp.congestion.CongestionControl` for one connection.

        :raises PluginError: if another plugin already registered *name*.
        """
        if name in self.congestion:
            raise PluginError(
                f"congestion control {name!r} registered twice "
                f"({self.congestion[name].plugin} and {self._current_plugin})"
            )
        self.congestion[name] = CongestionAlgorithm(name, factory, settings, doc, self._current_plugin)

    def add_settings(self, plugin_name: str, settings: type) -> None:
        """Make ``[plugins.<plugin_name>]`` valid, validated against the dataclass *settings*."""
        if plugin_name in self.settings or plugin_name == "disable":
            raise PluginError(f"plugin settings {plugin_name!r} registered twice or reserved")
        self.settings[plugin_name] = settings
