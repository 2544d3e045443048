"""The ``tcpstack`` command line program.

``tcpstack up`` runs a stack on a TUN device in the foreground until SIGINT or SIGTERM.
Every failure the user can cause (no permission, bad address, missing device, bad
configuration) prints one line to stderr and exits non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

import structlog

from framework.errors import ConfigError, LinkError, StackError
from tcpstack.apps import AppError, AppSpec, load_app, parse_app
from tcpstack.embed import PreparedStack, load_config_data, parse_feature, prepare_stack, run_stack, up_config
from tcpstack.io.driver import event_loop_name
from tcpstack.io.driver import run as run_loop
from tcpstack.logging import LEVELS, configure_logging, flush_logs

__all__ = ["build_parser", "main", "parse_feature"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: ``tcpstack up``'s info and debug lines are written in batches, at most this many seconds
#: late: one system call per batch instead of one per line (tcpstack.logging.LineSink).
UP_LOG_FLUSH = 0.05

logger = structlog.get_logger("tcpstack.cli")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``tcpstack: error: ...``) like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"tcpstack: error: {message} (see '{self.prog} --help')\n")


class _VersionAction(argparse.Action):
    """``--version``: the version, the Python, and which build of the hot modules runs (compiled
    with mypyc: which modules; or pure Python and why), as framework/_compiled.py decided."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        print(version_text())  # stdout, like --help
        parser.exit(EXIT_OK)


#: ``--pcap``'s help (``up``, ``connect``): the name picks the format (layers/middleware/pcap.py ``is_pcapng``).
PCAP_HELP = (
    "write every frame in and out to this capture file: FILE.pcapng is pcapng with the decisions taken "
    "on each frame as its comments (Wireshark, tshark -e frame.comment); any other name, classic pcap"
)


