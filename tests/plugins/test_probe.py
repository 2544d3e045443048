"""The probe (plugins/probe.py): one record per ACK processed and per segment sent, with the
state after it, as docs/observability.md describes the file. Sans-IO: stacks on a simulated wire
(explicit time), the sender's records checked against the segments on the wire."""

from __future__ import annotations

import csv
import gc
import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from framework.config import build_stack, config_from_dict
from framework.stack import Stack
from layers.middleware.fault import FaultInjector
from layers.tcp.connection import TcpConnection
from layers.tcp.policy import TcpOptions
from layers.tcp.wire import ACK, TcpRepr
from plugins import probe as probe_mod
from plugins.probe import FIELDS, ConnProbe, ProbeSink, RecordWriter, flags_text, sink_of, tap_active
from tcpstack.plugins import PluginHost
from tcpstack.probe import parse_conn_id, probe_reply
from tcpstack.testing import TapSimulation, stack_config, tcp_layer
from tcpstack.testing import established as sansio_established
from tests.layers.tcp.helpers import data

SERVER = bytes([10, 0, 0, 2])
PHASES = {"slow_start", "css", "congestion_avoidance", "fast_recovery", "rto_recovery"}


def stack(address: str, *, plugins: dict[str, Any] | None = None, **kw: Any) -> Stack:
    cfg = stack_config(address, **kw)
    if plugins:
        cfg["plugins"] = plugins
    return build_stack(config_from_dict(cfg, host=PluginHost(entry_points=False)))


class Transfer:
    """Client 10.0.0.1 sends *size* bytes to a server at 10.0.0.2 that reads everything, over a
    simulated wire (10 ms, 10 Mbit/s); the server's fault layer may drop what arrives."""

    def __init__(
        self,
        features: dict[str, Any],
        *,
        size: int = 300_000,
        plugins: dict[str, Any] | None = None,
        server_features: dict[str, Any] | None = None,
        congestion_control: str = "reno",
        fault: dict[str, Any] | None = None,
    ) -> None:
        self.sim = TapSimulation()
        self.a = stack("10.0.0.1/24", plugins=plugins, congestion_control=congestion_control)
        self.b = stack("10.0.0.2/24", fault=fault or {"seed": 1}, congestion_control=congestion_control)
        self.sim.wire(self.a, self.b, delay=0.01, bandwidth=1.25e6)
        self.ta, self.tb = tcp_layer(self.a), tcp_layer(self.b)
        self.fault = self.b.layer("fault")
        assert isinstance(self.fault, FaultInjector)
        if server_features is None:  # the options the client's features negotiate, unprobed
            server_features = {k: v for k, v in features.items() if k != "probe"}
        self.listener = self.tb.listen(80, options=TcpOptions(features=server_features))
        self.conn = self.ta.connect(
            SERVER, 80, now=0.0, options=TcpOptions(features=features, initial_window="rfc5681")
        )
        self.sim.run(condition=lambda: bool(self.listener.accept_queue), until=5.0)
        server = self.listener.accept()
        assert server is not None
        self.server: TcpConnection = server
        self.payload = data(size)

    def run(self, until: float = 120.0) -> None:
        got = bytearray()
        sent = 0
        conn, server, ta, tb, sim = self.conn, self.server, self.ta, self.tb, self.sim
        closed = False

        def step() -> bool:
            nonlocal sent, closed
            if sent < len(self.payload):
                n = conn.send(self.payload[sent : sent + 65536], sim.now)
                sent += n
                if n:
                    ta.touch(conn)
            elif not closed:
                conn.close(sim.now)
                ta.touch(conn)
                closed = True
            chunk = server.read()
            if chunk:
                got.extend(chunk)
                tb.touch(server)
            if server.eof_received and not server.user_closed:
                server.close(sim.now)
                tb.touch(server)
            return len(got) == len(self.payload) and not ta.connections and not tb.connections

        assert self.sim.run(condition=step, until=until), "the transfer did not finish"
        assert bytes(got) == self.payload

    def records(self) -> list[dict[str, Any]]:
        probe = self.conn.probe
        assert isinstance(probe, ConnProbe)
        return probe.dicts()

    def wire(self, side: Stack) -> list[TcpRepr]:
        return [seg for _, seg in self.sim.segments(side)]


def drop_data(fault: FaultInjector, nth: int, count: int = 1) -> None:
    fault.add_rule("drop", direction="in", nth=nth, match=lambda d: len(d) > 100, count=count)


