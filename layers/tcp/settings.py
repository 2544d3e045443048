"""Settings of the ``tcp`` layer (stack-wide defaults for every connection) and their checks
against what plugins registered, including a trial connection setup."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from framework.config import CheckContext
from framework.plugins import PluginHost
from framework.registry import Registry
from layers.tcp.features import (
    DEFAULT_CONGESTION_CONTROL,
    check_algorithm,
    defaults,
    merge,
    resolve,
    resolve_algorithm_settings,
)
from layers.tcp.policy import TcpOptions
from layers.tcp.setup import trial_setup


@dataclass(slots=True)
class TcpSettings:
    """Settings of the ``tcp`` layer: stack-wide defaults for every connection."""

    verify_checksum: bool = True
    """Verify TCP checksums on receipt (MUST-3). Turn off only behind a link that checks them."""

    isn_secret: str | None = None
    """Hex key for RFC 6528 ISNs; default: random per stack (set it for reproducible runs)."""

    initial_sequence: int | None = field(default=None, metadata={"min": 0, "max": 0xFFFFFFFF})
    """Testing only: use this ISS for every connection instead of RFC 6528's keyed hash (lets a
    test put a transfer across the 2**32 wrap). Never set it on a stack that faces a network."""

    port_seed: int | None = None
    """Seed for ephemeral port selection (RFC 6056); default: random."""

    ephemeral_low: int = field(default=49152, metadata={"min": 1024, "max": 65535})
    """Lowest local port of active opens (RFC 6056 §2.1: the IANA range 49152-65535 by default);
    ``tcpstack up --workers`` gives each worker its own slice, so their ports never collide."""

    ephemeral_high: int = field(default=65535, metadata={"min": 1024, "max": 65535})
    """Highest local port of active opens (at least ``ephemeral_low``)."""

    max_connections: int = field(default=65536, metadata={"min": 1, "max": 1 << 20})
    """Connections (including TIME-WAIT) the layer keeps at once; new ones are refused beyond."""

    send_buffer: int = field(default=1 << 20, metadata={"min": 1, "max": 1 << 30})
    """Default send buffer per connection (bytes)."""

    recv_buffer: int = field(default=1 << 19, metadata={"min": 1, "max": 1 << 30})
    """Default receive buffer per connection (bytes); without window scaling at most 65535
    of it can be advertised."""

    min_rto: float = field(default=0.2, metadata={"min": 0.001, "max": 60.0})
    """Default lower bound of the retransmission timeout (seconds)."""

    msl: float = field(default=30.0, metadata={"min": 0.0, "max": 240.0})
    """Default maximum segment lifetime; TIME-WAIT is 2*MSL."""

    congestion_control: str = DEFAULT_CONGESTION_CONTROL
    """Congestion-control algorithm of every connection unless overridden (docs/plugins.md)."""

    initial_window: Literal["rfc5681", "rfc6928"] = "rfc6928"
    """Initial congestion window: RFC 5681 §3.1 (2-4 segments) or RFC 6928 (10 segments)."""

    default_features: bool = True
    """Start from the built-in default feature set (docs/plugins.md); ``false`` starts from
    none, so only what ``features`` names is on."""

    features: dict[str, Any] = field(default_factory=dict)
    """Per-connection features on by default, merged over the built-in default set:
    ``{nagle = false, delayed_ack = {timeout = 0.02}}`` (docs/plugins.md)."""

    congestion: dict[str, Any] = field(default_factory=dict)
    """Settings of congestion-control algorithms that take some, by name:
    ``{aimd = {increase = 2896}}``; an algorithm not named here gets its defaults. They apply
    to every connection that uses the algorithm."""

    syncookies: Literal["auto", "always", "never"] = "auto"
    """SYN cookies (RFC 4987 §3.6) on every listener unless overridden: ``auto`` while a
    listener's SYN queue is full, ``always``, or ``never`` (SYNs beyond the queue are dropped)."""

    syn_backlog: int = field(default=256, metadata={"min": 1, "max": 1 << 20})
    """Half-open connections (SYN-RECEIVED) a listener keeps at once: its SYN queue. The accept
    queue (completed, not yet accepted) is bounded separately by the backlog of ``listen``."""

    syncookie_secret: str | None = None
    """Hex key of the SYN cookies; default: random per stack (stacks that must accept each
    other's cookies share one)."""

    rfc1337: bool = True
    """Ignore a RST in TIME-WAIT (RFC 1337 §3); ``false``: a RST ends it (RFC 9293 §3.10.7.4)."""

    min_snd_mss: int = field(default=48, metadata={"min": 1, "max": 536})
    """Floor of the send MSS whatever a peer's MSS option says (Linux's tcp_min_snd_mss, 48):
    a peer announcing a tiny MSS cannot make us send one segment per byte. ``1``: RFC 9293
    §3.7.1 to the letter."""

    ooo_budget: int | None = field(default=None, metadata={"min": 4096, "max": 1 << 32})
    """Default memory budget (bytes) for out-of-order data per connection, each piece counted at
    its payload plus 240 bytes of overhead (measured); a segment over it is dropped before it is
    acknowledged or SACKed (counted as ``tcp.ooo_budget``). Default: twice ``recv_buffer``,
    at least 64 KiB."""

    ooo_memory: int = field(default=64 << 20, metadata={"min": 65536, "max": 1 << 40})
    """Memory budget (bytes) for out-of-order data of all connections together, counted as
    ``ooo_budget``; a segment over it is dropped (``tcp.ooo_budget_stack``)."""

    fast_path: bool = True
    """Header prediction (docs/architecture.md, "Receive fast path"): in-order data and pure
    ACKs that only advance SND.UNA on an established connection take a short path with the
    same checks and the same outcome as the general one (counted as ``tcp.fast_path`` and
    ``tcp.fast_ack``). ``false`` sends every segment through the general path."""

    early_demux: bool = True
    """Early demux (docs/architecture.md, "Early demux"): when nothing but the IPv4 layer lies
    between the link and TCP (no pcap, fault or other middleware), a frame whose segment header
    prediction takes goes from the link straight to the connection, with every check and counter
    of the IPv4 layer (counted as ``tcp.early_demux`` too); another segment of a known connection
    (the handshake's last ACK, a FIN) goes from the link straight to the TCP layer's full
    processing (counted as ``tcp.early_demux_slow``). ``false`` sends every frame up the
    pipeline. Needs ``fast_path``."""

    resolved_features: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    resolved_congestion: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def check_registry(self, registry: Registry, path: str, problems: list[str]) -> None:
        """Validate ``features``, ``congestion_control`` and ``congestion`` against what plugins
        registered."""
        base = defaults(registry, problems) if self.default_features else {}
        self.resolved_features = merge(base, resolve(registry, self.features, f"{path}.features", problems))
        check_algorithm(registry, self.congestion_control, f"{path}.congestion_control", problems)
        self.resolved_congestion = resolve_algorithm_settings(registry, self.congestion, f"{path}.congestion", problems)
        if self.ephemeral_low > self.ephemeral_high:
            low, high = self.ephemeral_low, self.ephemeral_high
            problems.append(f"{path}.ephemeral_low: {low} is above ephemeral_high ({high})")
        for name in ("isn_secret", "syncookie_secret"):
            secret = getattr(self, name)
            if secret is not None and not _is_key(secret):
                problems.append(f"{path}.{name}: must be at least 16 bytes as hex digits (32 or more), got {secret!r}")

    def check_host(self, host: PluginHost, path: str, problems: list[str]) -> None:
        """Set up a trial connection with the default features, so that plugins that cannot
        work together (two claiming one policy slot) are a configuration error, not a failure
        of every connection later."""
        error = trial_setup(
            host, self.resolved_features, self.congestion_control, self.default_options(), self.resolved_congestion
        )
        if error is not None:
            problems.append(f"{path}.features: {error}")

    def default_options(self) -> TcpOptions:
        return TcpOptions(
            send_buffer=self.send_buffer,
            recv_buffer=self.recv_buffer,
            min_rto=self.min_rto,
            msl=self.msl,
            initial_window=self.initial_window,
            syncookies=self.syncookies,
            rfc1337=self.rfc1337,
            min_snd_mss=self.min_snd_mss,
            ooo_budget=self.ooo_budget,
        )


def _is_key(text: str) -> bool:
    try:
        return len(bytes.fromhex(text)) >= 16
    except ValueError:
        return False


def check_settings(settings: TcpSettings, context: CheckContext) -> None:
    """The ``tcp`` layer type's configuration check (``add_layer(check=)``): features and
    algorithms against what plugins registered, then, if nothing is wrong so far, a trial setup."""
    settings.check_registry(context.registry, context.path, context.problems)
    if not context.problems:
        settings.check_host(context.host, context.path, context.problems)


__all__ = ["TcpSettings", "check_settings", "trial_setup"]
