"""Opening a stack: the one code path of ``tcpstack up``, ``tcpstack connect`` and
:func:`tcpstack.open_stack`.

1. :func:`up_config`: the configuration as plain data (the built-in default, a TOML file or a
   dict) with the overrides applied (device, address, pcap, features, offload, ...);
2. :func:`prepare_stack`: validate it (what ``tcpstack config check`` runs too), open the TUN
   device (or take an in-memory link) and build the stack; nothing runs yet;
3. :func:`run_stack`: on the running event loop, start the :class:`~tcpstack.io.driver.AsyncioDriver`
   and the control socket and yield a :class:`RunningStack` (the asyncio API); on the way
   out, reset what is still open, stop the driver (plugins hear ``stack_closed``, the capture is
   closed) and remove the control socket;
4. :func:`open_stack`: 2 and 3, and closing the device, as one ``async with``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import structlog

from framework.config import StackConfig
from framework.errors import ConfigError
from framework.stack import Stack
from tcpstack.config import build_stack, config_from_dict, default_config_dict, read_toml
from tcpstack.io.driver import AsyncioDriver
from tcpstack.io.link import Link
from tcpstack.logging import link_pcap
from tcpstack.streams import StackApi

logger = structlog.get_logger("tcpstack.embed")

#: How long a stack that stops gives its resets to leave and handlers to see them, in seconds.
SHUTDOWN_GRACE = 0.05


def parse_feature(spec: str, option: str = "--feature") -> tuple[str, dict[str, object]]:
    """``"keepalive:idle=60,count=3"`` to ``("keepalive", {"idle": 60, "count": 3})``.

    :raises ValueError: for a malformed specification.
    """
    name, _, rest = spec.partition(":")
    if not name:
        raise ValueError(f"{option} {spec!r}: missing name")
    settings: dict[str, object] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"{option} {spec!r}: expected KEY=VALUE, got {item!r}")
        settings[key.strip()] = _parse_value(value.strip())
    return name, settings


def _parse_value(text: str) -> object:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _layer(layers: list[Any], type_name: str) -> dict[str, Any] | None:
    """The first layer table of *type_name* in a configuration's ``layers`` (None if absent)."""
    return next((x for x in layers if isinstance(x, dict) and x.get("type") == type_name), None)


def load_config_data(config: str | Path | Mapping[str, Any] | None) -> dict[str, Any]:
    """The configuration as a fresh dict: the built-in default, a TOML file, or a copy of a dict."""
    if config is None:
        return default_config_dict()
    if isinstance(config, (str, Path)):
        return read_toml(config)
    if isinstance(config, Mapping):
        return copy.deepcopy(dict(config))
    raise TypeError(f"config must be a path, a dict or None, not {type(config).__name__}")


