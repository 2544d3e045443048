"""`tcpstack ss`: the filter language of iproute2's ss, connection IDs, the rows in `ss -ti`'s names and
units (from real connections on a simulated wire, explicit virtual time), the text line in Linux's order,
JSON lines, and the CLI's handling of bad filters."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from layers.tcp.state import TcpState
from tcpstack.cli import main
from tcpstack.control import connection_row, format_ss, json_lines, rate_text, tcp_info_text
from tcpstack.ssfilter import FilterError, parse_conn_id, parse_filter, tokens_of
from tcpstack.testing import StackPair
from tcpstack.testing.pair import make_stack, tcp_layer
from tcpstack.workers import number_connections

LISTEN = {"state": "LISTEN", "local": "*:80", "remote": "*:*", "recv_q": 0, "send_q": 128}


def _row(state: str, local: str, remote: str, **kw: Any) -> dict[str, Any]:
    return {"state": state, "local": local, "remote": remote, **kw}


ROWS = [
    LISTEN,
    _row("LISTEN", "*:22", "*:*"),
    _row("ESTABLISHED", "10.0.0.2:80", "10.0.0.1:4000", id=1),
    _row("ESTABLISHED", "10.0.0.2:80", "10.0.0.3:4001", id=2),
    _row("TIME-WAIT", "10.0.0.2:80", "10.0.0.1:4002", id=3),
    _row("SYN-SENT", "10.0.0.2:50000", "192.168.1.9:443", id=4),
    _row("ESTABLISHED", "[fd00::2]:80", "[fd00::1]:5000", id=5),
]


def _ids(args: list[str]) -> list[Any]:
    keep = parse_filter(args)
    return [r.get("id", r["local"]) for r in ROWS if keep(r)]


@pytest.mark.parametrize(
    ("args", "want"),
    [
        ([], ["*:80", "*:22", 1, 2, 3, 4, 5]),
        (["state", "established"], [1, 2, 5]),
        (["state", "listening"], ["*:80", "*:22"]),
        (["state", "listen"], ["*:80", "*:22"]),
        (["state", "established", "state", "time-wait"], [1, 2, 3, 5]),
        (["exclude", "established"], ["*:80", "*:22", 3, 4]),
        (["state", "connected"], [1, 2, 3, 4, 5]),
        (["state", "synchronized"], [1, 2, 3, 5]),
        (["state", "bucket"], [3]),
        (["state", "big"], ["*:80", "*:22", 1, 2, 4, 5]),
        (["state", "all", "exclude", "listening"], [1, 2, 3, 4, 5]),
        (["sport", "=", ":80"], ["*:80", 1, 2, 3, 5]),
        (["sport = :80"], ["*:80", 1, 2, 3, 5]),  # one argument, as ss takes it too
        (["sport", "eq", "80"], ["*:80", 1, 2, 3, 5]),
        (["sport", ":http"], ["*:80", 1, 2, 3, 5]),  # the operator may be left out; service names
        (["dport", "==", ":4001"], [2]),
        (["dport", "!=", ":4001"], ["*:80", "*:22", 1, 3, 4, 5]),
        (["sport", ">", ":1024"], [4]),
        (["sport", "gt", ":1024"], [4]),
        (["sport", "<", ":80"], ["*:22"]),
        (["sport", "lt", ":80"], ["*:22"]),
        (["sport", "<=", ":80"], ["*:80", "*:22", 1, 2, 3, 5]),
        (["sport", "le", ":80"], ["*:80", "*:22", 1, 2, 3, 5]),
        (["dport", ">=", ":4001"], [2, 3, 5]),
        (["dport", "ge", ":4001"], [2, 3, 5]),
        (["dport", "neq", ":4001"], ["*:80", "*:22", 1, 3, 4, 5]),
        (["dst", "10.0.0.1"], [1, 3]),
        (["dst", "=", "10.0.0.1"], [1, 3]),
        (["dst", "10.0.0.1:4002"], [3]),
        (["dst", "10.0.0.0/24"], [1, 2, 3]),
        (["dst", "!=", "10.0.0.0/24"], ["*:80", "*:22", 4, 5]),
        (["dst", "*:443"], [4]),
        (["dst", "[fd00::1]:5000"], [5]),
        (["dst", "fd00::/64"], [5]),
        (["src", "10.0.0.2"], [1, 2, 3, 4]),  # a listener's * is 0.0.0.0, as ss sees INADDR_ANY
        (["src", "0.0.0.0/0"], ["*:80", "*:22", 1, 2, 3, 4]),
        (["src", ":22"], ["*:22"]),
        (["state", "established", "dst", "10.0.0.1", "or", "dst", "10.0.0.3"], [1, 2]),
        (["dst", "10.0.0.1", "and", "sport", "=", ":80"], [1, 3]),
        (["dst", "10.0.0.1", "&&", "dport", "<", ":4002"], [1]),
        (["dst", "10.0.0.1", "dport", "<", ":4002"], [1]),  # juxtaposed conditions: and
        (["dst", "10.0.0.1", "||", "dst", "10.0.0.3"], [1, 2, 3]),
        (["not", "sport", "=", ":80"], ["*:22", 4]),
        (["!", "sport", "=", ":80"], ["*:22", 4]),
        (["(", "dport", "=", ":4000", "or", "dport", "=", ":4001", ")", "and", "dst", "10.0.0.3"], [2]),
        (["( dport = :4000 or dport = :4001 ) and not dst 10.0.0.3"], [1]),
        (["(dport = :4000 or dport = :4001)"], [1, 2]),  # parentheses split off the words they touch
        # ss's grammar: `and` and `or` group from the left with the same precedence.
        (["dst", "10.0.0.3", "or", "dst", "10.0.0.1", "and", "dport", "=", ":4002"], [3]),
        (["dst", "10.0.0.3", "or", "(", "dst", "10.0.0.1", "and", "dport", "=", ":4002", ")"], [2, 3]),
    ],
)
def test_filters_select_as_ss_does(args: list[str], want: list[Any]) -> None:
    assert _ids(args) == want


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["state"], "needs a state name"),
        (["state", "establishd"], "unknown state 'establishd'"),
        (["exclude", "nothing"], "unknown state"),
        (["sport"], "ends where a port"),
        (["sport", "="], "ends where a port"),
        (["sport", "=", ":99999"], "out of range"),
        (["sport", "=", ":no-such-service"], "bad port"),
        (["sport", "and"], "needs a port"),
        (["dst"], "ends where an address"),
        (["dst", "example.org"], "no host names"),
        (["dst", "10.0.0.300"], "bad address"),
        (["dst", "[fd00::1"], "without ']'"),
        (["dst", "or"], "needs an address"),
        (["(", "sport", "=", ":80"], "ends where ')'"),
        (["sport", "=", ":80", ")"], "')' without '('"),
        (["sport", "=", ":80", "or"], "ends where a condition"),
        (["cwnd", ">", "10"], "unexpected 'cwnd'"),
        (["sport", "=", ":80", "=", ":81"], "unexpected '='"),
        (["not"], "ends where a condition"),
        (["autobound"], "unexpected 'autobound'"),
        (["dport", "!=", ":4001", "and", "state", "established"], "unexpected 'state'"),  # states lead the filter
    ],
)
def test_bad_filters_say_why(args: list[str], why: str) -> None:
    with pytest.raises(FilterError, match=re.escape(why)):
        parse_filter(args)


def test_tokens_split_at_blanks_and_parentheses() -> None:
    words = ["(", "sport", "=", ":80", "or", "dport", "=", ":80", ")"]
    assert tokens_of(["(sport = :80", "or", "dport = :80)"]) == words
    assert tokens_of(["((a))"]) == ["(", "(", "a", ")", ")"]


def test_connection_ids() -> None:
    """A number, or LOCAL-REMOTE with IPv6 in brackets; anything else says why."""
    assert [r.get("id") for r in ROWS if parse_conn_id("2").matches(r)] == [2]
    assert [r.get("id") for r in ROWS if parse_conn_id("10.0.0.2:80-10.0.0.1:4002").matches(r)] == [3]
    assert [r.get("id") for r in ROWS if parse_conn_id("[fd00::2]:80-[fd00:0::1]:5000").matches(r)] == [5]
    assert not any(parse_conn_id("10.0.0.2:80-10.0.0.1:9").matches(r) for r in ROWS)
    for bad, why in [
        ("0", "numbers start at 1"),
        ("abc", "want a number or LOCAL-REMOTE"),
        ("10.0.0.2:80", "want a number or LOCAL-REMOTE"),
        ("10.0.0.2-10.0.0.1:4000", "'10.0.0.2' is not ADDRESS:PORT"),
        ("10.0.0.2:80-10.0.0.1:0", "needs a port"),
        ("host:80-10.0.0.1:4000", "not ADDRESS:PORT"),
        ("fd00::2:80-10.0.0.1:4000", "in brackets"),
    ]:
        with pytest.raises(FilterError, match=re.escape(why)):
            parse_conn_id(bad)


# ------------------------------------------------------------------------------ rows of real connections

FEATURES = {"window_scaling": {}, "timestamps": {}, "sack": {}, "delayed_ack": {"timeout": 0.04}}


def _bulk(pair: StackPair, size: int, until: float) -> Any:
    conn = pair.open()
    conn.send(bytes(size))
    pair.run(until=until)
    return conn


def test_rows_use_ss_names_and_units() -> None:
    """A 2 MB transfer over a 20 ms wire: cwnd in segments (the bytes over the MSS), rtt/rto/ato in ms, the
    byte counts as Linux keeps them (sequence space: the SYN counts), wscale mirrored between the ends, mss
    and advmss as the kernel shows them with timestamps (1448), the times since the last send/receive/ACK
    in ms from the snapshot's clock, and our id, features and phase."""
    pair = StackPair(delay=0.01, features=FEATURES)
    conn = pair.open()
    conn.send(bytes(2_000_000))
    assert pair.run_for(60.0, condition=lambda: conn.client_conn.bytes_sent == 2_000_000)  # all acknowledged
    done = pair.now
    pair.run_for(0.1)  # nothing left on the wire (delayed ACKs included)
    client, server = conn.client_conn, conn.server_conn
    now = done + 0.5
    c, s = connection_row(client, now), connection_row(server, now)
    assert c["state"] == "ESTABLISHED" and c["local"] == "10.0.0.1:" + str(client.local[1])
    assert c["remote"] == "10.0.0.2:80" and s["local"] == "10.0.0.2:80"
    assert c["mss"] == 1448 == s["mss"] and c["advmss"] == 1448  # 1460 less the timestamp option
    assert c["cwnd"] == client.cc.cwnd // 1448 == c["cwnd_bytes"] // 1448 and 10 < c["cwnd"] < 2000
    assert c["snd_wscale"] == s["rcv_wscale"] and c["rcv_wscale"] == s["snd_wscale"] and c["rcv_wscale"] is not None
    assert c["rtt"] is not None and 20.0 <= c["rtt"] < 40.0 and c["rttvar"] is not None
    assert c["rto"] == round(client.rtt.current() * 1e6) / 1e3 and c["rto"] >= 200
    assert c["minrtt"] is not None and 19.0 <= c["minrtt"] <= c["rtt"]  # (timestamps: 1 ms ticks)
    assert s["ato"] == 40.0 and c["ato"] == 40.0
    assert c["bytes_acked"] == 2_000_000 + 1  # the SYN counts, as in Linux
    assert c["bytes_sent"] == 2_000_000 + c["bytes_retrans"] and c["bytes_retrans"] == 0
    assert s["bytes_received"] == 2_000_000 and s["bytes_acked"] == 1  # the server sent no data, only its SYN
    assert c["segs_out"] >= 2_000_000 // 1448 and s["segs_in"] == c["segs_out"]  # nothing lost on this wire
    assert c["unacked"] == 0 and c["notsent"] == 0 and c["retrans"] == 0 == c["retrans_total"]
    assert 500 <= c["lastsnd"] <= 500 + 20 and 500 <= s["lastrcv"] <= 520 and c["lastack"] == 500
    assert c["send"] == pytest.approx(c["cwnd"] * 1448 * 8 / (client.rtt.srtt or 1))
    assert c["delivery_rate"] is not None and c["delivery_rate"] > 0
    assert c["id"] == client.number >= 1 and s["id"] == server.number >= 1
    assert c["features"] == sorted(client.features) and "sack" in c["features"]
    assert c["phase"] in ("slow_start", "congestion_avoidance")
    assert s["snd_wnd"] > 0 and c["rcv_wnd"] > 0 and c["snd_wnd"] == client.snd_wnd


