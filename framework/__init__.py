"""tcpstack's protocol-agnostic core: the handler interface, pipeline, sans-IO stack, plugins,
registry and config, and the typed interfaces layers offer each other (link capabilities, the
network layer). It imports nothing from ``layers``, ``plugins`` or the application package."""

# _compiled comes first (isort keeps it there): importing it decides which build is used and
# installs the finder of the compiled modules before any of them is imported.
from framework import _compiled, _moved  # noqa: F401
from framework.capabilities import LinkCapabilities
from framework.config import CheckContext, StackConfig, build_stack, config_from_dict, load_config
from framework.context import Context
from framework.errors import ConfigError, InvalidStateError, LinkError, PluginError, StackError, WireError
from framework.handler import BaseHandler, PacketHandler
from framework.netlayer import NetError, NetHeader, NetworkLayer
from framework.packet import Packet
from framework.pipeline import Pipeline
from framework.plugins import PluginHost, hookimpl
from framework.registry import ExtensionKind, Extensions, Registry
from framework.stack import Stack
from framework.stats import Stats

_moved.install()  # an import of a module that moved to tcpstack/ says where it went

__all__ = [
    "BaseHandler",
    "CheckContext",
    "ConfigError",
    "Context",
    "ExtensionKind",
    "Extensions",
    "InvalidStateError",
    "LinkCapabilities",
    "LinkError",
    "NetError",
    "NetHeader",
    "NetworkLayer",
    "Packet",
    "PacketHandler",
    "Pipeline",
    "PluginError",
    "PluginHost",
    "Registry",
    "Stack",
    "StackConfig",
    "StackError",
    "Stats",
    "WireError",
    "build_stack",
    "config_from_dict",
    "hookimpl",
    "load_config",
]
