"""``tcpstack up --workers N``: one stack process per queue of a multi-queue TUN device.

The parent (the supervisor) validates the configuration, opens the device once with
``IFF_MULTI_QUEUE`` (creating it and giving the kernel its address if the configuration says
so), takes its own queue out again (``TUNSETQUEUE``/``IFF_DETACH_QUEUE``: the kernel sends it
nothing, while the open descriptor keeps a created device alive) and starts N worker processes.
Each worker is a full ``tcpstack up`` that opens ``/dev/net/tun``, attaches one queue of the
same device and holds the same listeners (``--serve``, ``--app``, ``--app-protocol``); it gets
its configuration from the parent on standard input (a JSON object), with:

- its own slice of the ephemeral ports (the ``tcp`` layer's ``ephemeral_low``/``ephemeral_high``,
  :func:`port_slices`), so active opens of two workers never use one 4-tuple;
- the SYN-cookie and ISN secrets of the parent (generated once unless the configuration sets
  them), so a cookie made by one worker is valid in every other (a handshake's final ACK may
  land on another queue) and ISNs stay monotonic per 4-tuple (RFC 6528) whichever worker opens;
- its own capture, control socket and any other file a layer writes (a ``path`` setting, as a
  probe's), named by worker (:func:`worker_path`: ``cap.w0.pcap``, ``tun0.w0.sock``).

The kernel picks the queue of each frame it sends us: the queue that last transmitted the flow
(it learns from our writes), otherwise by a symmetric hash of the flow (docs/architecture.md,
"Workers"). A SYN lands on some queue; that worker answers it and owns the connection from
then on, and its writes keep the kernel steering the flow to it.

The parent serves the control socket of the device (``tcpstack ss``/``stats``/``fetch``): it asks
each worker's socket and merges the replies, every row and counter set marked with its worker
(:class:`WorkersControl`). A worker that dies is started again; the parent logs
``worker.died`` (with the connections it held at the last poll, at most a second old) and
``worker.restarted``, and counts ``workers.restarts`` and ``workers.connections_lost`` in
``stats``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import structlog

from framework.stack import Stack
from tcpstack.control import ControlServer
from tcpstack.steering import Steering

logger = structlog.get_logger("tcpstack.workers")

EPHEMERAL = (49152, 65535)
"""The ephemeral range the workers share out (RFC 6056 §2.1: IANA's dynamic ports)."""
POLL_INTERVAL = 1.0
"""Seconds between the parent's polls of each worker's connection count (what a death loses)."""
START_TIMEOUT = 30.0
"""Seconds a worker has to answer on its control socket after it is started."""
QUICK_DEATH = 2.0
"""A worker that dies this soon after starting, MAX_QUICK_DEATHS times in a row, is not started again."""
MAX_QUICK_DEATHS = 5
ASK_TIMEOUT = 5.0
"""Seconds the parent waits for one worker's control reply."""


def port_slices(count: int, low: int = EPHEMERAL[0], high: int = EPHEMERAL[1]) -> list[tuple[int, int]]:
    """Split ``low..high`` into *count* disjoint, contiguous slices covering all of it (the last
    takes the remainder): worker *k* picks the local ports of its active opens from slice *k*."""
    if count < 1:
        raise ValueError(f"need at least one worker, got {count}")
    span = high - low + 1
    if span < count:
        raise ValueError(f"{span} ephemeral ports cannot be shared by {count} workers")
    size = span // count
    return [(low + k * size, high if k == count - 1 else low + (k + 1) * size - 1) for k in range(count)]


def worker_path(path: str | Path, index: int) -> str:
    """*path* named for worker *index*: ``cap.pcap`` -> ``cap.w0.pcap``, ``cap`` -> ``cap.w0``."""
    p = Path(path)
    return str(p.with_name(f"{p.stem}.w{index}{p.suffix}"))


def _layers(data: dict[str, Any]) -> list[dict[str, Any]]:
    layers = data.get("layers")
    return [x for x in layers if isinstance(x, dict)] if isinstance(layers, list) else []


def shared_secrets(data: dict[str, Any]) -> dict[str, str]:
    """The ``tcp`` layer's ISN and SYN-cookie secrets: the configuration's, else new random ones
    (made once, by the parent, for every worker)."""
    tcp = next((x for x in _layers(data) if x.get("type") == "tcp"), {})
    return {
        name: tcp[name] if isinstance(tcp.get(name), str) else secrets.token_hex(16)
        for name in ("isn_secret", "syncookie_secret")
    }


def worker_config(data: dict[str, Any], index: int, count: int, keys: dict[str, str]) -> dict[str, Any]:
    """Worker *index*'s configuration: *data* (validated, overrides applied) with the device
    attached to, not created or addressed (the parent did that), its capture named by worker, its
    slice of the ephemeral ports and the shared secrets."""
    out = json.loads(json.dumps(data))  # a deep copy of plain data
    for layer in _layers(out):
        kind = layer.get("type")
        if kind == "tun":
            layer["create"] = False
            layer.pop("kernel_address", None)
        elif kind == "pcap":
            layer["path"] = worker_path(layer.get("path", "tcpstack.pcap"), index)
        elif isinstance(layer.get("path"), str):  # any other layer's file (a probe's): one per worker
            layer["path"] = worker_path(layer["path"], index)
        if kind == "tcp":
            low = int(layer.get("ephemeral_low", EPHEMERAL[0]))
            high = int(layer.get("ephemeral_high", EPHEMERAL[1]))
            layer["ephemeral_low"], layer["ephemeral_high"] = port_slices(count, low, high)[index]
            layer.update(keys)
    for table in _plugin_tables(out):  # a plugin's file (the probe's records): one per worker
        if isinstance(table.get("path"), str):
            table["path"] = worker_path(table["path"], index)
    return cast(dict[str, Any], out)


def _plugin_tables(data: dict[str, Any]) -> list[dict[str, Any]]:
    plugins = data.get("plugins")
    if not isinstance(plugins, dict):
        return []
    return [v for k, v in plugins.items() if k != "disable" and isinstance(v, dict)]


def restarted_config(config: dict[str, Any], generation: int) -> dict[str, Any]:
    """*config* for the *generation*-th start of its worker after the first: each file a layer
    writes gets ``.rN`` (``cap.w0.r1.pcap``), so a restart keeps the dead worker's capture."""
    out = json.loads(json.dumps(config))
    for layer in [*_layers(out), *_plugin_tables(out)]:
        if isinstance(layer.get("path"), str):
            p = Path(layer["path"])
            layer["path"] = str(p.with_name(f"{p.stem}.r{generation}{p.suffix}"))
    return cast(dict[str, Any], out)


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the parent dies (prctl PR_SET_PDEATHSIG), so a parent
    killed outright leaves no worker behind."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def parse_worker_of(spec: str) -> tuple[int, int]:
    """``"K/N"`` (worker K of N) to ``(K, N)``; ValueError if malformed."""
    k, _, n = spec.partition("/")
    index, count = int(k), int(n)
    if not 0 <= index < count:
        raise ValueError(f"--worker-of {spec!r}: want K/N with 0 <= K < N")
    return index, count


def read_worker_config(spec: str) -> dict[str, Any]:
    """In worker *spec* (``K/N``): the configuration the parent wrote to standard input."""
    from framework.errors import ConfigError

    _die_with_parent()
    try:
        index, _ = parse_worker_of(spec)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None
    try:
        data = json.loads(sys.stdin.buffer.read() or b"null")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ConfigError(["--worker-of: a worker reads its configuration, a JSON object, from standard input"])
    structlog.contextvars.bind_contextvars(worker=index)
    return data


def number_connections(stack: Stack, spec: str) -> None:
    """In worker *spec* (``K/N``): number its connections K+1, K+1+N, K+1+2N, ... (``ConnInfo.number``),
    so the IDs ``tcpstack ss`` shows are unique across the workers of one ``up --workers N``."""
    from tcpstack.streams import find_tcp_layer

    index, count = parse_worker_of(spec)
    tcp = find_tcp_layer(stack)
    if tcp is not None:
        tcp.next_number, tcp.number_step = index + 1, count


def count_connections(stack: Stack) -> None:
    """In a worker: count every connection it opens or accepts (``worker.connections``), so
    ``stats`` shows how the kernel spread the flows (once per connection, not per segment)."""
    from tcpstack.streams import find_tcp_layer

    tcp = find_tcp_layer(stack)
    if tcp is not None and tcp.on_new_connection is None:
        tcp.on_new_connection = lambda conn: stack.stats.count("worker.connections")


@dataclass
class Worker:
    index: int
    control: Path
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    connections: int = 0
    """Connections it held at the last poll (what its death loses)."""
    quick_deaths: int = 0
    generation: int = 0
    """Starts so far (the first is 0)."""
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    """Starts the workers, restarts one that dies, and stops them all (by their PIDs)."""

    def __init__(
        self, argv: list[str], configs: list[dict[str, Any]], controls: list[Path], steering: Steering | None = None
    ) -> None:
        self.argv = argv
        self.steering = steering
        self.configs = configs
        self.workers = [Worker(k, path) for k, path in enumerate(controls)]
        self.restarts = 0
        self.connections_lost = 0
        self.stopping = False
        self.failed: str | None = None
        self.done = asyncio.Event()
        self._starting = asyncio.Lock()  # one start at a time: queues are attached in start order

    def command(self, worker: Worker) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tcpstack.cli",
            "up",
            *self.argv,
            "--control",
            str(worker.control),
            "--worker-of",
            f"{worker.index}/{len(self.workers)}",
        ]

    async def start(self, worker: Worker) -> None:
        """Start *worker* and wait until its control socket answers.

        :raises RuntimeError: it exited first or did not answer within :data:`START_TIMEOUT`.
        """
        async with self._starting:
            await self._start(worker)

    async def _start(self, worker: Worker) -> None:
        worker.control.unlink(missing_ok=True)  # a dead worker's socket
        proc = await asyncio.create_subprocess_exec(
            *self.command(worker),
            stdin=asyncio.subprocess.PIPE,
            start_new_session=True,  # the terminal's Ctrl-C goes to the parent, which stops them
        )
        assert proc.stdin is not None
        config = self.configs[worker.index]
        if worker.generation:
            config = restarted_config(config, worker.generation)
        worker.generation += 1
        proc.stdin.write(json.dumps(config).encode())
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        proc.stdin.close()
        worker.proc, worker.started, worker.connections = proc, time.monotonic(), 0
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"worker {worker.index} exited at start ({_status(proc.returncode)})")
            if "error" not in await ask(worker.control, {"cmd": "stats"}, timeout=1.0):
                if self.steering is not None:
                    self.steering.attached(worker.index)  # its queue is the device's last
                worker.watcher = asyncio.ensure_future(self._watch(worker, proc))
                return
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()  # hung: never two processes for one worker
        await proc.wait()
        raise RuntimeError(f"worker {worker.index} did not answer on {worker.control} within {START_TIMEOUT:g} s")

    async def _watch(self, worker: Worker, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if self.stopping:
            return
        if self.steering is not None:
            self.steering.detached(worker.index)  # the kernel moved the last queue into its place
        lost = worker.connections
        self.restarts += 1
        self.connections_lost += lost
        quick = time.monotonic() - worker.started < QUICK_DEATH
        worker.quick_deaths = worker.quick_deaths + 1 if quick else 0
        logger.warning("worker.died", worker=worker.index, pid=proc.pid, status=_status(code), connections_lost=lost)
        while True:
            if worker.quick_deaths >= MAX_QUICK_DEATHS:
                deaths = worker.quick_deaths
                self.failed = f"worker {worker.index} died {deaths} times within {QUICK_DEATH:g} s of starting"
                self.done.set()
                return
            await asyncio.sleep(0.1 * (2**worker.quick_deaths - 1))  # no wait after a death that was not quick
            try:
                await self.start(worker)
                break
            except RuntimeError as exc:
                worker.quick_deaths += 1
                logger.warning("worker.start_failed", worker=worker.index, error=str(exc))
        assert worker.proc is not None
        logger.warning("worker.restarted", worker=worker.index, pid=worker.proc.pid, restarts=self.restarts)

    async def poll(self) -> None:
        """Keep each worker's connection count current (what its death would lose)."""
        while not self.stopping:
            await asyncio.sleep(POLL_INTERVAL)
            for worker in self.workers:
                reply = await ask(worker.control, {"cmd": "stats"}, timeout=1.0)
                if isinstance(reply.get("connections"), int):
                    worker.connections = reply["connections"]

    async def stop(self) -> None:
        """SIGTERM every worker by its PID, SIGKILL one still running after 10 s."""
        self.stopping = True
        procs = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 10.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for worker in self.workers:
            if worker.watcher is not None:
                worker.watcher.cancel()


def _status(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


async def ask(path: Path, request: dict[str, Any], *, timeout: float = ASK_TIMEOUT) -> dict[str, Any]:
    """One request to a worker's control socket; ``{"error": ...}`` if it does not answer."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 26)
            try:
                writer.write(json.dumps(request).encode() + b"\n")
                line = await reader.readline()
            finally:
                writer.close()
        reply = json.loads(line)
    except (OSError, TimeoutError, ValueError) as exc:
        return {"error": f"no answer from {path}: {type(exc).__name__}"}
    return reply if isinstance(reply, dict) else {"error": f"unexpected reply from {path}"}


def merge_probe(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """The workers' ``probe`` replies as one (connection numbers are unique across workers): every
    worker's connections, marked with it; for one connection the worker that has it answers (an
    error only when none has it: "opened without the probe" before "no such connection"). The
    cursor is a list of each worker's (serial numbers are per worker): ``after`` may be that list."""
    good = [(k, r) for k, r in enumerate(replies) if "error" not in r]
    if not good:
        for code in ("no_probe", "unknown", "no_sink"):
            for r in replies:
                if r.get("code") == code:
                    return r
        return replies[0] if replies else {"error": "no worker answered"}
    merged: dict[str, Any] = {**good[0][1], "connections": [], "without_probe": 0}
    merged["cursor"] = [r.get("cursor", 0) if "error" not in r else 0 for r in replies]
    for k, reply in good:
        merged["connections"] += [{"worker": k, **c} for c in reply.get("connections", [])]
        merged["without_probe"] += reply.get("without_probe", 0)
    return merged


def merge_stats(replies: list[dict[str, Any]], supervisor: Supervisor | None = None) -> dict[str, Any]:
    """Every worker's ``stats`` added up, each worker's own under ``workers`` (marked by worker);
    the supervisor's ``workers.restarts`` and ``workers.connections_lost`` among the events."""
    drops: dict[str, int] = {}
    events: dict[str, int] = {}
    frames = conns = 0
    per: list[dict[str, Any]] = []
    for k, reply in enumerate(replies):
        per.append({"worker": k, **reply})
        if "error" in reply:
            continue
        frames += int(reply.get("frames_in", 0))
        conns += int(reply.get("connections", 0))
        for name, n in reply.get("drops", {}).items():
            drops[name] = drops.get(name, 0) + n
        for name, n in reply.get("events", {}).items():
            events[name] = events.get(name, 0) + n
    if supervisor is not None:
        events["workers.restarts"] = supervisor.restarts
        events["workers.connections_lost"] = supervisor.connections_lost
        for row, worker in zip(per, supervisor.workers, strict=True):
            row["pid"] = worker.proc.pid if worker.proc is not None else None
            row["held"] = worker.connections  # at the parent's last poll: what a death would lose
    return {
        "frames_in": frames,
        "connections": conns,
        "drops": dict(sorted(drops.items())),
        "events": dict(sorted(events.items())),
        "workers": per,
    }


class WorkersControl(ControlServer):
    """The parent's control socket: asks every worker and merges (``ss`` rows and ``stats``
    counter sets carry ``worker``); ``fetch`` is run by worker 0."""

    def __init__(self, supervisor: Supervisor, path: Path) -> None:
        super().__init__(cast(Stack, None), path)  # no stack of its own: dispatch() asks the workers
        self.supervisor = supervisor

    async def dispatch(self, cmd: object, request: dict[str, Any]) -> dict[str, Any] | None:
        workers = self.supervisor.workers
        if cmd == "fetch":
            timeout = request.get("timeout", 60.0)
            wait = float(timeout) + 5.0 if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) else 65.0
            return await ask(workers[0].control, request, timeout=min(wait, 3700.0))
        if cmd == "probe":  # each worker from its own cursor (the list merge_probe made)
            after = request.get("after", 0)
            asks = [
                ask(w.control, {**request, "after": after[k] if isinstance(after, list) else after}, timeout=30.0)
                for k, w in enumerate(workers)
            ]
            return merge_probe(list(await asyncio.gather(*asks)))
        if cmd not in ("ss", "stats"):
            return None
        replies = await asyncio.gather(*(ask(w.control, {"cmd": cmd}) for w in workers))
        if cmd == "stats":
            return merge_stats(list(replies), self.supervisor)
        rows: list[dict[str, Any]] = []
        for k, reply in enumerate(replies):
            if "error" in reply:
                rows.append({"worker": k, "state": "NO-ANSWER", "local": "-", "remote": "-"})
                continue
            rows.extend({"worker": k, **row} for row in reply.get("connections", []))
        return {"connections": rows}


