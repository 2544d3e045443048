"""``tcpstack config init`` and ``tcpstack config check``: write a commented example
configuration, and validate one and show the stack it resolves to."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from framework.errors import ConfigError
from layers.tcp.extensions import congestion_controls, features
from tcpstack.config import StackConfig, config_from_dict, read_toml

#: The layer type ``tcpstack up`` opens at the bottom of the stack (it attaches to a TUN device).
UP_LINK = "tun"

EXAMPLE = """\
# tcpstack configuration (TOML). Every key: docs/configuration.md; plugins: docs/plugins.md.
# Check it with:  tcpstack config check THIS_FILE
# Run it with:    tcpstack up --config THIS_FILE

# Layers, bottom (the link) to top. Middleware (pcap, fault) pass packets through; where they
# sit decides what they see.
[[layers]]
type = "tun"
device = "tun0"          # an existing TUN device (ip tuntap add dev tun0 mode tun)
mtu = 1500
# create = true          # create the device if it is missing (needs CAP_NET_ADMIN)

# [[layers]]
# type = "pcap"          # record everything that crosses the link
# path = "capture.pcap"

# [[layers]]
# type = "fault"         # seeded, reproducible impairment
# drop = 0.01
# seed = 1

[[layers]]
type = "ipv4"
address = "10.0.0.2/24"  # the stack's own address; the kernel side is another address in it
ttl = 64

[[layers]]
type = "tcp"
congestion_control = "cubic"   # or "reno", or an algorithm a plugin adds
recv_buffer = 524288
send_buffer = 1048576
# Per-connection features on for every connection, merged over the default set
# (window_scaling, timestamps, sack, delayed_ack, nagle); false turns one off.
features = { delayed_ack = { timeout = 0.04 } }
# features = { nagle = false, keepalive = { idle = 60, interval = 5, count = 3 }, ecn = {} }

[plugins]
disable = []             # plugin names to block, e.g. ["layers.middleware.fault"]
"""


def init(path: str | None, *, force: bool, out: TextIO | None = None) -> int:
    """Write the example to *path* (or standard output); refuse to overwrite without *force*."""
    out = out or sys.stdout
    if path is None or path == "-":
        out.write(EXAMPLE)
        return 0
    target = Path(path)
    if target.exists() and not force:
        print(f"tcpstack: error: {path} exists (use --force to overwrite)", file=sys.stderr)
        return 1
    try:
        target.write_text(EXAMPLE)
    except OSError as exc:  # a missing directory, /proc, no permission, a directory, a full disk
        print(f"tcpstack: error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}; check it with: tcpstack config check {path}", file=out)
    return 0


def validate_for_up(data: Mapping[str, Any]) -> StackConfig:
    """Everything ``tcpstack up`` checks before it opens a device, and all that ``config
    check`` checks: the one code path for both. Settings, plugins and the pipeline's shape
    (:func:`framework.config.config_from_dict`), plus that the bottom layer is the TUN device
    ``up`` attaches to.

    :raises ConfigError: listing every problem, each with its key path.
    """
    problems: list[str] = []
    layers = data.get("layers") if isinstance(data, Mapping) else None
    if isinstance(layers, list) and layers:
        if not any(isinstance(x, Mapping) and x.get("type") == UP_LINK for x in layers):
            problems.append(f"layers: 'tcpstack up' needs a layer of type {UP_LINK!r} at the bottom")
        # A tun layer elsewhere is reported by the shape check ("must be the bottom layer").
    try:
        config = config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError([*problems, *exc.problems]) from None
    if problems:
        raise ConfigError(problems)
    return config


def describe(config: StackConfig) -> list[str]:
    """The resolved stack, one line per fact (what ``config check`` prints)."""
    lines = ["layers (bottom to top):"]
    for i, layer in enumerate(config.layers):
        settings = _settings_summary(layer.settings, everything=True)
        # A layer on another than the one listed before it (a branch of the tree) says which.
        on = f" (on {layer.below})" if i and layer.below != config.layers[i - 1].name else ""
        lines.append(f"  {i}. {layer.type}{on}{': ' + settings if settings else ''}")
    host = config.host
    if host is not None:
        lines.append(f"plugins: {', '.join(host.plugin_names())}")
        registry = host.registry
        feats = sorted(features(registry).values(), key=lambda f: f.name)
        lines.append(f"features available: {', '.join(f'{f.name} ({f.plugin})' for f in feats)}")
        algs = sorted(congestion_controls(registry).values(), key=lambda a: a.name)
        lines.append(f"congestion control available: {', '.join(f'{a.name} ({a.plugin})' for a in algs)}")
    tcp = config.layer("tcp")
    if tcp is not None:
        s = tcp.settings
        lines.append("per-connection defaults:")
        lines.append(f"  congestion control: {s.congestion_control}; initial window: {s.initial_window}")
        lines.append(
            f"  buffers: send {s.send_buffer} B, receive {s.recv_buffer} B; min RTO {s.min_rto} s; MSL {s.msl} s"
        )
        feats = s.resolved_features
        if feats:
            for name in sorted(feats):
                lines.append(f"  feature {name}: {_settings_summary(feats[name]) or 'defaults'}")
        else:
            lines.append("  features: none")
    if config.disable:
        lines.append(f"disabled plugins: {', '.join(config.disable)}")
    return lines


def _settings_summary(obj: Any, *, everything: bool = False) -> str:
    """``key=value`` for the settings that differ from their defaults (all of them with
    *everything*)."""
    import dataclasses

    if not dataclasses.is_dataclass(obj):
        return ""
    parts = []
    for f in dataclasses.fields(obj):
        if not f.init or f.name == "features":
            continue
        value = getattr(obj, f.name)
        if everything or value != f.default:
            parts.append(f"{f.name}={value!r}")
    return ", ".join(parts)


def check(path: str, *, out: TextIO | None = None) -> int:
    """Validate *path* exactly as ``tcpstack up --config PATH`` does (:func:`validate_for_up`);
    print the resolved stack (exit 0) or every problem (exit 2)."""
    out = out or sys.stdout
    try:
        config = validate_for_up(read_toml(path))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"tcpstack: error: {problem}", file=sys.stderr)
        return 2
    print(f"{path}: valid", file=out)
    for line in describe(config):
        print(line, file=out)
    return 0
