"""Deterministic network simulation benchmark (in the spirit of smoltcp's netsim).

Run:  .venv/bin/python bench/netsim.py            # rewrites bench/netsim.md
      .venv/bin/python bench/netsim.py --check    # exit 1 with a diff if bench/netsim.md is stale

The scenario, entirely in virtual time (:class:`framework.simulation.Simulation`), so every run
is identical and no real clock is read:

- two stacks on the in-memory link: a sender at 10.0.0.1 and a receiver at 10.0.0.2, with
  fixed ISN secrets, port seeds and IP identification seeds;
- one wire between them, the same each way: a bandwidth of 10 MB/s (80 Mbit/s), a one-way
  propagation delay of 10 ms (RTT 20 ms, so the bandwidth-delay product is 200 kB, about 137
  full-sized frames) and a transmit queue of a fixed number of frames with tail drop, so a
  congestion window that overshoots the path's capacity costs real congestion losses;
- random loss in the data direction only: a seeded ``fault`` layer between the sender's link
  and its IPv4 layer drops that fraction of the sender's outgoing datagrams (data segments,
  and also its SYN and FIN; the receiver's ACKs are never dropped at random);
- both stacks run the plugin set of the row: a congestion-control algorithm plus features on
  top of the base set (window_scaling, timestamps, delayed_ack, nagle), with buffers larger
  than the bandwidth-delay product (receive 1 MiB, send 4 MiB);
- the sender connects at t=0, writes the whole transfer and half-closes; the cell ends when
  the receiver has read every byte and the FIN. Goodput is transfer bytes / virtual seconds
  from the SYN to that moment (1 MB = 10**6 bytes; the handshake's RTT is included).

Tables: the plugin sets against random loss with a 100-frame queue; congestion losses only with
a 20-frame queue; and slow-start overshoot with a deep 300-frame queue (where HyStart++ can see
the queue's delay before it overflows).

Reported per cell: goodput, the sender's retransmitted segments and bytes (its connection's
``retransmits`` / ``retransmitted_bytes``), datagrams the fault layer dropped, and frames the
wire's queue dropped (both directions).

The rows are :data:`PLUGIN_SETS`: a row whose features or algorithm no plugin registers yet
is left out, and the snapshot's header says which features exist, so adding a row for a
plugin that is still being written is harmless. This is a benchmark, not a test: it asserts
nothing about speed; tests/bench/test_netsim.py checks determinism and that one committed cell
is current.
"""

from __future__ import annotations

import argparse
import difflib
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from framework.registry import Registry  # noqa: E402
from framework.simulation import Simulation  # noqa: E402
from framework.stack import Stack  # noqa: E402
from layers.tcp.connection import TcpConnection  # noqa: E402
from layers.tcp.events import ConnectionFailed, DataReceived, EofReceived, TcpEvent  # noqa: E402
from layers.tcp.extensions import congestion_controls, features  # noqa: E402
from layers.tcp.handler import TcpLayer  # noqa: E402
from layers.tcp.state import TcpState  # noqa: E402
from tcpstack.config import build_stack, config_from_dict  # noqa: E402
from tcpstack.logging import configure_logging  # noqa: E402
from tcpstack.plugins import PluginHost  # noqa: E402

SNAPSHOT = ROOT / "bench" / "netsim.md"
COMMAND = ".venv/bin/python bench/netsim.py"

# ---------------------------------------------------------------- parameters of the scenario

