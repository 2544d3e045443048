"""Reading probe files for ``tcpstack plot`` (tcpstack/plot/probe.py): CSV and JSON lines give the
same records; bad records are counted, a file that is not a probe file is one ProbeError."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpstack.plot.probe import NUMBER_FIELDS, ProbeError, read_probe
from tests.plot import scenario


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("probe")
    sc = scenario.full()
    return {"jsonl": scenario.write_probe(sc, d / "p.jsonl"), "csv": scenario.write_probe(sc, d / "p.csv")}


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_csv_and_json_lines_give_the_same_records(probes) -> None:
    pj, pc = read_probe(probes["jsonl"]), read_probe(probes["csv"])
    assert pj.opens == pc.opens and pj.counts == pc.counts and not pj.skipped and not pc.skipped
    assert sorted(pj.opens) == [1, 2]
    assert (pj.opens[1].local, pj.opens[1].remote, pj.opens[1].iss) == ("10.0.0.2:80", "10.0.0.1:40000", scenario.ISN_S)
    sj, sc = pj.load({1, 2}), pc.load({1, 2})
    for n in (1, 2):
        a, b = sj[n], sc[n]
        assert list(a.t) == list(b.t) and list(a.event) == list(b.event) and list(a.phase) == list(b.phase)
        for name in NUMBER_FIELDS:
            assert all(_same(x, y) for x, y in zip(a.column(name), b.column(name), strict=True)), name
        assert a.decisions == b.decisions
    assert len(sj[1]) == pj.counts[1] > 100
    # Absent values are NaN: ssthresh before the first loss, srtt before the first sample.
    assert math.isnan(sj[1].column("ssthresh")[0]) and not math.isnan(sj[1].column("ssthresh")[-1])
    assert any(d for _, d in sj[1].decisions)


def test_values_of_the_wrong_type_make_a_record_bad(tmp_path) -> None:
    good = {"t": 1.0, "conn": 1, "event": "open", "local": "10.0.0.2:80", "remote": "10.0.0.1:1", "seq": 5}
    lines = [
        good,
        {**good, "event": "ack", "cwnd": True},
        {**good, "event": "ack", "cwnd": "many"},
        {**good, "event": "ack", "conn": 1.5},
        {**good, "event": "ack", "decisions": "not a list"},
        {**good, "event": "ack", "phase": 3},
        {**good, "event": "ack", "cwnd": 1e400},
        [1, 2],
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines).replace("Infinity", "1e400") + "\n")
    pf = read_probe(path)
    assert pf.counts == {1: 1}
    assert sum(pf.skipped.values()) == 7


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), kind=st.sampled_from(["jsonl", "csv"]))
def test_mangled_probe_files_never_raise_anything_but_a_probe_error(probes, tmp_path, data, kind) -> None:
    text = probes[kind].read_bytes()[:3000]
    blob = bytearray(text)
    for _ in range(data.draw(st.integers(0, 20))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    blob = blob[: data.draw(st.integers(0, len(blob)))]
    path = tmp_path / f"m.{kind}"
    path.write_bytes(bytes(blob))
    try:
        pf = read_probe(path)
    except ProbeError:
        return
    pf.load(set(pf.counts))