def check_records(t: Transfer) -> list[dict[str, Any]]:
    """What holds for any probed connection: the events, the columns, the order; the send records
    are the segments on the wire, the ack records the peer's segments (all with ACK), in order."""
    recs = t.records()
    assert recs[0]["event"] == "open" and recs[-1]["event"] == "close"
    assert [r["event"] for r in recs].count("open") == 1 and [r["event"] for r in recs].count("close") == 1
    assert all(list(r) == list(FIELDS) for r in recs)
    assert recs[0]["local"] == "10.0.0.1:" + str(t.conn.local[1]) and recs[0]["remote"] == "10.0.0.2:80"
    assert recs[0]["seq"] == t.conn.iss
    times = [r["t"] for r in recs]
    assert times == sorted(times)
    assert {r["phase"] for r in recs} <= PHASES
    sent = [(r["seq"], r["len"], r["flags"]) for r in recs if r["event"] == "send"]
    assert sent == [(s.seq, len(s.payload), flags_text(s.flags)) for s in t.wire(t.a)]
    acks = [(r["seq"], r["ack"], r["len"]) for r in recs if r["event"] == "ack"]
    assert acks == [(s.seq, s.ack, len(s.payload)) for s in t.wire(t.b) if s.flags & ACK]
    retrans = [r["retrans"] for r in recs]
    assert retrans == sorted(retrans)
    for r in recs:
        assert r["in_flight"] >= 0 and r["pipe"] >= 0 and r["cwnd"] > 0
        if r["event"] != "open":
            assert r["rcv_wnd"] >= 0 and r["snd_wnd"] >= 0
        assert (r["srtt"] is None) == (r["rttvar"] is None)
    return recs


def test_a_loss_shows_fast_recovery_a_cut_cwnd_and_the_decision() -> None:
    """NewReno with SACK (RFC 6675): one data segment lost; the records show fast recovery, the
    window cut by the loss decision, a retransmission, and ssthresh set from then on."""
    t = Transfer({"probe": {}, "sack": {}, "timestamps": {}, "window_scaling": {}})
    drop_data(t.fault, 40)
    t.run()
    recs = check_records(t)
    assert t.conn.retransmits >= 1 and recs[-1]["retrans"] == t.conn.retransmits
    recovery = [i for i, r in enumerate(recs) if r["phase"] == "fast_recovery"]
    assert recovery, "no fast_recovery record"
    first = recovery[0]
    before = recs[first - 1]
    assert before["phase"] in ("slow_start", "congestion_avoidance")
    assert recs[first]["cwnd"] < before["cwnd"]  # the cut (RFC 6675 §5 (4.2))
    assert any("cwnd reduced" in d and "reason loss" in d for d in recs[first]["decisions"]), recs[first]
    assert all(r["ssthresh"] is None for r in recs[:first])
    assert all(r["ssthresh"] is not None for r in recs[first:])
    assert any(r["event"] == "send" and r["retrans"] > before["retrans"] for r in recs[first:])
    assert max(r["sacked"] for r in recs) > 0  # the receiver SACKed above the hole
    assert any(r["pipe"] < r["in_flight"] for r in recs if r["phase"] == "fast_recovery")
    after = recs[recovery[-1] + 1]
    assert after["phase"] in ("slow_start", "congestion_avoidance")
    samples = [r["rtt_sample"] for r in recs if r["rtt_sample"] is not None]
    assert samples and all(r["event"] == "ack" for r in recs if r["rtt_sample"] is not None)
    assert min(samples) >= 0.02  # two 10 ms hops at least


def test_newreno_without_sack_counts_duplicate_acks_into_recovery() -> None:
    """RFC 6582 without SACK: three duplicate ACKs, then fast_recovery until the full ACK."""
    t = Transfer({"probe": {}})
    drop_data(t.fault, 30)
    t.run()
    recs = check_records(t)
    recovery = [r for r in recs if r["phase"] == "fast_recovery"]
    assert recovery and all(r["sacked"] == 0 and r["lost"] == 0 for r in recs)
    assert any("RFC 5681 §3.2" in d for r in recs for d in r["decisions"])


def test_a_timeout_shows_rto_recovery() -> None:
    """The tail of the transfer lost twice over (no SACK, no RACK): the retransmission timer
    fires; rto_recovery from then until SND.UNA passes the recovery point, cwnd one segment."""
    t = Transfer({"probe": {}}, size=40_000)
    drop_data(t.fault, 20, count=8)
    t.run()
    recs = check_records(t)
    rto = [i for i, r in enumerate(recs) if r["phase"] == "rto_recovery"]
    assert rto, "no rto_recovery record"
    assert recs[rto[0]]["cwnd"] == t.conn.snd_mss
    assert any("retransmission timeout" in d for r in recs for d in r["decisions"])
    assert t.conn.timeouts >= 1


def test_every_ack_is_recorded_also_from_the_fast_path() -> None:
    """A loss-free transfer: the receive fast path takes the pure ACKs (header prediction) and
    tells the probe too, so each ACK the peer sent has its record."""
    t = Transfer({"probe": {}, "timestamps": {}}, size=200_000)
    assert t.conn.fast_path is True and t.server.probe is None
    t.run()
    recs = check_records(t)
    assert {r["phase"] for r in recs} <= {"slow_start", "congestion_avoidance"}
    assert t.a.stats.events.get("tcp.fast_ack", 0) > 0  # (so the fast path's records are among those checked)