async def supervise(
    argv: list[str],
    configs: list[dict[str, Any]],
    control: Path | None,
    worker_controls: list[Path],
    up_fields: dict[str, Any],
    steering: Steering | None = None,
) -> str | None:
    """Run the workers until SIGINT/SIGTERM (``None``) or until they cannot be kept running (the reason)."""
    loop = asyncio.get_running_loop()
    sup = Supervisor(argv, configs, worker_controls, steering)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, sup.done.set)
    server: WorkersControl | None = None
    poller: asyncio.Task[None] | None = None
    try:
        try:
            for worker in sup.workers:  # one after the other: worker k attaches queue k
                await sup.start(worker)
        except RuntimeError as exc:
            return str(exc)
        if control is not None:
            server = WorkersControl(sup, control)
            try:
                await server.start()
            except OSError as exc:
                logger.warning("control.unavailable", error=str(exc))
                server = None
        poller = asyncio.ensure_future(sup.poll())
        logger.info(
            "stack.up",
            workers=[w.proc.pid for w in sup.workers if w.proc is not None],
            control=str(control) if server is not None else None,
            **up_fields,
        )
        await sup.done.wait()
        return sup.failed
    finally:
        if poller is not None:
            poller.cancel()
        if server is not None:
            await server.stop()
        await sup.stop()
        logger.info("stack.down", restarts=sup.restarts, connections_lost=sup.connections_lost)


