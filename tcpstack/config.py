"""Configuration with the built-in plugins: what ``tcpstack up`` and :func:`tcpstack.open_stack`
validate against.

The generic machinery (TOML reading, validation, building) is :mod:`framework.config`; this
module adds the built-in default configuration and registers :data:`~tcpstack.plugins.BUILTIN_PLUGINS`.

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

Validate with :func:`config_from_dict` or :func:`load_config`; build with :func:`build_stack`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from framework.config import (
    MAX_CONFIG_BYTES,
    LayerConfig,
    StackConfig,
    build_stack,
    check_shape,
    read_toml,
)
from framework.config import config_from_dict as _config_from_dict
from framework.plugins import PluginHost as _CorePluginHost
from tcpstack.plugins import BUILTIN_PLUGINS

__all__ = [
    "DEFAULT_CONFIG",
    "MAX_CONFIG_BYTES",
    "LayerConfig",
    "StackConfig",
    "build_stack",
    "check_shape",
    "config_from_dict",
    "default_config_dict",
    "load_config",
    "read_toml",
]

#: The built-in default configuration (what ``tcpstack up`` runs without ``--config``).
DEFAULT_CONFIG: dict[str, Any] = {
    "layers": [
        {"type": "tun", "device": "tun0"},
        {"type": "ipv4", "address": "10.0.0.2/24"},
        {"type": "tcp"},
    ],
    "plugins": {"disable": []},
}


def default_config_dict() -> dict[str, Any]:
    """A fresh deep copy of :data:`DEFAULT_CONFIG`, safe to modify."""
    return copy.deepcopy(DEFAULT_CONFIG)


def config_from_dict(
    data: Mapping[str, Any],
    *,
    host: _CorePluginHost | None = None,
    entry_points: bool = True,
) -> StackConfig:
    """:func:`framework.config.config_from_dict` with the built-in plugins registered."""
    return _config_from_dict(data, host=host, builtin=BUILTIN_PLUGINS, entry_points=entry_points)


def load_config(path: str | Path, *, entry_points: bool = True) -> StackConfig:
    """Read and validate a configuration file (built-in plugins registered)."""
    return config_from_dict(read_toml(path), entry_points=entry_points)