def test_delivery_rate_follows_the_bottleneck() -> None:
    """A bulk transfer through a 10 Mbit/s wire with 20 ms round trips: once past slow start, the
    delivery rate is the bottleneck's rate less the headers (1448 of every 1500 bytes), within 10 %,
    and not app-limited; after the transfer an idle connection keeps its last sample."""
    bandwidth = 1_250_000.0  # bytes per second of frames
    pair = StackPair(delay=0.01, bandwidth=bandwidth, features=FEATURES)
    conn = pair.open()
    conn.send(bytes(4_000_000))
    pair.run_for(2.0)  # well into the transfer (it takes over 3 s)
    row = connection_row(conn.client_conn, pair.now)
    payload_rate = bandwidth * 1448 / 1500 * 8
    assert row["delivery_rate"] == pytest.approx(payload_rate, rel=0.1), (row["delivery_rate"], payload_rate)
    assert row["app_limited"] is False
    assert pair.run_for(30.0, condition=lambda: len(conn.server.received) == 4_000_000)
    assert connection_row(conn.client_conn, pair.now + 10)["delivery_rate"] == pytest.approx(payload_rate, rel=0.2)


def test_an_app_limited_sender_is_marked_and_its_rate_is_its_own() -> None:
    """10 kB every 100 ms over a fast wire: every sample is app-limited, and the rate is the burst's
    (bytes over about one round trip), far above the average 0.8 Mbit/s."""
    pair = StackPair(delay=0.01, features=FEATURES)
    conn = pair.open()
    for _ in range(20):
        conn.send(bytes(10_000))
        pair.run_for(0.1)
    row = connection_row(conn.client_conn, pair.now)
    assert row["app_limited"] is True
    assert row["delivery_rate"] is not None and row["delivery_rate"] > 2 * 10_000 * 8 / 0.1


