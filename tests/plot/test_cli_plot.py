"""``tcpstack plot`` on the command line: the four outputs, connection IDs, errors."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from tcpstack.cli import main
from tcpstack.plot.command import MAX_CONNECTIONS, figures, parse_conn_id
from tcpstack.plot.probe import ProbeError, read_probe
from tests.plot import scenario
from tests.plot.scenario import Seg


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    sc = scenario.full()
    return {
        "pcap": scenario.write_capture(sc, d / "c.pcap"),
        "pcapng": scenario.write_capture(sc, d / "c.pcapng", "sll2", pcapng=True),
        "v6": scenario.write_capture(scenario.full(v6=True), d / "c6.pcap", "ether"),
        "jsonl": scenario.write_probe(sc, d / "p.jsonl"),
        "csv": scenario.write_probe(sc, d / "p.csv"),
    }


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plot", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_png_svg_and_html_are_written(files, tmp_path, capsys) -> None:
    code, _, err = _run(capsys, files["pcap"], "-o", tmp_path / "a.png")
    assert code == 0 and (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Several connections and no --conn: the one with most data, said on stderr.
    assert "3 connections; drawing connection 1 (10.0.0.2:80-10.0.0.1:40000), the one with most data" in err
    code, _, _ = _run(capsys, files["pcapng"], "--probe", files["jsonl"], "-o", tmp_path / "a.svg", "--conn", "2")
    assert code == 0
    svg = (tmp_path / "a.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "connection 2" in svg


@pytest.mark.parametrize("probe", [None, "csv"])
def test_the_html_page_is_self_contained_with_every_connection_with_data(files, tmp_path, capsys, probe) -> None:
    out = tmp_path / "page.html"
    args = [files["pcap"], "-o", out] + (["--probe", files[probe]] if probe else [])
    code, _, _ = _run(capsys, *args)
    assert code == 0
    page = out.read_text()
    assert "<script" not in page.lower()
    # Nothing loaded from elsewhere: the only src= are embedded images, no stylesheet links.
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in page and "url(" not in page
    # The two connections with data (the SYN/RST one has none), largest first, with their summaries.
    assert page.index("10.0.0.2:80 → 10.0.0.1:40000") < page.index("10.0.0.2:80 → 10.0.0.1:40001")
    assert "10.0.0.3" not in page
    for label in ("addresses", "duration", "RTT (capture)", "handshake", "retransmitted 2 segments (2000 bytes)"):
        assert label in page
    if probe:
        for label in ("phases (probe)", "slow start", "fast recovery", "decisions (probe)", "cwnd reduced x1"):
            assert label in page


def test_conn_by_number_and_by_pair_in_either_order_and_ipv6(files, tmp_path, capsys) -> None:
    for ident in ("3", "10.0.0.1:50000-10.0.0.3:22", "10.0.0.3:22-10.0.0.1:50000"):
        [d] = figures(str(files["pcap"]), conns=[ident]).drawn
        assert d.entry.conn.ends == (("10.0.0.1", 50000), ("10.0.0.3", 22)), ident
    [d] = figures(str(files["v6"]), conns=["[fd00::1]:40001-[fd00:0::2]:80"]).drawn
    assert d.entry.number == 2 and d.entry.pair == "[fd00::2]:80-[fd00::1]:40001"
    # With the probe, numbers are the probe's, and the capture-only connection has none: named by pair.
    r = figures(str(files["pcap"]), probe=str(files["jsonl"]), conns=["2", "10.0.0.3:22-10.0.0.1:50000"])
    assert [(d.entry.number, d.analysis.probe is not None) for d in r.drawn] == [(2, True), (None, False)]
    code, _, _ = _run(capsys, files["pcap"], "-o", tmp_path / "two.html", "--conn", "1", "--conn", "2")
    assert code == 0 and (tmp_path / "two.html").read_text().count("data:image/png") == 2


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--conn", "9"], 1, "has no connection 9 (its connections: 1, 2, 3)"),
        (["--conn", "10.0.0.9:1-10.0.0.1:2"], 1, "no connection between 10.0.0.9:1 and 10.0.0.1:2"),
        (["--conn", "fd00::1:80-x"], 2, "write an IPv6 address in brackets"),
        (["--conn", "10.0.0.1:80-x"], 2, "'x' is not ADDRESS:PORT"),
        (["--conn", "banana"], 2, "want a number or LOCAL-REMOTE"),
        (["--probe", "{jsonl}", "--conn", "7"], 1, "has no connection 7 (its connections: 1, 2)"),
        (["--conn", "1", "--conn", "2"], 2, "a .png file shows one connection"),
    ],
)
def test_bad_connection_ids_are_errors(files, tmp_path, capsys, args, code, message) -> None:
    args = [a.format(jsonl=files["jsonl"]) for a in args]
    got, out, err = _run(capsys, files["pcap"], "-o", tmp_path / "x.png", *args)
    assert (got, out) == (code, "")
    last = err.splitlines()[-1]  # after the note on the capture's skipped frames
    assert last.startswith(("tcpstack: error: --conn", "tcpstack: error: -o"))
    assert message in last and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_a_probe_connection_missing_from_the_capture_is_an_error(files, tmp_path, capsys) -> None:
    probe = tmp_path / "p.jsonl"
    lines = files["jsonl"].read_text().splitlines()
    extra = json.loads(lines[0]) | {"conn": 5, "local": "10.0.0.2:80", "remote": "10.0.0.1:999", "event": "open"}
    probe.write_text("\n".join([*lines, json.dumps(extra)]) + "\n")
    code, _, err = _run(capsys, files["pcap"], "--probe", probe, "-o", tmp_path / "x.png", "--conn", "5")
    assert code == 1
    assert "connection 5 of" in err and "(10.0.0.2:80-10.0.0.1:999) is not in" in err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("not a capture\n"), "not a pcap or pcapng file"),
        (lambda p: p.write_bytes(b""), "not a pcap or pcapng file (too short)"),
        (lambda p: p.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 147)), "link type 147"),
        (lambda p: None, "cannot open: No such file or directory"),
    ],
    ids=["text", "empty", "linktype", "missing"],
)
def test_a_bad_capture_is_one_error_line(tmp_path, capsys, make, message) -> None:
    path = tmp_path / "bad.pcap"
    make(path)
    code, out, err = _run(capsys, path, "-o", tmp_path / "x.html")
    assert (code, out) == (1, "")
    assert err == f"tcpstack: error: {path}: {message}\n" or (
        err.startswith(f"tcpstack: error: {path}: ") and message in err
    )
    assert "\n" not in err.rstrip("\n")


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ("hello\n", "p.jsonl", "not a probe file: line 1: not JSON"),
        ('{"t": 1}\n', "p.jsonl", "not a probe file: line 1: bad t or conn"),
        ("a,b,c\n1,2,3\n", "p.csv", "the CSV header has no t, conn and event columns"),
        ("", "p.jsonl", "not a probe file: no records"),
        (b"\xff\xfe\x00".decode("latin-1"), "p.jsonl", "not a probe file"),
    ],
)
def test_a_bad_probe_file_is_one_error_line(files, tmp_path, capsys, content, name, message) -> None:
    probe = tmp_path / name
    probe.write_text(content, encoding="latin-1")
    code, _, err = _run(capsys, files["pcap"], "--probe", probe, "-o", tmp_path / "x.png")
    assert code == 1 and message in err and err.count("\n") == 1


def test_bad_probe_records_after_the_first_are_counted(files, tmp_path, capsys) -> None:
    probe = tmp_path / "p.jsonl"
    text = files["jsonl"].read_text()
    probe.write_text(text + '{"t": 5, "conn": 1, "event": "wobble"}\n{"t": 5, "conn": 1, "eve')  # a cut last line
    pf = read_probe(probe)
    assert dict(pf.skipped) == {"unknown event": 1, "not JSON": 1}
    code, _, err = _run(capsys, files["pcap"], "--probe", probe, "-o", tmp_path / "x.png")
    assert code == 0 and "skipped 2 bad records (unknown event 1, not JSON 1)" in err
    with pytest.raises(ProbeError):
        read_probe(tmp_path / "none.jsonl")


def test_output_names_are_checked_before_anything_is_read(tmp_path, capsys) -> None:
    for out, message in (
        (tmp_path / "x.pdf", "the name must end in .png, .svg or .html"),
        (tmp_path / "no" / "x.png", "does not exist"),
    ):
        code, _, err = _run(capsys, tmp_path / "missing.pcap", "-o", out)
        assert code == 2 and message in err


def test_the_page_is_capped_at_the_largest_connections(tmp_path, capsys, monkeypatch) -> None:
    assert MAX_CONNECTIONS == 20  # as docs/observability.md says; 4 here, to draw fewer figures
    monkeypatch.setattr("tcpstack.plot.command.MAX_CONNECTIONS", 4)
    cap = 4
    c, s = scenario.CLIENT, scenario.SERVER
    segs = []
    for k in range(cap + 3):
        cl, t = (c[0], 41000 + k), scenario.T0 + k
        segs += [
            Seg(t, cl, s, 10, 0, "S", syn_opts=True),
            Seg(t + 0.001, s, cl, 20, 11, "SA", syn_opts=True),
            Seg(t + 0.002, s, cl, 21, 11, "PA", length=100 + k),
            Seg(t + 0.003, cl, s, 11, 122 + k, "A"),
        ]
    path = scenario.write_capture(scenario.Scenario(segs, [], []), tmp_path / "many.pcap", noise=False)
    code, _, err = _run(capsys, path, "-o", tmp_path / "many.html")
    assert code == 0 and f"{cap + 3} connections; the page shows the {cap} with most data" in err
    page = (tmp_path / "many.html").read_text()
    assert page.count("data:image/png") == cap
    assert ":41002 " not in page and f":{41000 + cap + 2} " in page  # the smallest left out, the largest first
    assert page.index(f":{41000 + cap + 2} ") < page.index(f":{41000 + cap + 1} ")


def test_parse_conn_id() -> None:
    assert parse_conn_id("12") == 12
    assert parse_conn_id("[FD00::2]:80-10.0.0.1:4000") == (("fd00::2", 80), ("10.0.0.1", 4000))
    for bad in ("1-2-3", "10.0.0.1:99999-10.0.0.2:1", "10.0.0.300:1-10.0.0.2:1", ""):
        with pytest.raises(ValueError):
            parse_conn_id(bad)


def test_odd_but_valid_captures_draw(tmp_path, capsys) -> None:
    """Frames out of time order (merged captures, a clock step), a connection of one frame, no
    data at all: graphs all the same, no error."""
    c, s = scenario.CLIENT, scenario.SERVER
    t = scenario.T0
    segs = [
        Seg(t, c, s, 10, 0, "S", syn_opts=True),
        Seg(t + 0.001, s, c, 20, 11, "SA", syn_opts=True),
        Seg(t + 0.002, s, c, 21, 11, "PA", length=500),
        Seg(t - 5.0, c, s, 11, 521, "A"),  # stamped five seconds before the SYN
        Seg(t + 0.003, (c[0], 5), s, 1, 0, "S"),  # a connection of one frame
    ]
    path = scenario.write_capture(scenario.Scenario(segs, [], []), tmp_path / "odd.pcap", noise=False, sort=False)
    for conn, out in (("1", "a.png"), ("2", "b.svg")):
        code, _, err = _run(capsys, path, "--conn", conn, "-o", tmp_path / out)
        assert code == 0, err
    [d] = figures(str(path), conns=["1"]).drawn
    assert d.entry.conn.ends[0] == c  # the SYN, first in the file, though not in time
    assert d.analysis.t0 == pytest.approx(t - 5.0) and d.analysis.duration == pytest.approx(5.002)
    assert list(d.analysis.ack_x) == pytest.approx([0.0]) and list(d.analysis.seg_x) == pytest.approx([5.002])
