"""tcpstack's framework: the handler interface, pipeline, sans-IO stack, plugins and config."""

from framework import _moved
from framework.config import StackConfig, build_stack, config_from_dict, load_config
from framework.context import Context
from framework.errors import ConfigError, InvalidStateError, LinkError, PluginError, StackError, WireError
from framework.handler import BaseHandler, PacketHandler
from framework.packet import Packet
from framework.pipeline import Pipeline
from framework.plugins import PluginHost, hookimpl
from framework.stack import Stack
from framework.stats import Stats

_moved.install()  # an import of a module that moved to tcpstack/ says where it went

__all__ = [
    "BaseHandler",
    "ConfigError",
    "Context",
    "InvalidStateError",
    "LinkError",
    "Packet",
    "PacketHandler",
    "Pipeline",
    "PluginError",
    "PluginHost",
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