SENDER_ADDR = "10.0.0.1"
RECEIVER_ADDR = "10.0.0.2"
PORT = 5001
BANDWIDTH = 10_000_000  # bytes per second, each way (80 Mbit/s)
DELAY = 0.010  # one-way propagation delay (s)
QUEUE = 100  # frames waiting for the transmitter, per direction (tail drop)
SMALL_QUEUE = 20  # the congestion-only table
DEEP_QUEUE = 300  # the slow-start table: a buffer deep enough for RTT growth to show (45 ms)
TRANSFER = 2_000_000  # bytes from sender to receiver
LOSSES: tuple[float, ...] = (0.0, 0.005, 0.01, 0.02, 0.05)
FAULT_SEED = 1
SEND_BUFFER = 4 << 20
RECV_BUFFER = 1 << 20
VIRTUAL_LIMIT = 600.0  # virtual seconds before a cell counts as stalled
MAX_STEPS = 5_000_000

#: Features on in every row (the built-in default set, named explicitly so that a change of
#: the defaults does not silently change what a row measures).
BASE_FEATURES: tuple[str, ...] = ("window_scaling", "timestamps", "delayed_ack", "nagle")


@dataclass(frozen=True, slots=True)
class PluginSet:
    """One row: a congestion-control algorithm and the features on top of :data:`BASE_FEATURES`."""

    name: str
    congestion_control: str
    features: tuple[str, ...] = ()

    def missing(self, registry: Registry) -> list[str]:
        """What this row needs that no plugin registers (empty: the row can run)."""
        out = [f for f in (*BASE_FEATURES, *self.features) if f not in features(registry)]
        if self.congestion_control not in congestion_controls(registry):
            out.append(self.congestion_control)
        return out


#: The rows, in table order. Extend freely: rows that need an unregistered plugin are skipped.
PLUGIN_SETS: tuple[PluginSet, ...] = (
    PluginSet("reno", "reno"),
    PluginSet("cubic", "cubic"),
    PluginSet("reno+sack", "reno", ("sack",)),
    PluginSet("cubic+sack", "cubic", ("sack",)),
    PluginSet("cubic+sack+rack_tlp", "cubic", ("sack", "rack_tlp")),
    PluginSet("cubic+sack+hystart", "cubic", ("sack", "hystart")),
    PluginSet("reno+sack+hystart", "reno", ("sack", "hystart")),
)


@cache
def registry() -> Registry:
    """The registry of the built-in plugins (installed third-party plugins are not loaded)."""
    return PluginHost(entry_points=False).registry


def plugin_set(name: str) -> PluginSet:
    for ps in PLUGIN_SETS:
        if ps.name == name:
            return ps
    raise ValueError(f"unknown plugin set {name!r} (known: {', '.join(p.name for p in PLUGIN_SETS)})")


def available_sets() -> list[PluginSet]:
    return [ps for ps in PLUGIN_SETS if not ps.missing(registry())]


# ---------------------------------------------------------------- one cell


@dataclass(frozen=True, slots=True)
class CellResult:
    plugin_set: str
    loss: float
    queue: int
    size: int
    delivered: int
    """Bytes the receiver read (equal to ``size`` when the transfer completed)."""
    intact: bool
    """The receiver read exactly the bytes sent, and the FIN."""
    seconds: float
    """Virtual time from the SYN to the receiver's end of file (or the limit, if stalled)."""
    retransmits: int
    retransmitted_bytes: int
    fault_drops: int
    queue_drops: int
    failure: str | None = None

    @property
    def completed(self) -> bool:
        return self.intact and self.failure is None

    @property
    def goodput(self) -> float:
        """MB/s (10**6 bytes per virtual second)."""
        return self.delivered / self.seconds / 1e6 if self.seconds > 0 else 0.0


def _stack(address: str, ps: PluginSet, *, loss: float | None, seed: int) -> Stack:
    layers: list[dict[str, Any]] = [{"type": "memory", "mtu": 1500}]
    if loss is not None:
        layers.append({"type": "fault", "drop": loss, "seed": seed, "direction": "out"})
    layers.append({"type": "ipv4", "address": f"{address}/24", "ident_seed": 0})
    layers.append(
        {
            "type": "tcp",
            "isn_secret": "00" * 16,
            "port_seed": 1,
            "default_features": False,
            "features": {name: {} for name in (*BASE_FEATURES, *ps.features)},
            "congestion_control": ps.congestion_control,
            "send_buffer": SEND_BUFFER,
            "recv_buffer": RECV_BUFFER,
        }
    )
    cfg = config_from_dict({"layers": layers}, host=PluginHost(entry_points=False))
    return build_stack(cfg)