@pytest.mark.parametrize(
    ("flags", "phase"),
    [
        ({"in_recovery": True}, "fast_recovery"),
        ({"_after_rto": True}, "rto_recovery"),
        ({}, "slow_start"),
    ],
)
def test_phase(flags: dict[str, bool], phase: str) -> None:
    pair = StackPair(delay=0.01, features=FEATURES)
    client = pair.open().client_conn
    for name, value in flags.items():
        setattr(client, name, value)
    assert connection_row(client, pair.now)["phase"] == phase
    client.in_recovery = client._after_rto = False
    client.cc.ssthresh = client.cc.cwnd
    assert client.phase == "congestion_avoidance"


def test_phase_css_from_hystart() -> None:
    """HyStart++'s Conservative Slow Start shows as css while it lasts, slow start again after it ends."""
    pair = StackPair(delay=0.01, features={**FEATURES, "hystart": {}})
    client = pair.open().client_conn
    hs = client.slow_start
    assert hs is not None and not hs.css_active and client.phase == "slow_start"
    hs.in_css = True
    assert hs.css_active and client.phase == "css"
    hs.done = True  # CSS over (its rounds ended, or a loss): no longer CSS, whatever in_css says
    assert client.phase == "slow_start"


def test_worker_numbers_interleave() -> None:
    """Worker 1 of 3 numbers its connections 2, 5, 8: no two workers of one `up --workers` share an ID."""
    stack = make_stack()
    number_connections(stack, "1/3")
    tcp = tcp_layer(stack)
    conns = [tcp.connect(bytes([10, 0, 0, 9]), 80 + k, now=0.0) for k in range(3)]
    assert [c.number for c in conns] == [2, 5, 8]