def version_text() -> str:
    """What ``tcpstack --version`` prints (two lines)."""
    import importlib.metadata
    import platform

    from framework import _compiled

    return (
        f"tcpstack {importlib.metadata.version('tcpstack')} (Python {platform.python_version()})\n"
        f"build: {_compiled.describe()}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tcpstack",
        description="A user-space TCP/IP stack in Python over a Linux TUN device.",
        epilog="Run 'tcpstack COMMAND --help' for a command's options. Docs: docs/cli.md",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the version and which build runs: compiled (which modules) or pure Python (and why)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    up = sub.add_parser(
        "up",
        help="run a stack on a TUN device until SIGINT/SIGTERM",
        description=(
            "Run a stack in the foreground on a TUN device. Without --config the built-in default "
            "configuration is used (a TUN link and IPv4 with ICMP). --tun, --address and --pcap "
            "override the configuration. Needs root or CAP_NET_ADMIN unless the device is a "
            "persistent one owned by you."
        ),
    )
    up.add_argument("--tun", metavar="NAME", help="TUN device to attach to (default: from the configuration, tun0)")
    up.add_argument("--address", metavar="IP/PREFIX", help="the stack's own IPv4 address, e.g. 10.0.0.2/24")
    up.add_argument("--config", metavar="FILE", help="TOML configuration file (see docs/configuration.md)")
    up.add_argument("--pcap", metavar="FILE", help=PCAP_HELP)
    up.add_argument(
        "--snaplen", type=int, metavar="BYTES", help="store at most BYTES of each frame in the pcap (like tcpdump -s)"
    )
    up.add_argument(
        "--probe",
        metavar="FILE",
        help="turn the probe on for every connection and write its records to FILE (.csv: CSV, else JSON lines; "
        "docs/observability.md)",
    )
    up.add_argument("--create", action="store_true", help="create the TUN device if it does not exist")
    up.add_argument(
        "--offload",
        action="store_true",
        help="TUN checksum + segmentation offload (IFF_VNET_HDR): much faster; partial checksums are not verified",
    )
    up.add_argument("--mtu", type=int, metavar="BYTES", help="link MTU (default: from the configuration, 1500)")
    up.add_argument(
        "--serve",
        action="append",
        default=[],
        metavar="NAME[:PORT]",
        help="run a service: echo, discard, daytime, chargen or http (repeatable; default ports 7, 9, 13, 19, 80)",
    )
    up.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="[HOST:]PORT=MODULE:CALLABLE",
        help="serve your streams handler, an async callable of (reader, writer), imported from MODULE (repeatable)",
    )
    up.add_argument(
        "--app-protocol",
        action="append",
        default=[],
        metavar="[HOST:]PORT=MODULE:FACTORY",
        help="serve your asyncio protocol factory, called once per connection, imported from MODULE (repeatable)",
    )
    up.add_argument(
        "--control",
        metavar="PATH",
        help="control socket for 'tcpstack ss' and 'tcpstack stats' (default /run/tcpstack/DEVICE.sock)",
    )
    up.add_argument(
        "--no-checksum-verify",
        action="store_true",
        help="do not verify IPv4/ICMP/TCP checksums on receipt (for links that guarantee them)",
    )
    up.add_argument(
        "--pid-file",
        metavar="FILE",
        help='write the process ID to FILE once the stack is up (removed when it stops): kill -TERM "$(cat FILE)"',
    )
    up.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N stack processes, one per queue of a multi_queue TUN device (default 1; see docs/cli.md)",
    )
    up.add_argument("--worker-of", metavar="K/N", help=argparse.SUPPRESS)  # a worker started by --workers
    _add_feature_options(up)
    _add_logging_options(up)

    connect = sub.add_parser(
        "connect",
        help="like nc: connect to HOST PORT through the stack, stdin to the connection, the connection to stdout",
        description=(
            "Run a stack on a TUN device, open one TCP connection to HOST PORT, copy standard input to it "
            "and what arrives to standard output. At end of input the sending side is closed (FIN); the "
            "program exits 0 once both directions have closed, non-zero with a one-line message on "
            "refusal, reset or timeout."
        ),
    )
    connect.add_argument("host", metavar="HOST", help="IPv4 address to connect to")
    connect.add_argument("port", metavar="PORT", type=int, help="TCP port")
    connect.add_argument("--tun", metavar="NAME", help="TUN device (default: from the configuration, tun0)")
    connect.add_argument("--address", metavar="IP/PREFIX", help="the stack's own IPv4 address, e.g. 10.0.0.2/24")
    connect.add_argument("--config", metavar="FILE", help="TOML configuration file")
    connect.add_argument("--pcap", metavar="FILE", help=PCAP_HELP)
    connect.add_argument(
        "--snaplen", type=int, metavar="BYTES", help="store at most BYTES of each frame in the pcap (like tcpdump -s)"
    )
    connect.add_argument("--create", action="store_true", help="create the TUN device if it does not exist")
    connect.add_argument(
        "--offload",
        action="store_true",
        help="TUN checksum + segmentation offload (IFF_VNET_HDR): much faster; partial checksums are not verified",
    )
    connect.add_argument("--mtu", type=int, metavar="BYTES", help="link MTU")
    connect.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="connect timeout (default 30)")
    connect.add_argument("--no-checksum-verify", action="store_true", help="do not verify checksums on receipt")
    _add_feature_options(connect)
    _add_logging_options(connect)

    for name, text in (
        ("ss", "list the connections of a running 'tcpstack up' (like ss -ti)"),
        ("stats", "print the drop and event counters of a running 'tcpstack up'"),
    ):
        p = sub.add_parser(name, help=text, description=text + ", through its control socket.")
        p.add_argument("--tun", metavar="NAME", default="tun0", help="the stack's device (default tun0)")
        p.add_argument("--control", metavar="PATH", help="control socket path (default /run/tcpstack/NAME.sock)")
        p.add_argument(
            "--json",
            action="store_true",
            help="JSON lines: one object per connection (ss) or view (stats), with a time stamp",
        )
        p.add_argument(
            "--watch", type=float, metavar="SECONDS", help="ask again every SECONDS until Ctrl-C (a live view)"
        )
        p.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N views")
        if name == "ss":
            p.add_argument("--conn", metavar="ID", help="only this connection: its id:N, or LOCAL-REMOTE")
            p.add_argument(
                "filter",
                nargs="*",
                metavar="FILTER",
                help="as ss: [state|exclude STATE]... [EXPRESSION], e.g. state established '( sport = :80 or "
                "dst 10.0.0.1 )' (docs/cli.md)",
            )

    probe = sub.add_parser(
        "probe",
        help="print the probe's records of a running 'tcpstack up' (with --watch: as they come)",
        description=(
            "Print the records the probe holds of each probed connection of a running 'tcpstack up' (the last few "
            "thousand of each), through its control socket; with --watch, ask again every SECONDS and print only the "
            "new records. The fields are those of the probe file (docs/observability.md)."
        ),
    )
    probe.add_argument(
        "--conn", metavar="ID", help="one connection: its number (as 'tcpstack ss' shows) or LOCAL-REMOTE socket pair"
    )
    probe.add_argument(
        "--watch", type=float, metavar="SECONDS", help="poll every SECONDS until Ctrl-C, new records only"
    )
    probe.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N polls")
    probe.add_argument("--json", action="store_true", help="one JSON object per record (JSON lines, the file's fields)")
    probe.add_argument("--tun", metavar="NAME", default="tun0", help="the stack's device (default tun0)")
    probe.add_argument("--control", metavar="PATH", help="control socket path (default /run/tcpstack/NAME.sock)")

    fetch = sub.add_parser(
        "fetch",
        help="make a running 'tcpstack up' fetch an http:// URL as a TCP client",
        description=(
            "Ask a running 'tcpstack up' (through its control socket) to open a TCP connection "
            "itself, send an HTTP/1.0 GET for URL and read the reply; print the status, size, "
            "SHA-256 and time. The host must be an IPv4 address the stack can reach."
        ),
    )
    fetch.add_argument("url", metavar="URL", help="http://IP[:PORT]/PATH")
    fetch.add_argument("-o", "--output", metavar="FILE", help="the stack writes the body to FILE")
    fetch.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="give up after (default 60)")
    fetch.add_argument("--tun", metavar="NAME", default="tun0", help="the stack's device (default tun0)")
    fetch.add_argument("--control", metavar="PATH", help="control socket path (default /run/tcpstack/NAME.sock)")
    fetch.add_argument("--json", action="store_true", help="print the raw JSON reply")

    cfg = sub.add_parser(
        "config",
        help="write an example configuration, or check one and show the stack it describes",
        description="'config init [FILE]' writes a commented example configuration (to standard output "
        "without FILE); 'config check FILE' validates a configuration and prints the resolved stack: "
        "layers bottom to top, plugins, and per-connection defaults.",
    )
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True, parser_class=_Parser)
    cfg_init = cfg_sub.add_parser("init", help="write a commented example configuration")
    cfg_init.add_argument("file", nargs="?", metavar="FILE", help="where to write it (default: standard output)")
    cfg_init.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    cfg_check = cfg_sub.add_parser("check", help="validate FILE and print the resolved stack")
    cfg_check.add_argument("file", metavar="FILE", help="the TOML configuration to check")

    demo = sub.add_parser(
        "demo",
        help="run the stack in a private namespace and drive it with the kernel's tools (root)",
        description=(
            "Create a network namespace with a TUN device, start 'tcpstack up' in it on the default "
            "configuration (with the probe on, a pcapng capture, and a fault layer dropping 3% of what "
            "the second http service on port 81 sends), drive it with ping, curl, nc and the stack's own "
            "fetch, draw the graphs of its transfers (docs/observability.md), print a summary and the "
            "paths of the graphs and the page, and remove the namespace again."
        ),
    )
    demo.add_argument("--keep", action="store_true", help="leave the namespace and stack running afterwards")
    demo.add_argument(
        "--pcap",
        metavar="FILE",
        help="where to write the capture (default: a temporary directory; FILE.pcapng: pcapng with decision comments)",
    )
    demo.add_argument(
        "--offload", action="store_true", help="run the stack with TUN checksum and segmentation offload (faster)"
    )
    demo.add_argument(
        "--open", action="store_true", help="open the page of graphs in a web browser afterwards, when one is there"
    )
    plot = sub.add_parser(
        "plot",
        help="draw a connection's graphs from a capture (and a probe file): PNG, SVG or an HTML page",
        description=(
            "Draw, per TCP connection of CAPTURE (pcap or pcapng: raw IP, Ethernet, Linux cooked v1/v2), "
            "a time-sequence graph, throughput, RTT and, with --probe, cwnd/ssthresh with the phases and "
            "decisions (docs/observability.md, 'Graphs'). .png and .svg: one connection (the one with most "
            "data unless --conn names one); .html: one self-contained page with every connection with data "
            "(at most 20, largest first) or those --conn names, and each one's summary."
        ),
    )
    plot.add_argument("capture", metavar="CAPTURE", help="the capture file (pcap or pcapng)")
    plot.add_argument("--probe", metavar="FILE", help="the probe file of the same run (CSV or JSON lines)")
    plot.add_argument(
        "--conn",
        action="append",
        default=[],
        metavar="ID",
        help="a connection: its number (the probe's, or the order in the capture without one) or LOCAL-REMOTE "
        "(IPv6 in brackets); repeatable for .html",
    )
    plot.add_argument("-o", "--output", required=True, metavar="OUT", help="OUT.png, OUT.svg or OUT.html")
    return parser