class _Sender:
    """Writes the payload (it fits the send buffer) and half-closes once connected."""

    def __init__(self, sim: Simulation, tcp: TcpLayer, payload: bytes) -> None:
        self.sim, self.tcp = sim, tcp
        self.payload = memoryview(payload)
        self.written = 0
        self.shut = False
        self.failure: str | None = None
        self.conn: TcpConnection | None = None

    def attach(self, conn: TcpConnection) -> None:
        self.conn = conn
        conn.listener = self
        self.pump()

    def pump(self) -> None:
        conn = self.conn
        if conn is None or self.shut:
            return
        now = self.sim.now
        if self.written < len(self.payload) and conn.state in (TcpState.SYN_SENT, TcpState.ESTABLISHED):
            self.written += conn.send(self.payload[self.written :], now)
        if self.written == len(self.payload) and conn.state is TcpState.ESTABLISHED:
            self.shut = True
            conn.shutdown(now)
        self.tcp.touch(conn)

    def handle_event(self, conn: TcpConnection, event: TcpEvent) -> None:
        if isinstance(event, ConnectionFailed):
            self.failure = f"sender: {event.reason}"
        else:
            self.pump()


class _Receiver:
    """Reads everything; notes the end of file."""

    def __init__(self, tcp: TcpLayer) -> None:
        self.tcp = tcp
        self.received = bytearray()
        self.eof = False
        self.failure: str | None = None

    def attach(self, conn: TcpConnection) -> None:
        conn.listener = self

    def handle_event(self, conn: TcpConnection, event: TcpEvent) -> None:
        if isinstance(event, DataReceived | EofReceived):
            self.received += conn.read()
            self.tcp.touch(conn)
            if isinstance(event, EofReceived):
                self.eof = True
        elif isinstance(event, ConnectionFailed):
            self.failure = f"receiver: {event.reason}"