def test_decisions_of_the_moment_are_on_the_record() -> None:
    """The receiver's delayed-ACK decisions (RFC 1122 §4.2.3.2) appear on its records as
    describe_decision renders them, each once."""
    t = Transfer({}, server_features={"probe": {}, "delayed_ack": {}}, size=50_000)
    t.run()
    probe = t.server.probe
    assert isinstance(probe, ConnProbe)
    decisions = [d for r in probe.dicts() for d in r["decisions"]]
    assert any(d.startswith("ACK delayed, delayed_ack, RFC 1122 §4.2.3.2, deadline ") for d in decisions)
    assert any(d.startswith("ACK now, delayed_ack") for d in decisions)


def test_ecn_marks_are_counted() -> None:
    """RFC 3168: CE-marked segments the receiver got, ECE-flagged ACKs the sender got."""
    feats = {"probe": {}, "ecn": {}}
    t = Transfer(feats, server_features=feats, fault={"seed": 3, "ce_mark": 0.05, "direction": "in"})
    t.run()
    sender, receiver = t.conn.probe, t.server.probe
    assert isinstance(sender, ConnProbe) and isinstance(receiver, ConnProbe)
    marked = t.b.stats.events["fault.ce_marked"]
    assert receiver.dicts()[-1]["ce"] == marked > 0
    ece = sender.dicts()[-1]["ece"]
    assert ece == sum(1 for s in t.wire(t.b) if s.flags & 0x40 and not s.flags & 0x02) > 0
    assert any("ECN echo" in d for r in sender.dicts() for d in r["decisions"])


def test_css_phase_comes_from_the_slow_start_policy() -> None:
    """HyStart++'s conservative slow start is read through SlowStartProtocol.conservative."""
    conn = sansio_established({"probe": {}, "hystart": {}})
    probe = conn.probe
    assert isinstance(probe, ConnProbe)
    assert conn.slow_start is not None and conn.slow_start.css_active is False
    conn.slow_start.in_css = True  # (what HyStart++ sets on the RTT's growth, RFC 9406 §4.2)
    assert conn.slow_start.css_active is True
    conn.send(b"x" * 10, 1.0)
    conn.segments_to_send(1.0)
    assert probe.dicts()[-1]["phase"] == "css"
    conn.slow_start.done = True  # CSS over
    conn.send(b"y", 1.1)
    conn.segments_to_send(1.1)
    assert probe.dicts()[-1]["phase"] == "slow_start"


def test_without_the_feature_there_is_no_probe_and_no_tap() -> None:
    t = Transfer({}, size=20_000)
    t.run()
    assert t.conn.probe is None and t.server.probe is None
    gc.collect()
    assert not tap_active()
    sink = sink_of(t.a)
    assert isinstance(sink, ProbeSink) and sink.records == 0 and not sink.probes()


