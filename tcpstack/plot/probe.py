"""Reading a probe file (docs/observability.md, "The probe file") for ``tcpstack plot``.

``*.csv`` is CSV with a header row, anything else JSON lines; the same fields in both. The file is
read twice: once for the ``open`` records (which connections exist, their socket pairs and ISS),
once more for the records of the connections to draw only, kept as arrays of numbers (a missing
value is NaN) and, where there are some, the decision texts.

A file whose first record cannot be read is not a probe file (:class:`ProbeError`); a bad record
after that (a line cut short by a killed stack, an unknown event) is skipped and counted.
"""

from __future__ import annotations

import csv
import json
import math
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = ["EVENTS", "NUMBER_FIELDS", "PHASES", "OpenRecord", "ProbeError", "ProbeFile", "ProbeSeries"]

EVENTS: Final = ("open", "ack", "send", "close")
PHASES: Final = ("slow_start", "css", "congestion_avoidance", "fast_recovery", "rto_recovery")
#: The numeric fields kept per record (docs/observability.md, "The probe file").
NUMBER_FIELDS: Final = (
    "seq", "ack", "len", "snd_una", "snd_nxt", "cwnd", "ssthresh", "in_flight", "pipe", "sacked", "lost",
    "srtt", "rttvar", "rto", "rtt_sample", "snd_wnd", "rcv_wnd", "retrans", "ce", "ece",
)  # fmt: skip
NAN: Final = math.nan


class ProbeError(Exception):
    """The file is not a probe file (one line to show)."""


@dataclass(frozen=True, slots=True)
class OpenRecord:
    conn: int
    t: float
    local: str
    remote: str
    iss: int | None
    irs: int | None


class ProbeSeries:
    """One connection's records in file order: ``t``, ``event`` (index into :data:`EVENTS`), each
    field of :data:`NUMBER_FIELDS` (NaN where absent), ``phase`` (index into :attr:`phase_names`,
    -1 where absent) and the decisions of the records that carry some."""

    def __init__(self, conn: int) -> None:
        self.conn = conn
        self.t = array("d")
        self.event = array("b")
        self.fields: dict[str, array[float]] = {name: array("d") for name in NUMBER_FIELDS}
        self.phase = array("b")
        self.phase_names: list[str] = list(PHASES)
        self.decisions: list[tuple[int, tuple[str, ...]]] = []
        """(record index, the record's decisions) for records with at least one."""

    def __len__(self) -> int:
        return len(self.t)

    def column(self, name: str) -> array[float]:
        return self.fields[name]


@dataclass(slots=True)
class ProbeFile:
    path: Path
    opens: dict[int, OpenRecord]
    """The ``open`` record of each connection (the first if several)."""
    counts: Counter[int]
    """Records per connection."""
    skipped: Counter[str] = field(default_factory=Counter)

    def load(self, conns: set[int]) -> dict[int, ProbeSeries]:
        """The records of *conns* (a second reading of the file)."""
        out = {c: ProbeSeries(c) for c in conns}
        for rec in _records(self.path, Counter()):
            series = out.get(rec.conn)
            if series is None:
                continue
            index = len(series.t)
            series.t.append(rec.t)
            series.event.append(EVENTS.index(rec.event))
            for name in NUMBER_FIELDS:
                series.fields[name].append(rec.numbers.get(name, NAN))
            if rec.phase is None:
                series.phase.append(-1)
            else:
                if rec.phase not in series.phase_names:
                    series.phase_names.append(rec.phase)
                series.phase.append(series.phase_names.index(rec.phase))
            if rec.decisions:
                series.decisions.append((index, rec.decisions))
        return out