def payload(size: int) -> bytes:
    """*size* recognisable bytes."""
    pattern = bytes(range(251))  # a prime length, so segments do not line up with it
    return (pattern * (size // len(pattern) + 1))[:size]


def cell(
    plugin_set_name: str,
    loss: float,
    *,
    queue: int = QUEUE,
    size: int = TRANSFER,
    bandwidth: float = BANDWIDTH,
    delay: float = DELAY,
    seed: int = FAULT_SEED,
) -> CellResult:
    """Run one cell of the table: *size* bytes from sender to receiver under the row's plugins."""
    ps = plugin_set(plugin_set_name)
    missing = ps.missing(registry())
    if missing:
        raise ValueError(f"plugin set {ps.name!r} needs unregistered plugins: {', '.join(missing)}")
    sim = Simulation()
    a = _stack(SENDER_ADDR, ps, loss=loss, seed=seed)
    b = _stack(RECEIVER_ADDR, ps, loss=None, seed=seed)
    sim.wire(a, b, delay=delay, bandwidth=bandwidth, queue_limit=queue)
    ta, tb = a.layer("tcp"), b.layer("tcp")
    assert isinstance(ta, TcpLayer) and isinstance(tb, TcpLayer)
    data = payload(size)
    receiver = _Receiver(tb)
    tb.listen(PORT, on_accept=receiver.attach)
    sender = _Sender(sim, ta, data)
    sender.attach(ta.connect(socket.inet_aton(RECEIVER_ADDR), PORT, now=0.0))

    def done() -> bool:
        return receiver.eof or bool(sender.failure or receiver.failure)

    sim.run(until=VIRTUAL_LIMIT, condition=done, max_steps=MAX_STEPS)
    conn = sender.conn
    assert conn is not None
    failure = sender.failure or receiver.failure
    if failure is None and not receiver.eof:
        failure = "stalled"
    return CellResult(
        plugin_set=ps.name,
        loss=loss,
        queue=queue,
        size=size,
        delivered=len(receiver.received),
        intact=receiver.eof and receiver.received == data,
        seconds=sim.now,
        retransmits=conn.retransmits,
        retransmitted_bytes=conn.retransmitted_bytes,
        fault_drops=a.stats.events["fault.dropped"],
        queue_drops=sim.stats(a).dropped + sim.stats(b).dropped,
        failure=failure,
    )


# ---------------------------------------------------------------- the snapshot


def pct(loss: float) -> str:
    return f"{loss * 100:g}%"


def cell_text(r: CellResult) -> str:
    """A cell of the summary tables: ``goodput MB/s / retransmitted segments``."""
    if not r.completed:
        return f"{r.failure or 'corrupt'} / {r.retransmits}"
    return f"{r.goodput:.2f} / {r.retransmits}"


def detail_cells(r: CellResult) -> list[str]:
    status = "ok" if r.completed else (r.failure or "corrupt")
    return [
        r.plugin_set,
        pct(r.loss),
        str(r.queue),
        f"{r.seconds:.4f}",
        f"{r.goodput:.3f}",
        str(r.retransmits),
        str(r.retransmitted_bytes),
        str(r.fault_drops),
        str(r.queue_drops),
        status,
    ]


def detail_row(r: CellResult) -> str:
    """One line of the details table (the test compares one of these with the snapshot)."""
    return _row(detail_cells(r))


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = [_row(header), "|" + "|".join("---" for _ in header) + "|"]
    lines += [_row(row) for row in rows]
    return lines


DETAIL_HEADER = (
    "plugin set",
    "loss",
    "queue",
    "virtual s",
    "goodput MB/s",
    "retx segments",
    "retx bytes",
    "fault drops",
    "queue drops",
    "status",
)


def header_lines(size: int = TRANSFER) -> list[str]:
    """The snapshot up to the tables: how to regenerate, the parameters, what is registered."""
    reg = registry()
    bdp = int(BANDWIDTH * 2 * DELAY)
    out = [
        "# netsim: throughput and retransmissions per plugin set",
        "",
        f"Generated by `{COMMAND}` (deterministic: virtual time, seeded loss); do not edit.",
        f"`{COMMAND} --check` fails with a diff when this file is stale. The scenario is",
        "described in the docstring of `bench/netsim.py`.",
        "",
        "## Parameters",
        "",
        f"- transfer: {size} bytes, sender {SENDER_ADDR} -> receiver {RECEIVER_ADDR}, then FIN",
        f"- wire, each way: {BANDWIDTH / 1e6:g} MB/s ({BANDWIDTH * 8 / 1e6:g} Mbit/s), {DELAY * 1000:g} ms one-way "
        f"delay (RTT {2 * DELAY * 1000:g} ms, BDP {bdp} bytes), tail-drop queue of {QUEUE} frames",
        f"- loss: random drops of the sender's outgoing datagrams (fault layer, seed {FAULT_SEED}); "
        "ACKs are never dropped at random",
        f"- buffers: send {SEND_BUFFER} bytes, receive {RECV_BUFFER} bytes; MTU 1500",
        f"- every row: {', '.join(BASE_FEATURES)}; both stacks run the row's plugin set",
        "- goodput: transfer bytes / virtual seconds from the SYN to the receiver's end of file (1 MB = 10^6 bytes)",
        "- retx: segments (and bytes) the sender retransmitted; queue drops: frames the wire's "
        "queue refused (both directions)",
        "",
        "## Plugins",
        "",
        f"- features registered: {', '.join(sorted(features(reg)))}",
        f"- congestion control registered: {', '.join(sorted(congestion_controls(reg)))}",
    ]
    skipped = [(ps, ps.missing(reg)) for ps in PLUGIN_SETS if ps.missing(reg)]
    if skipped:
        out.append("")
        out += [f"Row `{ps.name}` left out: needs {', '.join(need)} (not registered yet)." for ps, need in skipped]
    return out


Key = tuple[str, float, int]  # (plugin set, loss, queue)


def jobs() -> list[Key]:
    """Every cell of the snapshot, in the order of the details table."""
    sets = available_sets()
    return (
        [(ps.name, loss, QUEUE) for ps in sets for loss in LOSSES]
        + [(ps.name, 0.0, SMALL_QUEUE) for ps in sets]
        + [(ps.name, 0.0, DEEP_QUEUE) for ps in sets]
    )


def run_all(size: int = TRANSFER, progress: Callable[[CellResult], None] | None = None) -> dict[Key, CellResult]:
    results: dict[Key, CellResult] = {}
    for name, loss, queue in jobs():
        r = results[(name, loss, queue)] = cell(name, loss, queue=queue, size=size)
        if progress is not None:
            progress(r)
    return results


def render(results: dict[Key, CellResult], size: int = TRANSFER) -> str:
    """The snapshot's Markdown for the results of :func:`run_all`."""
    sets = [ps.name for ps in available_sets()]
    out = header_lines(size)
    out += ["", f"## Goodput MB/s / retransmitted segments, queue {QUEUE} frames", ""]
    out += _table(
        ["plugin set", *(f"loss {pct(loss)}" for loss in LOSSES)],
        [[name, *(cell_text(results[(name, loss, QUEUE)]) for loss in LOSSES)] for name in sets],
    )
    out += ["", f"## Congestion losses only: loss 0%, queue {SMALL_QUEUE} frames", ""]
    small = [results[(name, 0.0, SMALL_QUEUE)] for name in sets]
    out += _table(
        ["plugin set", "goodput MB/s / retx", "retx bytes", "queue drops"],
        [[r.plugin_set, cell_text(r), str(r.retransmitted_bytes), str(r.queue_drops)] for r in small],
    )
    out += ["", f"## Slow-start overshoot: loss 0%, a deep queue of {DEEP_QUEUE} frames", ""]
    deep = [results[(name, 0.0, DEEP_QUEUE)] for name in sets]
    out += _table(
        ["plugin set", "goodput MB/s / retx", "retx bytes", "queue drops"],
        [[r.plugin_set, cell_text(r), str(r.retransmitted_bytes), str(r.queue_drops)] for r in deep],
    )
    out += ["", "## Details", ""]
    out += _table(DETAIL_HEADER, [detail_cells(results[key]) for key in jobs()])
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Deterministic network simulation benchmark: writes bench/netsim.md.",
        epilog="The scenario is described in this file's docstring.",
    )
    parser.add_argument(
        "--check", action="store_true", help="regenerate in memory; exit 1 with a diff if the snapshot differs"
    )
    parser.add_argument(
        "--output", type=Path, default=SNAPSHOT, help="snapshot path (default: %(default)s)", metavar="PATH"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print each cell as it finishes")
    args = parser.parse_args(argv)
    configure_logging(level="warning", stream=sys.stderr)  # the stacks log every loss at debug level

    def show(r: CellResult) -> None:
        print(detail_row(r), file=sys.stderr)

    text = render(run_all(progress=show if args.verbose else None))
    if args.check:
        old = args.output.read_text() if args.output.exists() else ""
        if old == text:
            print(f"{args.output}: up to date")
            return 0
        sys.stdout.writelines(
            difflib.unified_diff(
                old.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=f"{args.output} (snapshot)",
                tofile=f"{args.output} (regenerated)",
            )
        )
        print(f"{args.output} is stale: run {COMMAND}", file=sys.stderr)
        return 1
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