def test_the_tap_lives_only_while_a_probe_does() -> None:
    gc.collect()
    assert not tap_active()
    conn = sansio_established({"probe": {}})
    assert tap_active()
    del conn
    gc.collect()
    assert not tap_active()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_the_file_has_the_documented_columns(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"probe{suffix}"
    t = Transfer({"probe": {}, "sack": {}}, plugins={"probe": {"path": str(path)}}, size=100_000)
    drop_data(t.fault, 20)
    t.run()
    held = t.records()
    t.a.host.stack_closed(t.a)  # (what the driver does when it stops): the file is written and closed
    text = path.read_text()
    if suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert list(rows[0]) == list(FIELDS)
        assert len(rows) == len(held)
        for row, rec in zip(rows, held, strict=True):
            assert row["event"] == rec["event"] and int(row["cwnd"]) == rec["cwnd"]
            assert row["ssthresh"] == ("" if rec["ssthresh"] is None else str(rec["ssthresh"]))
            assert row["decisions"] == " | ".join(rec["decisions"])
            assert float(row["t"]) == rec["t"]
    else:
        rows = [json.loads(line) for line in text.splitlines()]
        assert all(list(r) == list(FIELDS) for r in rows)
        assert rows == held
    assert any(r["phase"] == "fast_recovery" for r in held)


def test_the_ring_keeps_the_latest_and_the_control_reply_pages_by_serial() -> None:
    t = Transfer({"probe": {}}, plugins={"probe": {"ring": 16}}, size=60_000)
    t.conn.send(t.payload, t.sim.now)
    t.ta.touch(t.conn)
    t.sim.run(until=0.1)
    probe = t.conn.probe
    assert isinstance(probe, ConnProbe)
    assert probe.count > 16 and len(probe.ring) == 16 and probe.first == probe.count - 16
    reply = probe_reply(t.a, {"cmd": "probe"})
    [entry] = reply["connections"]
    assert entry["first"] == entry["from"] == probe.first and entry["next"] == probe.count
    assert len(entry["records"]) == 16 and reply["fields"] == list(FIELDS)
    cursor = reply["cursor"]
    assert probe_reply(t.a, {"cmd": "probe", "after": cursor})["connections"] == []
    t.sim.run(until=t.sim.now + 0.05)
    again = probe_reply(t.a, {"cmd": "probe", "after": cursor, "conn": probe.number})
    [entry] = again["connections"]
    new = probe.count - (entry["from"])
    assert len(entry["records"]) == new > 0 and entry["from"] >= entry["first"]


def test_control_reply_names_the_connection_problem() -> None:
    t = Transfer({}, size=10_000)
    number = t.conn.number
    reply = probe_reply(t.a, {"cmd": "probe", "conn": number})
    assert reply["code"] == "no_probe"
    assert reply["error"].startswith(f"connection {number} (10.0.0.1:")
    assert "was opened without the probe feature; enable it with" in reply["error"]
    unknown = probe_reply(t.a, {"cmd": "probe", "conn": 999})
    assert unknown["code"] == "unknown" and "no connection 999" in unknown["error"]
    pair = f"10.0.0.1:{t.conn.local[1]}-10.0.0.2:80"
    assert probe_reply(t.a, {"cmd": "probe", "conn": pair})["code"] == "no_probe"
    assert "error" in probe_reply(t.a, {"cmd": "probe", "after": "x"})


def test_connection_ids() -> None:
    assert parse_conn_id("7") == 7
    assert parse_conn_id("10.0.0.2:80-10.0.0.1:4000") == ("10.0.0.2:80", "10.0.0.1:4000")
    assert parse_conn_id("[fd00:0::2]:80-[fd00::1]:4000") == ("[fd00::2]:80", "[fd00::1]:4000")
    for bad in ("", "x", "10.0.0.2:80", "10.0.0.2:80-10.0.0.1", "10.0.0.2:99999-10.0.0.1:1", "[zz]:1-[::1]:2", "0"):
        with pytest.raises(ValueError, match="connection ID"):
            parse_conn_id(bad)


class _SlowStream(io.StringIO):
    """A stream whose writes wait until the test opens the gate: a disk that does not keep up."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def write(self, s: str) -> int:
        self.gate.wait(10)
        return super().write(s)


def test_a_slow_disk_drops_and_counts_instead_of_growing() -> None:
    stream = _SlowStream()
    writer = RecordWriter(stream, "jsonl", max_pending=16, interval=0.01, owns_stream=False)
    record = (0.5, 1, "ack", *([0] * (len(FIELDS) - 4)), (), 1)
    taken = sum(writer.put(record) for _ in range(200))
    assert writer.pending <= 16 and writer.dropped == 200 - taken and taken < 200
    stream.gate.set()
    writer.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == taken == writer.written
    assert all(json.loads(line)["event"] == "ack" for line in lines)


def test_sink_drops_are_counted_in_stats_and_logged(capsys: pytest.CaptureFixture[str]) -> None:
    s = stack("10.0.0.1/24")
    sink = sink_of(s)
    assert sink is not None
    stream = _SlowStream()
    sink.writer = RecordWriter(stream, "jsonl", max_pending=16, interval=0.01, owns_stream=False)
    record = (0.5, 1, "ack", *([0] * (len(FIELDS) - 4)), (), 1)
    for _ in range(100):
        sink.emit(record)
    assert s.stats.drops[("probe", "writer_behind")] == sink.writer.dropped > 0
    stream.gate.set()
    sink.close()


def test_records_of_an_unprobed_stack_are_none_and_sinkless_probes_still_record() -> None:
    conn = sansio_established({"probe": {}})
    probe = conn.probe
    assert isinstance(probe, ConnProbe) and probe.sink is None
    events = [r["event"] for r in probe.dicts()]
    assert events[0] == "open" and "ack" in events and "send" in events
    assert probe_mod.record_dict(probe.records()[-1]) == probe.dicts()[-1]


def test_json_lines_are_the_records_as_json() -> None:
    conn = sansio_established({"probe": {}, "delayed_ack": {}})
    probe = conn.probe
    assert isinstance(probe, ConnProbe)
    conn.segment_received(TcpRepr(49500, 80, conn.rcv_nxt, conn.snd_max, ACK, 256, b"abc"), 0.5)
    conn.segments_to_send(0.5)
    for record, expected in zip(probe.records(), probe.dicts(), strict=True):
        assert json.loads(probe_mod.json_line(record)) == expected
    assert any(r["decisions"] for r in probe.dicts())