# ------------------------------------------------------------------------------ text and JSON


def test_the_info_line_is_in_linux_order() -> None:
    """Every field of a busy connection, in the order iproute2's tcp_stats_print prints them, then ours;
    rates as ss prints them without -n (three digits and a prefix)."""
    pair = StackPair(delay=0.01, features=FEATURES)
    conn = pair.open()
    conn.send(bytes(3_000_000))
    pair.run_for(0.3)
    row = connection_row(conn.client_conn, pair.now + 0.002)
    row.update(backoff=1, retrans=2, retrans_total=7, lost=1, sacked=3, dsack_dups=1, bytes_retrans=2896)
    row.update(app_limited=True, lastrcv=5)
    line = tcp_info_text(row)
    assert line.startswith("\t cubic wscale:")
    names = [re.split(r"[: ]", word)[0] for word in line.split()]
    linux = ["cubic", "wscale", "rto", "backoff", "rtt", "ato", "mss", "advmss", "cwnd", "bytes_sent"]
    linux += ["bytes_retrans", "bytes_acked", "bytes_received", "segs_out", "segs_in", "send"]
    linux += ["lastsnd", "lastrcv", "lastack", "delivery_rate", "app_limited", "unacked", "retrans", "lost"]
    linux += ["sacked", "dsack_dups", "notsent", "minrtt", "snd_wnd", "rcv_wnd", "id", "features", "phase"]
    shown = [n for n in names if not re.fullmatch(r"[\d.]+[kMGT]?bps", n)]
    assert shown == [n for n in linux if n in shown] and "ssthresh" not in shown  # ssthresh: infinite yet
    assert set(linux) - {"ssthresh"} <= set(shown) | {"bytes_received"}  # (the client received nothing)
    assert re.search(r" rtt:\d+(\.\d+)?/\d+(\.\d+)? ", line) and " retrans:2/7 " in line
    assert re.search(r" send \d+(\.\d+)?[kMG]bps ", line) and re.search(r" delivery_rate [\d.]+[kMG]bps", line)