def up_config(
    data: dict[str, Any],
    *,
    tun: str | None = None,
    address: str | Sequence[str] | None = None,
    create: bool = False,
    offload: bool = False,
    mtu: int | None = None,
    features: Mapping[str, Any] | None = None,
    congestion_control: str | None = None,
    verify_checksums: bool = True,
    pcap: str | Path | None = None,
    snaplen: int | None = None,
    probe: str | Path | bool | None = None,
) -> dict[str, Any]:
    """Apply the overrides of ``tcpstack up`` / :func:`open_stack` to configuration *data* (in place).

    *features* maps a feature name to its settings (a dict; ``True`` for the defaults) or to
    ``False``/``None`` (off); *congestion_control* is ``NAME`` or ``NAME:KEY=VALUE,...``.
    *probe* (``--probe FILE``) turns the ``probe`` feature on for every connection and, given a
    path, writes its records there (``[plugins.probe] path``); ``True``: on, records held only.
    Where the layers are is checked afterwards, by the validation ``config check`` runs too.

    :raises ConfigError: for an override with nothing to apply to, or malformed.
    """
    layers = data.get("layers")
    if not isinstance(layers, list):
        return data  # validation reports it
    link = _layer(layers, "tun")
    if link is not None:
        if tun is not None:
            link["device"] = tun
        if create:
            link["create"] = True
        if offload:
            link["offload"] = True
    bottom = link or _layer(layers, "memory")
    if mtu is not None and bottom is not None:  # (no link layer: validation reports it)
        bottom["mtu"] = mtu
    if address is not None:
        _apply_addresses(layers, address)
    if probe is not None and probe is not False:
        features = {**(features or {}), "probe": {}}
        if not isinstance(probe, bool):
            plugins = data.setdefault("plugins", {})
            if not isinstance(plugins, dict):
                raise ConfigError(["plugins: expected a table"])
            table = plugins.setdefault("probe", {})
            if not isinstance(table, dict):
                raise ConfigError(["plugins.probe: expected a table"])
            table["path"] = str(probe)
    if features or congestion_control:
        tcp = _layer(layers, "tcp")
        if tcp is None:
            raise ConfigError(["layers: --feature, --no-feature, --probe and --congestion-control need a 'tcp' layer"])
        table = tcp.setdefault("features", {})
        if not isinstance(table, dict):
            raise ConfigError(["layers: the tcp layer's features must be a table"])
        for name, settings in (features or {}).items():
            if settings is True:
                settings = {}
            elif settings is None:
                settings = False
            table[name] = dict(settings) if isinstance(settings, Mapping) else settings
        if congestion_control:
            try:
                name, algo_settings = parse_feature(congestion_control, option="--congestion-control")
            except ValueError as exc:
                raise ConfigError([str(exc)]) from None
            tcp["congestion_control"] = name
            if algo_settings:
                algorithms = tcp.setdefault("congestion", {})
                if not isinstance(algorithms, dict):
                    raise ConfigError(["layers: the tcp layer's congestion must be a table"])
                algorithms[name] = algo_settings
    if not verify_checksums:
        for x in layers:
            if isinstance(x, dict) and x.get("type") in ("ipv4", "tcp"):
                x["verify_checksum"] = False
    capture = _layer(layers, "pcap")
    if pcap is not None:
        if capture is None:
            capture = {"type": "pcap", "path": str(pcap)}
            layers.insert(1, capture)  # just above the link: it records whole datagrams
            link = layers[0].get("type") if isinstance(layers[0], dict) else None
            for x in layers[2:]:  # layers that name the link as theirs now sit on the capture
                if isinstance(x, dict) and link is not None and x.get("below") == link:
                    x["below"] = "pcap"
        else:
            capture["path"] = str(pcap)
    if snaplen is not None:
        if capture is None:
            raise ConfigError(["--snaplen: no capture to apply it to (add --pcap FILE)"])
        capture["snaplen"] = snaplen  # validated with the layer's settings (68..262144)
    return data


def _apply_addresses(layers: list[Any], address: str | Sequence[str]) -> None:
    """Each address to the network layer of its family (one IPv4 address per ipv4 layer)."""
    addresses = [address] if isinstance(address, str) else list(address)
    if not addresses:
        raise ConfigError(["address: give at least one address"])
    v4: list[str] = []
    for a in addresses:
        if not isinstance(a, str):
            raise ConfigError([f"address: {a!r} is not a string like '10.0.0.2/24'"])
        try:
            version = ipaddress.ip_interface(a).version
        except ValueError:
            version = 4  # the ipv4 layer's validation explains what is wrong with it
        if version != 4:
            raise ConfigError([f"address: {a!r} is IPv6, and this configuration has no IPv6 layer"])
        v4.append(a)
    ips = [x for x in layers if isinstance(x, dict) and x.get("type") == "ipv4"]
    if not ips:
        raise ConfigError(["layers: --address needs a layer of type 'ipv4'"])
    if len(v4) > len(ips):
        raise ConfigError([f"address: {len(v4)} IPv4 addresses, but the ipv4 layer takes one ({', '.join(v4)})"])
    for layer, a in zip(ips, v4, strict=False):
        layer["address"] = a


def validate_for_link(data: Mapping[str, Any]) -> StackConfig:
    """Validate a configuration for an in-memory link: its bottom layer is a ``memory`` layer."""
    config = config_from_dict(data)
    if not config.layers or config.layers[0].type != "memory":
        raise ConfigError(["layers: a stack on link= needs a layer of type 'memory' at the bottom"])
    return config


@dataclass
class PreparedStack:
    """A validated configuration, its open link and the stack built from it (not running yet)."""

    config: StackConfig
    link: Link
    stack: Stack
    owns_link: bool
    """Whether :func:`prepare_stack` opened the link (and closing it is ours)."""

    def close(self) -> None:
        """Close the link if it is ours (the TUN device); idempotent."""
        if self.owns_link:
            self.owns_link = False
            self.link.close()


