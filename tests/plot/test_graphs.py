"""The graphs draw the connection's data: what each artist holds equals what tests/plot/oracle.py
derives on its own from the capture (read with scapy) and the probe file (read with json/csv).

The capture is the synthetic download of tests/plot/scenario.py (slow start, two segments lost
once and fast-retransmitted with SACK, recovery, congestion avoidance; the sequence numbers wrap
past 2**32), written as raw IP, Ethernet, Linux cooked v1 and v2, pcap and pcapng, IPv4 and IPv6.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from tcpstack.plot.command import figures
from tests.plot import oracle, scenario
from tests.plot.oracle import bars, close, line_points, stairs

VARIANTS = [
    ("raw", False, False),
    ("ether", False, False),
    ("sll", False, False),
    ("sll2", False, False),
    ("ether", True, False),
    ("raw", True, False),
    ("ether", False, True),
    ("sll2", True, True),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("plot")
    out: dict[str, Path] = {}
    for link, ng, v6 in VARIANTS:
        sc = scenario.full(v6=v6)
        name = f"{link}{'6' if v6 else ''}.{'pcapng' if ng else 'pcap'}"
        out[name] = scenario.write_capture(sc, d / name, link, pcapng=ng)
    sc = scenario.full()
    out["probe.jsonl"] = scenario.write_probe(sc, d / "probe.jsonl")
    out["probe.csv"] = scenario.write_probe(sc, d / "probe.csv")
    return out


def _name(link: str, ng: bool, v6: bool) -> str:
    return f"{link}{'6' if v6 else ''}.{'pcapng' if ng else 'pcap'}"


def _main_conn(v6: bool) -> tuple[tuple[str, int], tuple[str, int]]:
    return (scenario.SERVER6, scenario.CLIENT6) if v6 else (scenario.SERVER, scenario.CLIENT)


def _drawn(path: Path, probe: Path | None = None, conn: str = "1"):  # type: ignore[no-untyped-def]
    result = figures(str(path), probe=str(probe) if probe else None, conns=[conn])
    [d] = result.drawn
    return d


@pytest.mark.parametrize(("link", "ng", "v6"), VARIANTS, ids=[_name(*v) for v in VARIANTS])
def test_time_sequence_graph_is_the_captures_segments_acks_windows_and_sacks(files, link, ng, v6) -> None:
    path = files[_name(link, ng, v6)]
    server, client = _main_conn(v6)
    exp = oracle.expected(oracle.conversation(oracle.read_segments(path), server, client))
    assert exp.sender == server
    fig = _drawn(path).figure
    assert close(bars(fig, "tseq.segments"), exp.segments)
    assert close(bars(fig, "tseq.retransmissions"), exp.retransmissions)
    assert close(line_points(fig, "tseq.ack"), exp.acks)
    assert close(line_points(fig, "tseq.window"), exp.windows)
    assert close(bars(fig, "tseq.sack"), exp.sacks)
    # Not vacuous: the scenario has all of these, and its sequence numbers wrap past 2**32.
    assert len(exp.segments) == scenario.DATA_SEGMENTS and exp.sacks and exp.acks
    assert max(end for _, _, end in exp.segments) > (1 << 32) - scenario.ISN_S


@pytest.mark.parametrize(
    ("link", "ng", "v6"), VARIANTS[:2] + VARIANTS[-1:], ids=[_name(*v) for v in VARIANTS[:2] + VARIANTS[-1:]]
)
def test_retransmission_marks_are_the_captures_retransmissions(files, link, ng, v6) -> None:
    """Retransmissions: the data segments that repeat bytes sent before, found by the oracle in the
    scapy reading; the scenario retransmitted exactly the two dropped segments once."""
    path = files[_name(link, ng, v6)]
    server, client = _main_conn(v6)
    exp = oracle.expected(oracle.conversation(oracle.read_segments(path), server, client))
    marks = bars(_drawn(path).figure, "tseq.retransmissions")
    assert close(marks, exp.retransmissions)
    assert [lo for _, lo, _ in marks] == [i * scenario.MSS + 1 for i in scenario.DROP]


@pytest.mark.parametrize("name", ["raw.pcap", "sll26.pcapng"])
def test_throughput_is_the_captures_bytes_per_interval(files, name) -> None:
    path = files[name]
    server, client = _main_conn("6" in name)
    conv = oracle.conversation(oracle.read_segments(path), server, client)
    exp = oracle.expected(conv)
    fig = _drawn(path).figure
    good, edges = stairs(fig, "tput.goodput")
    sent, edges2 = stairs(fig, "tput.sent")
    assert edges == edges2
    step = edges[1] - edges[0]
    assert all(math.isclose(b - a, step, rel_tol=1e-9) for a, b in itertools.pairwise(edges))
    assert edges[0] == 0 and edges[-1] >= conv[-1].t - exp.t0
    for series, events in ((good, exp.acked_bytes), (sent, exp.sent_bytes)):
        per_bin = [0] * len(series)
        for x, n in events:
            per_bin[min(int(x / step), len(series) - 1)] += n
        assert [v * step * 1e6 / 8 for v in series] == pytest.approx(per_bin, abs=1e-6)
    total = scenario.DATA_SEGMENTS * scenario.MSS
    assert sum(good) * step * 1e6 / 8 == pytest.approx(total)  # every payload byte acknowledged once
    assert sum(sent) * step * 1e6 / 8 == pytest.approx(total + len(scenario.DROP) * scenario.MSS)


@pytest.mark.parametrize("name", ["ether.pcap", "ether6.pcap"])
def test_rtt_graph_without_probe_is_the_captures_samples_and_rfc6298(files, name) -> None:
    path = files[name]
    server, client = _main_conn("6" in name)
    exp = oracle.expected(oracle.conversation(oracle.read_segments(path), server, client))
    fig = _drawn(path).figure
    assert close(line_points(fig, "rtt.capture"), [(x, r * 1000) for x, r in exp.rtt])
    est = oracle.rfc6298([r for _, r in exp.rtt])
    assert close(line_points(fig, "rtt.srtt"), [(x, s * 1000) for (x, _), (s, _) in zip(exp.rtt, est, strict=True)])
    assert close(line_points(fig, "rtt.rto"), [(x, o * 1000) for (x, _), (_, o) in zip(exp.rtt, est, strict=True)])
    assert "RFC 6298 from the capture" in oracle.the(fig, "rtt.srtt").get_label()
    # Karn: the ACKs that cover the retransmitted segments give no sample.
    assert 30 <= len(exp.rtt) < scenario.DATA_SEGMENTS
    assert all(8 <= r * 1000 <= 12 for _, r in exp.rtt)  # the scenario's RTT is 10 ms


def test_without_probe_there_is_no_congestion_graph_and_flight_comes_from_the_capture(files) -> None:
    fig = _drawn(files["raw.pcap"]).figure
    gids = {a.get_gid() for ax in fig.axes for a in [*ax.lines, *ax.collections, *ax.patches]}
    assert not {g for g in gids if g and g.startswith("cwnd.")}
    assert len([ax for ax in fig.axes if ax.get_title(loc="left")]) == 3
    flight = line_points(fig, "tput.flight")
    assert flight and max(v for _, v in flight) > 10 * scenario.MSS and flight[-1][1] == 0


@pytest.mark.parametrize("probe", ["probe.jsonl", "probe.csv"])
def test_probe_series_are_the_probe_records(files, probe) -> None:
    path, pfile = files["raw.pcap"], files[probe]
    d = _drawn(path, pfile)
    fig, t0 = d.figure, d.analysis.t0
    records = oracle.probe_records(pfile, 1)
    assert len(records) > 100

    oracle.check_probe_figure(fig, records, t0, scenario.ISN_S)  # every probe series is the records'
    assert "probe" in oracle.the(fig, "rtt.srtt").get_label()
    # The scenario has every phase, decisions, and losses the probe marked.
    assert {name for _, _, name in oracle.phase_runs(records, t0)} == {
        "slow_start",
        "fast_recovery",
        "congestion_avoidance",
    }
    assert sum(len(r["decisions"]) for r in records) >= 6
    assert line_points(fig, "tseq.lost")


def test_probe_and_capture_agree_on_the_connection(files) -> None:
    """With the probe the capture's graphs are unchanged, and the probe's numbers name the
    connections its open records describe."""
    with_probe = figures(str(files["raw.pcap"]), probe=str(files["probe.jsonl"]), many=True)
    without = figures(str(files["raw.pcap"]), many=True)
    assert [(d.entry.number, d.entry.pair) for d in with_probe.drawn] == [
        (1, "10.0.0.2:80-10.0.0.1:40000"),
        (2, "10.0.0.2:80-10.0.0.1:40001"),
    ]
    assert [(d.entry.number, d.entry.pair) for d in without.drawn] == [
        (1, "10.0.0.2:80-10.0.0.1:40000"),
        (2, "10.0.0.2:80-10.0.0.1:40001"),
    ]
    for a, b in zip(with_probe.drawn, without.drawn, strict=True):
        for gid in ("tseq.segments", "tseq.retransmissions", "tseq.sack"):
            assert bars(a.figure, gid) == bars(b.figure, gid)
        assert line_points(a.figure, "rtt.capture") == line_points(b.figure, "rtt.capture")
        assert len([ax for ax in a.figure.axes if ax.get_title(loc="left")]) == 4