def read_probe(path: str | Path) -> ProbeFile:
    """First reading of a probe file: its ``open`` records and record counts.

    :raises ProbeError: cannot be opened or read, or the first record is not a probe record.
    """
    path = Path(path)
    opens: dict[int, OpenRecord] = {}
    counts: Counter[int] = Counter()
    skipped: Counter[str] = Counter()
    for rec in _records(path, skipped):
        counts[rec.conn] += 1
        if rec.event == "open" and rec.conn not in opens:
            iss, irs = rec.numbers.get("seq", NAN), rec.numbers.get("ack", NAN)
            opens[rec.conn] = OpenRecord(
                conn=rec.conn,
                t=rec.t,
                local=rec.local or "",
                remote=rec.remote or "",
                iss=None if math.isnan(iss) else int(iss),
                irs=None if math.isnan(irs) else int(irs),
            )
    return ProbeFile(path=path, opens=opens, counts=counts, skipped=skipped)


@dataclass(slots=True)
class _Record:
    t: float
    conn: int
    event: str
    local: str | None
    remote: str | None
    numbers: dict[str, float]
    phase: str | None
    decisions: tuple[str, ...]


def _records(path: Path, skipped: Counter[str]) -> Iterator[_Record]:
    is_csv = path.suffix.lower() == ".csv"
    try:
        f = open(path, encoding="utf-8", newline="" if is_csv else None)  # closed below
    except OSError as exc:
        raise ProbeError(f"cannot open: {exc.strerror or exc}") from None
    with f:
        try:
            rows: Iterator[tuple[int, dict[str, Any] | str]] = _csv_rows(f) if is_csv else _json_rows(f)
            first = True
            for line, row in rows:
                rec = row if isinstance(row, str) else _record(row, is_csv)
                if isinstance(rec, str):
                    if first:
                        raise ProbeError(f"not a probe file: line {line}: {rec}")
                    skipped[rec] += 1
                    continue
                first = False
                yield rec
            if first:
                raise ProbeError("not a probe file: no records")
        except UnicodeDecodeError:
            raise ProbeError("not a probe file: not UTF-8 text") from None
        except OSError as exc:
            raise ProbeError(f"cannot read: {exc.strerror or exc}") from None


def _json_rows(f: Any) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            yield n, "not JSON"
            continue
        yield n, obj if isinstance(obj, dict) else "not a JSON object"


def _csv_rows(f: Any) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.DictReader(f)
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise ProbeError(f"not a probe file: {exc}") from None
    if not header or not {"t", "conn", "event"} <= set(header):
        raise ProbeError("not a probe file: the CSV header has no t, conn and event columns")
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield reader.line_num, "bad CSV"
            continue
        yield reader.line_num, row


def _number(value: Any) -> float | None:
    """A field's number; ``None`` for an absent value (JSON null, an empty CSV cell)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("a boolean")
    x = float(value)
    if math.isnan(x) or math.isinf(x):
        raise ValueError("not finite")
    return x


def _record(row: dict[str, Any], is_csv: bool) -> _Record | str:
    try:
        t = _number(row.get("t"))
        conn = _number(row.get("conn"))
    except (TypeError, ValueError):
        return "bad t or conn"
    if t is None or conn is None or conn != int(conn):
        return "bad t or conn"
    event = row.get("event")
    if event not in EVENTS:
        return "unknown event"
    numbers: dict[str, float] = {}
    for name in NUMBER_FIELDS:
        try:
            x = _number(row.get(name))
        except (TypeError, ValueError):
            return f"bad {name}"
        if x is not None:
            numbers[name] = x
    phase = row.get("phase") or None
    if phase is not None and not isinstance(phase, str):
        return "bad phase"
    raw = row.get("decisions")
    decisions: tuple[str, ...]
    if raw is None or raw == "":
        decisions = ()
    elif is_csv and isinstance(raw, str):
        decisions = tuple(d for d in raw.split(" | ") if d)
    elif isinstance(raw, list) and all(isinstance(d, str) for d in raw):
        decisions = tuple(raw)
    else:
        return "bad decisions"
    local, remote = row.get("local") or None, row.get("remote") or None
    if (local is not None and not isinstance(local, str)) or (remote is not None and not isinstance(remote, str)):
        return "bad local or remote"
    return _Record(t, int(conn), str(event), local, remote, numbers, phase, decisions)