def prepare_stack(
    *,
    tun: str | None = None,
    address: str | Sequence[str] | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
    pcap: str | Path | None = None,
    features: Mapping[str, Any] | None = None,
    offload: bool = False,
    link: Link | None = None,
    create: bool = False,
    mtu: int | None = None,
    congestion_control: str | None = None,
    verify_checksums: bool = True,
    snaplen: int | None = None,
    multi_queue: bool | None = None,
    probe: ProbeTarget = None,
) -> PreparedStack:
    """Validate the configuration (defaults as ``tcpstack up``), open the link, build the stack.

    *multi_queue*: see :class:`~tcpstack.io.tun.TunLink` (``tcpstack up --workers`` opens one queue each).
    *probe*: see :func:`open_stack`.

    :raises ConfigError: listing every problem of the configuration or the overrides.
    :raises LinkError: the TUN device cannot be opened (one line saying why and what to do).
    """
    from tcpstack.configcmd import validate_for_up
    from tcpstack.io.tun import TunLink

    data = load_config_data(config)
    if link is not None:
        if tun is not None or create or offload:
            raise ConfigError(["link=: tun=, create= and offload= belong to a TUN device, not an in-memory link"])
        layers = data.get("layers")
        if isinstance(layers, list) and layers and isinstance(layers[0], dict) and layers[0].get("type") == "tun":
            layers[0] = {"type": "memory", "mtu": link.mtu}  # the default (or a TUN) configuration, in memory
        if mtu is None:
            mtu = link.mtu
    data = up_config(
        data,
        tun=tun,
        address=address,
        create=create,
        offload=offload,
        mtu=mtu,
        features=features,
        congestion_control=congestion_control,
        verify_checksums=verify_checksums,
        pcap=pcap,
        snaplen=snaplen,
        probe=probe if isinstance(probe, (str, Path, bool)) or probe is None else True,
    )
    owns = link is None
    if link is None:
        validated = validate_for_up(data)  # what `config check` runs; opens nothing
        settings = validated.layers[0].settings
        link = TunLink(
            settings.device,
            mtu=settings.mtu,
            create=settings.create,
            kernel_address=settings.kernel_address,
            offload=settings.offload,
            **({} if multi_queue is None else {"multi_queue": multi_queue}),
        )
    else:
        validated = validate_for_link(data)
        if validated.layers[0].settings.mtu != link.mtu:
            raise ConfigError([f"layers: the memory layer's mtu must be the link's ({link.mtu})"])
    try:
        stack = build_stack(validated)
        if probe is not None and not isinstance(probe, (str, Path, bool)):
            _attach_probe(stack, probe)
    except BaseException:
        if owns:
            link.close()
        raise
    return PreparedStack(validated, link, stack, owns)


ProbeTarget = str | Path | bool | Callable[[Mapping[str, object]], object] | IO[str] | None
"""Where :func:`open_stack`'s ``probe=`` sends the probe's records."""


def _attach_probe(stack: Stack, target: Callable[[Mapping[str, object]], object] | IO[str]) -> None:
    """A callable gets each record (a dict) as it is made; a text stream gets JSON lines."""
    from plugins.probe import sink_of

    sink = sink_of(stack)
    if sink is None:
        raise ConfigError(["probe=: this stack has no probe (no tcp layer, or plugins.probe is disabled)"])
    write = getattr(target, "write", None)
    if callable(write):
        name = getattr(target, "name", "")
        sink.add_stream(cast(IO[str], target), "csv" if isinstance(name, str) and name.endswith(".csv") else "jsonl")
    elif callable(target):
        sink.add_callback(target)
    else:
        raise ConfigError([f"probe=: expected a path, True, a callable or a text stream, not {type(target).__name__}"])


class RunningStack(StackApi):
    """What :func:`open_stack` yields: a running stack's asyncio API (:class:`~tcpstack.streams.StackApi`:
    ``open_connection``, ``start_server``, ``create_connection``, ``create_server``) and its parts."""

    def __init__(self, prepared: PreparedStack, driver: AsyncioDriver) -> None:
        self._bind(prepared.stack, driver)  # a stack without a tcp layer is allowed (ss, stats)
        self.config = prepared.config
        self.link = prepared.link
        self.control_path: Path | None = None
        """Where the control socket listens (``tcpstack ss --control PATH``), or ``None``."""

    @property
    def device(self) -> str | None:
        """The TUN device's name (``None`` on an in-memory link)."""
        name = getattr(self.link, "name", None)
        return name if isinstance(name, str) else None


def _control_path(control: bool | str | Path, device: str | None) -> Path | None:
    from tcpstack.control import default_path

    if control is False or control is None:
        return None
    if control is True:
        return default_path(device) if device is not None else None  # in memory: only at a path given
    return Path(control)