def test_zero_fields_are_left_out_as_ss_does() -> None:
    row = {
        "congestion": "reno",
        "snd_wscale": None,
        "rcv_wscale": None,
        "rto": 1000.0,
        "backoff": 0,
        "rtt": None,
        "rttvar": None,
        "ato": None,
        "mss": 536,
        "advmss": 1460,
        "cwnd": 2,
        "ssthresh": 7,
        **dict.fromkeys(["bytes_sent", "bytes_retrans", "bytes_acked", "bytes_received", "segs_out", "segs_in"], 0),
        **dict.fromkeys(["lastsnd", "lastrcv", "lastack", "unacked", "retrans", "retrans_total", "lost"], 0),
        **dict.fromkeys(["sacked", "dsack_dups", "notsent", "snd_wnd", "rcv_wnd"], 0),
        "send": None,
        "delivery_rate": None,
        "app_limited": False,
        "minrtt": None,
        "id": 9,
        "features": [],
        "phase": "slow_start",
    }
    line = "\t reno rto:1000 mss:536 advmss:1460 cwnd:2 ssthresh:7 id:9 features:- phase:slow_start"
    assert tcp_info_text(row) == line


@pytest.mark.parametrize(
    ("bps", "text"),
    [
        (999.0, "999bps"),
        (1000.0, "1kbps"),
        (2_400_000_000.0, "2.4Gbps"),
        (132_996_556.0, "133Mbps"),
        (1.5e12, "1.5Tbps"),
    ],
)
def test_rates_print_as_ss_prints_them(bps: float, text: str) -> None:
    assert rate_text(bps) == text


def test_table_names_states_as_ss() -> None:
    rows = [LISTEN, {**ROWS[2], "recv_q": 0, "send_q": 5}]
    lines = format_ss(rows).splitlines()
    assert lines[0].split() == ["State", "Recv-Q", "Send-Q", "Local", "Address:Port", "Peer", "Address:Port"]
    assert lines[1].split() == ["LISTEN", "0", "128", "*:80", "*:*"]
    assert lines[2].split() == ["ESTAB", "0", "5", "10.0.0.2:80", "10.0.0.1:4000"]
    assert format_ss([{**LISTEN, "worker": 1}]).splitlines()[1].startswith("1  LISTEN")


def test_json_lines_are_self_contained() -> None:
    text = json_lines([LISTEN, ROWS[2]], 1700000000.12345)
    records = [json.loads(line) for line in text.splitlines()]
    assert [next(iter(r)) for r in records] == ["time", "time"] and records[0]["time"] == 1700000000.123
    assert records[1]["id"] == 1 and records[0]["state"] == "LISTEN"


@pytest.mark.parametrize(
    "args",
    [
        ["state", "nonsense"],
        ["sport", "=", "x!"],
        ["(", "dst", "10.0.0.1"],
        ["--conn", "10.0.0.2:80"],
        ["--conn", "0", "--watch", "1"],
    ],
)
def test_cli_rejects_bad_filters_before_asking(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """One error line, exit 1, no traceback, and no stack is asked (the socket does not exist)."""
    assert main(["ss", "--control", "/nonexistent.sock", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tcpstack: error: ss: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "no stack answers" not in err


def test_established_states_match_the_state_machine() -> None:
    """Every state name a row can carry is one the filter knows (TcpState's values)."""
    from tcpstack.ssfilter import ALL_STATES

    assert {s.value for s in TcpState} == ALL_STATES


def test_a_window_limited_sender_is_not_app_limited() -> None:
    """A 16 KiB receive buffer limits the flight, not the application (it wrote 2 MB): the samples are not
    app-limited, and the rate is a window per round trip (16384 bytes per 20 ms, 6.5 Mbit/s)."""
    pair = StackPair(delay=0.01, server_tcp={"recv_buffer": 16384}, features=FEATURES)
    conn = pair.open()
    conn.send(bytes(2_000_000))
    pair.run_for(1.0)
    row = connection_row(conn.client_conn, pair.now)
    assert row["app_limited"] is False
    assert row["delivery_rate"] == pytest.approx(16384 * 8 / 0.02, rel=0.15), row["delivery_rate"]
