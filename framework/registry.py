"""What configuration can name: layer types, plugin settings, and the kinds of extension that
layers define, registered by plugins.

Built-in layers register themselves through the ``stack_register`` hook exactly like a
third-party plugin would, so nothing about a layer is special-cased in the framework.

A layer that lets plugins extend it defines its own *kind* of extension (an
:class:`ExtensionKind`: a name, a noun for messages and the type of its entries); plugins add
entries to that kind's table (:meth:`Registry.kind`), and the layer reads them back. The core
only keeps the tables and reports two plugins registering one name; what an entry means is the
layer's business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from framework.capabilities import LinkCapabilities
from framework.errors import PluginError
from framework.handler import PacketHandler

if TYPE_CHECKING:
    from framework.config import CheckContext

#: ``factory(name, settings) -> handler``. ``settings`` is an instance of the settings class.
LayerFactory = Callable[[str, Any], PacketHandler]

#: ``check(settings, context)``: a layer type's own validation of its validated settings
#: against the rest of the configuration (what plugins registered, the layers below it); it
#: appends to ``context.problems``. See :class:`~framework.config.CheckContext`.
LayerCheck = Callable[[Any, "CheckContext"], None]

#: ``capabilities(settings) -> LinkCapabilities``: what a link layer type will offer the layers
#: above, known from its settings alone (configuration checks build nothing).
CapabilitiesOf = Callable[[Any], LinkCapabilities]

T = TypeVar("T")


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
    check: LayerCheck | None = None
    """Its own validation against the rest of the configuration (``add_layer(check=)``)."""
    capabilities: CapabilitiesOf | None = None
    """For a link: the capabilities it offers, from its settings (``add_layer(capabilities=)``)."""


@dataclass(frozen=True, slots=True)
class ExtensionKind(Generic[T]):
    """A kind of extension a layer defines, with entries of type ``T``: plugins add entries to
    its table by name (``registry.kind(KIND).add(name, entry)``), the layer reads them.

    Define one constant per kind in the layer's package and use it everywhere: two different
    kinds with one name are a :class:`~framework.errors.PluginError`.
    """

    name: str
    """Dotted, prefixed by the layer type that defines it: ``"<layer>.<what>"``."""
    noun: str
    """What one entry is called in messages (``"<noun> 'x' registered twice (...)"``)."""
    doc: str = ""
    turn_off: str = ""
    """How a user turns one entry off without disabling the plugin that registered it, with
    ``{name}`` for the entry's name; shown when ``[plugins] disable`` names an entry instead of
    a plugin."""


class Extensions(Mapping[str, T]):
    """The table of one :class:`ExtensionKind`: entries by name, each with the plugin that
    registered it. Read it like a ``dict``; add to it with :meth:`add`."""

    def __init__(self, kind: ExtensionKind[T], registry: Registry) -> None:
        self.kind = kind
        self._registry = registry
        self._entries: dict[str, T] = {}
        self._plugins: dict[str, str] = {}

    def add(self, name: str, entry: T) -> None:
        """Register *entry* as *name*.

        :raises PluginError: if another plugin (or this one) already registered *name*.
        """
        if name in self._entries:
            first, second = self._plugins[name], self._registry.current_plugin
            raise PluginError(f"{self.kind.noun} {name!r} registered twice ({first} and {second})")
        self._entries[name] = entry
        self._plugins[name] = self._registry.current_plugin

    def plugin(self, name: str) -> str:
        """The plugin that registered *name*."""
        return self._plugins[name]

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<Extensions {self.kind.name}: {', '.join(sorted(self._entries)) or 'none'}>"


class Registry:
    """Layer types, plugin settings classes and the tables of the kinds of extension layers
    define, by name."""

    def __init__(self) -> None:
        self.layers: dict[str, LayerType] = {}
        self.settings: dict[str, type] = {}
        self.kinds: dict[str, Extensions[Any]] = {}
        """The table of every kind of extension, by kind name (for listings and docs)."""
        self.disabled: list[str] = []
        """Plugins ``[plugins] disable`` blocked (named in errors about what they would provide)."""
        self._current_plugin = "?"

    @property
    def current_plugin(self) -> str:
        """The plugin whose ``stack_register`` is running (for messages and listings)."""
        return self._current_plugin

    def kind(self, kind: ExtensionKind[T]) -> Extensions[T]:
        """The table of *kind*, created on first use, so neither the layer that defines the
        kind nor the plugins that add to it need to register first.

        :raises PluginError: if a different kind with the same name was used before.
        """
        table = self.kinds.get(kind.name)
        if table is None:
            table = self.kinds[kind.name] = Extensions(kind, self)
        elif table.kind is not kind and table.kind != kind:
            raise PluginError(
                f"extension kind {kind.name!r} defined twice, differently ({table.kind!r} and {kind!r}, "
                f"the second by {self._current_plugin})"
            )
        return table

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
        check: LayerCheck | None = None,
        capabilities: CapabilitiesOf | None = None,
    ) -> None:
        """Make ``type = "<type_name>"`` valid in ``[[layers]]``.

        :param settings: a dataclass whose fields are the keys allowed in that table.
        :param provides: names of what this layer offers the layers above it (a link provides
            ``"link"``, a network layer its own name).
        :param requires: names some layer below this one must provide (a network layer requires
            ``"link"``, a transport its network layer's name); a configuration without one is an
            error.
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
        :param check: ``check(settings, context)`` validates the layer's settings against the
            rest of the configuration (names plugins registered, the layers below it), before
            anything is built; it appends to ``context.problems``
            (:class:`~framework.config.CheckContext`).
        :param capabilities: for a link, ``capabilities(settings)`` returns the
            :class:`~framework.capabilities.LinkCapabilities` its handler will offer, so checks
            of the layers above can use them without building anything.
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
            check=check,
            capabilities=capabilities,
        )

    def add_settings(self, plugin_name: str, settings: type) -> None:
        """Make ``[plugins.<plugin_name>]`` valid, validated against the dataclass *settings*."""
        if plugin_name in self.settings or plugin_name == "disable":
            raise PluginError(f"plugin settings {plugin_name!r} registered twice or reserved")
        self.settings[plugin_name] = settings