def _add_feature_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--feature",
        action="append",
        default=[],
        metavar="NAME[:KEY=VALUE,...]",
        help="turn a per-connection feature on for every connection, with settings "
        "(e.g. delayed_ack:timeout=0.02, keepalive:idle=60,interval=5,count=3); repeatable; see docs/plugins.md",
    )
    p.add_argument(
        "--no-feature", action="append", default=[], metavar="NAME", help="turn a default feature off (e.g. nagle)"
    )
    p.add_argument(
        "--congestion-control",
        metavar="NAME[:KEY=VALUE,...]",
        help="congestion-control algorithm (reno, cubic, ...), with its settings if it takes some",
    )


def _add_logging_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=("console", "json"), default="console", help="log as text or JSON lines")
    p.add_argument("--log-level", choices=LEVELS, default="info", type=str.lower, help="least severe level shown")


def _fail(message: str, code: int = EXIT_FAILURE) -> int:
    print(f"tcpstack: error: {message}", file=sys.stderr)
    return code


def _up_config(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration as plain data, with command-line overrides applied."""
    data = load_config_data(args.config)
    return up_config(data, **_overrides(args))


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The command line's options as :func:`tcpstack.embed.up_config` keywords.

    :raises ConfigError: for a malformed ``--feature``.
    """
    features: dict[str, Any] = {}
    for spec in getattr(args, "feature", []) or []:
        try:
            name, settings = parse_feature(spec)
        except ValueError as exc:
            raise ConfigError([str(exc)]) from None
        features[name] = settings
    for name in getattr(args, "no_feature", []) or []:
        features[name] = False
    return {
        "tun": args.tun,
        "address": args.address,
        "create": args.create,
        "offload": getattr(args, "offload", False),
        "mtu": args.mtu,
        "features": features,
        "congestion_control": getattr(args, "congestion_control", None),
        "verify_checksums": not getattr(args, "no_checksum_verify", False),
        "pcap": args.pcap,
        "snaplen": getattr(args, "snaplen", None),
        "probe": getattr(args, "probe", None),
    }


def _open(args: argparse.Namespace) -> PreparedStack | int:
    """Validate the configuration, open the TUN link and build the stack (or an exit code):
    :func:`tcpstack.embed.prepare_stack`, which :func:`tcpstack.open_stack` runs too."""
    try:
        if getattr(args, "worker_of", None):  # one queue of `up --workers`, configured by the parent
            from tcpstack.workers import read_worker_config

            return prepare_stack(config=read_worker_config(args.worker_of), multi_queue=True)
        return prepare_stack(config=args.config, **_overrides(args))
    except ConfigError as exc:
        return _config_failure(exc)
    except LinkError as exc:
        return _fail(str(exc))


def _config_failure(exc: ConfigError) -> int:
    for problem in exc.problems[:-1]:
        print(f"tcpstack: error: {problem}", file=sys.stderr)
    return _fail(exc.problems[-1], EXIT_USAGE)


def _load_apps(args: argparse.Namespace) -> list[tuple[AppSpec, Any]] | int:
    """``--app`` and ``--app-protocol``: parsed and imported before anything is opened."""
    loaded: list[tuple[AppSpec, Any]] = []
    try:
        specs = [parse_app(spec, "--app") for spec in args.app]
        specs += [parse_app(spec, "--app-protocol") for spec in args.app_protocol]
        for spec in specs:
            loaded.append((spec, load_app(spec)))
    except AppError as exc:
        return _fail(str(exc), EXIT_USAGE if exc.usage else EXIT_FAILURE)
    return loaded


def cmd_up(args: argparse.Namespace) -> int:
    from tcpstack.services import parse_serve, serve

    try:
        serves = [parse_serve(spec) for spec in args.serve]
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    apps = _load_apps(args)
    if isinstance(apps, int):
        return apps
    if args.probe is not None and not args.worker_of:
        from plugins.probe import check_path

        problem = check_path(args.probe)
        if problem:
            return _fail(f"--probe: {problem}", EXIT_USAGE)
    ports = [port for _, port in serves] + [spec.port for spec, _ in apps]
    if len(set(ports)) != len(ports):
        return _fail("--serve, --app, --app-protocol: two servers on one port", EXIT_USAGE)
    if args.workers != 1 and not args.worker_of:
        from tcpstack.workers import up_workers

        try:
            return up_workers(args, _up_config(args), [f"{n}:{p}" for n, p in serves], [s.label for s, _ in apps])
        except ConfigError as exc:
            return _config_failure(exc)
    opened = _open(args)
    if isinstance(opened, int):
        return opened
    from tcpstack.io.tun import TunLink, device_txqueuelen, short_queue_fix

    config, link, stack = opened.config, cast(TunLink, opened.link), opened.stack
    if args.worker_of:
        from tcpstack.workers import number_connections

        number_connections(stack, args.worker_of)  # before any connection opens
    qlen = device_txqueuelen(link.name)
    first = not getattr(args, "worker_of", None) or str(args.worker_of).startswith("0/")  # of --workers N: one says it
    if first and (fix := short_queue_fix(link.name, qlen)) is not None:  # once, at start (docs/cli.md)
        logger.warning("tun.short_queue", device=link.name, txqueuelen=qlen, why="the kernel drops bursts", fix=fix)
    pid_file = Path(args.pid_file) if args.pid_file else None
    if pid_file is not None:
        try:
            pid_file.write_text(f"{os.getpid()}\n")
        except OSError as exc:
            opened.close()
            return _fail(f"--pid-file {pid_file}: cannot write: {exc.strerror or exc}")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        control: bool | Path = Path(args.control) if args.control else True
        async with run_stack(opened, control=control, log_down=True) as api:
            if (serves or apps) and api._tcp is None:
                raise StackError("--serve and --app need a tcp layer in the configuration")
            for name, port in serves:
                await serve(api, name, port)
            for spec, target in apps:
                try:
                    if spec.option == "--app":
                        await api.start_server(target, spec.host, spec.port)
                    else:
                        await api.create_server(target, spec.host, spec.port)
                except OSError as exc:
                    raise StackError(f"{spec.option} {spec.spec!r}: {exc.strerror or exc}") from None
            ipv4 = config.layer("ipv4")
            if args.worker_of:
                from tcpstack.workers import count_connections

                count_connections(stack)
            freeze_startup_heap()
            logger.info(
                "worker.up" if args.worker_of else "stack.up",
                device=link.name,
                created=link.created,
                address=ipv4.settings.address if ipv4 else None,
                mtu=link.mtu,
                offload=getattr(link, "offload", False),
                loop=event_loop_name(),
                layers=[layer.type for layer in config.layers],
                services=[f"{name}:{port}" for name, port in serves],
                apps=[spec.label for spec, _ in apps],
                plugins=stack.host.plugin_names() if stack.host else [],
                control=str(api.control_path) if api.control_path else None,
            )
            await stop.wait()

    try:
        run_loop(run())
    except StackError as exc:
        return _fail(str(exc))
    finally:
        opened.close()
        if pid_file is not None:
            _remove_pid_file(pid_file)
    return EXIT_OK


def _ss_select(args: argparse.Namespace) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None:
    """``tcpstack ss``'s filter and ``--conn``, parsed before the stack is asked: the row picker,
    or ``None`` after one error line (a bad filter is exit 1, as ss's own)."""
    from tcpstack.ssfilter import FilterError, parse_conn_id, parse_filter

    try:
        keep = parse_filter(args.filter)
        conn = parse_conn_id(args.conn) if args.conn is not None else None
    except FilterError as exc:
        print(f"tcpstack: error: ss: {exc}", file=sys.stderr)
        return None

    def select(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rows if keep(r) and (conn is None or conn.matches(r))]

    return select


def freeze_startup_heap() -> None:
    """Move everything start-up made (modules, plugins, the stack, the event loop) out of the
    garbage collector's reach (``gc.freeze``): a long-running stack made them once and keeps
    them, and the collections that connections' objects trigger then scan only what came
    after (docs/architecture.md, "Connection cost")."""
    gc.collect()
    gc.freeze()


def _remove_pid_file(path: Path) -> None:
    """Remove *path* if it still names this process (another stack may have taken it over)."""
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except (OSError, UnicodeDecodeError):
        pass


def cmd_connect(args: argparse.Namespace) -> int:
    import ipaddress

    # Checked before the device is opened: a typo costs nothing.
    try:
        ipaddress.IPv4Address(args.host)
    except ValueError:
        return _fail(f"HOST {args.host!r} is not an IPv4 address (the stack has no resolver)", EXIT_USAGE)
    if not 0 < args.port < 65536:
        return _fail(f"PORT {args.port} is not in 1-65535", EXIT_USAGE)
    if not 0 < args.timeout <= 3600:  # (NaN fails too)
        return _fail("--timeout must be in (0, 3600] seconds", EXIT_USAGE)
    opened = _open(args)
    if isinstance(opened, int):
        return opened
    result: list[int] = [EXIT_OK]

    async def pump_stdin(writer: asyncio.StreamWriter) -> None:
        chunks = _stdin_reader(asyncio.get_running_loop())
        while chunk := await chunks.get():
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()

    async def pump_stdout(reader: asyncio.StreamReader) -> None:
        out = sys.stdout.buffer
        while data := await reader.read(65536):
            out.write(data)
            out.flush()

    async def run() -> None:
        async with run_stack(opened, control=False) as api:
            try:
                reader, writer = await api.open_connection(args.host, args.port, timeout=args.timeout)
            except (OSError, ValueError) as exc:
                result[0] = _fail(f"connect to {args.host}:{args.port}: {_describe(exc)}")
                return
            logger.debug("connect.established", peer=f"{args.host}:{args.port}")
            sender = asyncio.ensure_future(pump_stdin(writer))
            try:
                await pump_stdout(reader)
                await sender
                writer.close()
                await writer.wait_closed()
                # Let the final ACK of the peer's FIN leave before the stack goes away.
                await asyncio.sleep(0.05)
            except OSError as exc:
                sender.cancel()
                sender.add_done_callback(lambda t: t.cancelled() or t.exception())  # reported just below
                result[0] = _fail(f"connection to {args.host}:{args.port}: {_describe(exc)}")

    try:
        run_loop(run())
    except StackError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    finally:
        opened.close()
    return result[0]


def _stdin_reader(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[bytes]:
    """Chunks of standard input (``b""`` at its end), read by a daemon thread.

    Not the loop's default executor: ``asyncio.run`` joins its threads on the way out, so a
    read blocked on a still-open stdin would keep ``connect`` from exiting after a reset.
    ``os.read`` on the descriptor rather than ``sys.stdin.buffer``, so the blocked thread holds
    no lock the interpreter needs at exit.
    """
    import os
    import threading

    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
    fd = sys.stdin.fileno()

    def read() -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            try:
                asyncio.run_coroutine_threadsafe(queue.put(chunk), loop).result()
            except (RuntimeError, concurrent.futures.CancelledError):
                return  # the loop is gone
            if not chunk:
                return

    threading.Thread(target=read, name="tcpstack-stdin", daemon=True).start()
    return queue


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # Output piped into a program that stopped reading (| head): not an error of ours.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(
        fmt=getattr(args, "log_format", "console"),
        level=getattr(args, "log_level", "info"),
        flush_after=UP_LOG_FLUSH if args.command == "up" else 0.0,
    )
    if args.command == "up":
        try:
            return cmd_up(args)
        finally:
            flush_logs()
    if args.command == "connect":
        return cmd_connect(args)
    if args.command in ("ss", "stats", "fetch", "probe"):
        from tcpstack.control import default_path, run_client

        if not args.control:
            from layers.link.handler import check_ifname

            problem = check_ifname(args.tun)
            if problem:
                return _fail(f"--tun {args.tun!r}: {problem}", EXIT_USAGE)
        path = Path(args.control) if args.control else default_path(args.tun)
        if args.command == "probe":
            from tcpstack import probe

            if args.watch is not None and not 0 < args.watch <= 3600:  # (NaN fails too)
                return _fail("--watch needs 0 < SECONDS <= 3600", EXIT_USAGE)
            if args.count is not None and (args.watch is None or args.count < 1):
                return _fail("--count goes with --watch and needs a positive count", EXIT_USAGE)
            return probe.run(path, args.conn, as_json=args.json, watch=args.watch, count=args.count)
        if args.command != "fetch":
            select = None
            if args.command == "ss":
                select = _ss_select(args)
                if select is None:
                    return EXIT_FAILURE
            if args.watch is None:
                if args.count is not None:
                    return _fail("--count goes with --watch", EXIT_USAGE)
                return run_client(args.command, path, args.json, select=select)
            if not 0 < args.watch <= 3600 or (args.count is not None and args.count < 1):  # (NaN fails too)
                return _fail("--watch needs 0 < SECONDS <= 3600, and --count a positive count", EXIT_USAGE)
            from tcpstack.control import watch

            return watch(args.command, path, args.json, interval=args.watch, count=args.count, select=select)
        if not 0 < args.timeout <= 3600:
            return _fail("--timeout must be in (0, 3600] seconds", EXIT_USAGE)
        from tcpstack.control import parse_http_url

        try:
            parse_http_url(args.url)  # the stack checks it too; a typo needs no running stack
        except ValueError as exc:
            return _fail(str(exc), EXIT_USAGE)
        output = str(Path(args.output).resolve()) if args.output else None
        return run_client("fetch", path, args.json, timeout=args.timeout, url=args.url, output=output)
    if args.command == "config":
        from tcpstack import configcmd

        if args.config_command == "init":
            return configcmd.init(args.file, force=args.force)
        return configcmd.check(args.file)
    if args.command == "plot":
        from tcpstack.plot.command import run as run_plot

        return run_plot(args.capture, args.output, args.probe, args.conn)
    if args.command == "demo":
        from tcpstack.demo import run_demo

        if args.pcap is not None:
            from layers.middleware.pcap import check_capture_path

            problem = check_capture_path(args.pcap)
            if problem:
                return _fail(f"--pcap: {problem}", EXIT_USAGE)
        return run_demo(keep=args.keep, pcap=args.pcap, offload=args.offload, open_page=args.open)
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USAGE  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