MAX_WORKERS = 64


def up_workers(args: Any, data: dict[str, Any], services: list[str], apps: list[str]) -> int:
    """``tcpstack up --workers N`` (N > 1): validate, open and detach the device, run the workers.

    :raises ConfigError: the configuration (with the command line's overrides) is invalid.
    """
    from framework.errors import LinkError
    from tcpstack.configcmd import validate_for_up
    from tcpstack.control import default_path
    from tcpstack.io.tun import TunLink

    count = int(args.workers)
    if not 1 <= count <= MAX_WORKERS:
        print(f"tcpstack: error: --workers must be 1-{MAX_WORKERS}, not {count}", file=sys.stderr)
        return 2
    validated = validate_for_up(data)
    settings = validated.layers[0].settings
    try:
        link = TunLink(
            settings.device,
            mtu=settings.mtu,
            create=settings.create,
            kernel_address=settings.kernel_address,
            offload=settings.offload,
            multi_queue=True,
        )
        link.detach_queue()  # the parent takes no traffic; its descriptor keeps a created device
    except (LinkError, OSError) as exc:
        print(f"tcpstack: error: {exc}", file=sys.stderr)
        return 1
    tcp = next((x for x in _layers(data) if x.get("type") == "tcp"), {})
    low, high = int(tcp.get("ephemeral_low", EPHEMERAL[0])), int(tcp.get("ephemeral_high", EPHEMERAL[1]))
    steering: Steering | None = None
    try:
        steering = Steering(link.fileno(), count, low, high)
    except OSError as exc:  # no eBPF here: the kernel's own flow table and hash steer
        logger.warning("workers.no_steering_program", error=str(exc))
    keys = shared_secrets(data)
    configs = [worker_config(data, k, count, keys) for k in range(count)]
    control = Path(args.control) if args.control else default_path(link.name)
    argv = ["--log-format", args.log_format, "--log-level", args.log_level]
    for option, values in (("--serve", args.serve), ("--app", args.app), ("--app-protocol", args.app_protocol)):
        for value in values:
            argv += [option, value]
    pid_file = Path(args.pid_file) if args.pid_file else None
    ipv4 = validated.layer("ipv4")
    fields = {
        "device": link.name,
        "created": link.created,
        "address": ipv4.settings.address if ipv4 else None,
        "mtu": link.mtu,
        "offload": link.offload,
        "services": services,
        "apps": apps,
        "steering": "ebpf" if steering is not None else "kernel flow table and hash",
    }
    try:
        if pid_file is not None:
            try:
                pid_file.write_text(f"{os.getpid()}\n")
            except OSError as exc:
                print(f"tcpstack: error: --pid-file {pid_file}: cannot write: {exc.strerror or exc}", file=sys.stderr)
                return 1
        failure = asyncio.run(
            supervise(argv, configs, control, [Path(worker_path(control, k)) for k in range(count)], fields, steering)
        )
    finally:
        if steering is not None:
            steering.close(link.fileno())
        link.close()
        if pid_file is not None:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if pid_file.read_text().strip() == str(os.getpid()):
                    pid_file.unlink()
    if failure is not None:
        print(f"tcpstack: error: {failure}", file=sys.stderr)
        return 1
    return 0