@contextlib.asynccontextmanager
async def run_stack(
    prepared: PreparedStack, *, control: bool | str | Path = True, log_down: bool = False
) -> AsyncIterator[RunningStack]:
    """Run *prepared* on the running loop until the block ends (the link stays open).

    :param control: serve the control socket (``tcpstack ss``/``stats``/``fetch``): ``True`` at
        the default path of the device (``/run/tcpstack/DEVICE.sock``; none for an in-memory
        link), a path, or ``False``. If it cannot be served, a warning says why and the stack
        runs without it.
    :param log_down: log ``stack.down`` with every counter once stopped (``tcpstack up`` does).
    """
    from layers.middleware.pcap import PcapWriter
    from tcpstack.control import ControlServer

    stack = prepared.stack
    # Log events name the capture's frame (pcap_frame) so the log and the pcap can be matched.
    link_pcap(next((h for h in stack.pipeline.handlers if isinstance(h, PcapWriter)), None))
    driver = AsyncioDriver(stack, prepared.link, asyncio.get_running_loop())
    server: ControlServer | None = None
    running: RunningStack | None = None
    try:
        driver.start()
        running = RunningStack(prepared, driver)
        path = _control_path(control, running.device)
        if path is not None:
            server = ControlServer(stack, path, running if running._tcp is not None else None)
            try:
                await server.start()
                running.control_path = path
            except OSError as exc:
                logger.warning("control.unavailable", error=str(exc))
                server = None
        yield running
    finally:
        try:
            if server is not None:
                await server.stop()  # cancels a running fetch
            if running is not None:
                running.close_servers()
                if running._tcp is not None and running._tcp.connections:
                    # Reset what is still open so peers learn at once, then let handlers finish.
                    running.abort_all()
                    await asyncio.sleep(SHUTDOWN_GRACE)
        finally:
            driver.stop()  # plugins hear stack_closed; the capture is closed
            if log_down:
                logger.info("stack.down", frames_in=stack.frames_in, **stack.stats.as_dict())
            link_pcap(None)


@contextlib.asynccontextmanager
async def open_stack(
    tun: str | None = None,
    address: str | Sequence[str] | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
    pcap: str | Path | None = None,
    features: Mapping[str, Any] | None = None,
    offload: bool = False,
    control: bool | str | Path = True,
    *,
    link: Link | None = None,
    create: bool = False,
    mtu: int | None = None,
    congestion_control: str | None = None,
    verify_checksums: bool = True,
    snaplen: int | None = None,
    probe: ProbeTarget = None,
) -> AsyncIterator[RunningStack]:
    """Open a stack on a TUN device (or on *link*, an in-memory link) and run it on the running
    event loop for the ``async with`` block; everything is closed on the way out, exceptions too.

    The defaults and the validation are those of ``tcpstack up``: without *config* the built-in
    default configuration (device ``tun0``, address ``10.0.0.2/24``, TCP with the default
    features); *tun*, *address* and the rest override it as the command line's options do.

    :param tun: the TUN device (``--tun``; default: the configuration's, ``tun0``).
    :param address: the stack's address with prefix, ``"10.0.0.2/24"`` (``--address``), or a
        list of addresses, each for the network layer of its family.
    :param config: a TOML file's path or a configuration dict (docs/configuration.md).
    :param pcap: record every frame to this pcap file (``--pcap``).
    :param features: per-connection features for every connection (``--feature``/``--no-feature``):
        ``{"keepalive": {"idle": 60}, "nagle": False}``.
    :param offload: TUN checksum and segmentation offload (``--offload``).
    :param control: serve the control socket so ``tcpstack ss`` sees the stack: ``True`` at
        ``/run/tcpstack/DEVICE.sock`` (an in-memory link has none unless a path is given), a
        path, or ``False``.
    :param link: an in-memory link (:class:`tcpstack.io.memory.MemoryLink`) instead of a TUN
        device; the configuration's bottom layer becomes a ``memory`` layer of the link's MTU.
    :param probe: turn the probe on for every connection (``--probe``; docs/observability.md):
        a path (``.csv``: CSV, else JSON lines), a callable called with each record (a dict) as
        it is made, on the event loop (keep it quick), a text stream (JSON lines, written from a
        thread, flushed when the stack closes; not closed), or ``True`` (records only held, for
        ``tcpstack probe``).
    :raises ConfigError: listing every problem (as ``tcpstack config check`` would).
    :raises LinkError: the device cannot be opened, with what to do about it.
    """
    prepared = prepare_stack(
        tun=tun,
        address=address,
        config=config,
        pcap=pcap,
        features=features,
        offload=offload,
        link=link,
        create=create,
        mtu=mtu,
        congestion_control=congestion_control,
        verify_checksums=verify_checksums,
        snaplen=snaplen,
        probe=probe,
    )
    try:
        async with run_stack(prepared, control=control) as running:
            yield running
    finally:
        prepared.close()
