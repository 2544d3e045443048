"""`tcpstack up --workers`: port partition, per-worker configurations, shared secrets and the
parent's merged control socket, without a TUN device (tests/integration/test_workers.py has the wire)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from framework.errors import ConfigError
from tcpstack.control import ControlServer, format_ss, format_stats, request
from tcpstack.embed import load_config_data, prepare_stack, up_config
from tcpstack.io.memory import MemoryLink
from tcpstack.streams import find_tcp_layer
from tcpstack.workers import (
    EPHEMERAL,
    Supervisor,
    WorkersControl,
    merge_stats,
    parse_worker_of,
    port_slices,
    restarted_config,
    shared_secrets,
    worker_config,
    worker_path,
)
from tests.helpers import ipv4_stack


@pytest.mark.parametrize("count", [1, 2, 3, 7, 64])
def test_port_slices_are_disjoint_and_cover_the_range(count: int) -> None:
    slices = port_slices(count)
    assert len(slices) == count
    ports = [p for low, high in slices for p in range(low, high + 1)]
    assert ports == list(range(EPHEMERAL[0], EPHEMERAL[1] + 1))  # each port once, in order
    assert all(high - low + 1 >= (EPHEMERAL[1] - EPHEMERAL[0] + 1) // count for low, high in slices)


def test_port_slices_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        port_slices(0)
    with pytest.raises(ValueError, match="cannot be shared"):
        port_slices(5, 1024, 1027)


def test_worker_paths_and_specs() -> None:
    assert worker_path("/tmp/cap.pcap", 0) == "/tmp/cap.w0.pcap"
    assert worker_path("cap", 3) == "cap.w3"
    assert worker_path("/run/tcpstack/tun0.sock", 1) == "/run/tcpstack/tun0.w1.sock"
    assert parse_worker_of("1/2") == (1, 2)
    for bad in ("2/2", "x/2", "-1/2", "1"):
        with pytest.raises(ValueError):
            parse_worker_of(bad)


def _data(**overrides: object) -> dict[str, object]:
    return up_config(load_config_data(None), address="10.0.0.2/24", **overrides)  # type: ignore[arg-type]


def test_worker_configs_share_secrets_and_split_ports() -> None:
    data = _data(pcap="/tmp/x.pcap", create=True)
    for layer in data["layers"]:  # type: ignore[attr-defined]
        if layer["type"] == "tun":
            layer["kernel_address"] = "10.0.0.1/24"
    keys = shared_secrets(data)
    assert set(keys) == {"isn_secret", "syncookie_secret"} and keys["isn_secret"] != keys["syncookie_secret"]
    configs = [worker_config(data, k, 2, keys) for k in range(2)]
    for k, cfg in enumerate(configs):
        layers = {x["type"]: x for x in cfg["layers"]}
        assert layers["tun"]["create"] is False and "kernel_address" not in layers["tun"]  # the parent's job
        assert layers["pcap"]["path"] == f"/tmp/x.w{k}.pcap"
        assert (layers["tcp"]["ephemeral_low"], layers["tcp"]["ephemeral_high"]) == port_slices(2)[k]
        assert layers["tcp"]["isn_secret"] == keys["isn_secret"]
        assert layers["tcp"]["syncookie_secret"] == keys["syncookie_secret"]
    assert {x["type"]: x for x in data["layers"]}["tun"]["create"] is True  # type: ignore[attr-defined]
    again = {x["type"]: x for x in restarted_config(configs[1], 2)["layers"]}
    assert again["pcap"]["path"] == "/tmp/x.w1.r2.pcap"  # a restart keeps the dead worker's capture
    assert again["tcp"] == {x["type"]: x for x in configs[1]["layers"]}["tcp"]


def test_a_configured_secret_is_kept() -> None:
    data = _data()
    tcp = next(x for x in data["layers"] if x["type"] == "tcp")  # type: ignore[attr-defined]
    tcp["syncookie_secret"] = "ab" * 16
    assert shared_secrets(data)["syncookie_secret"] == "ab" * 16


def _worker_stacks(count: int) -> list[object]:
    data = _data()
    keys = shared_secrets(data)
    stacks = []
    for k in range(count):
        link, _ = MemoryLink.pair()
        stacks.append(prepare_stack(link=link, config=worker_config(data, k, count, keys)))
    return stacks


def test_active_opens_of_two_workers_never_share_a_port() -> None:
    """Each worker's stack picks the local ports of its connections from its own slice."""
    prepared = _worker_stacks(2)
    used: list[set[int]] = []
    for k, p in enumerate(prepared):
        tcp = find_tcp_layer(p.stack)  # type: ignore[attr-defined]
        assert tcp is not None
        ports = {tcp.connect(socket.inet_aton("10.0.0.1"), 80, now=0.0).local[1] for _ in range(500)}
        low, high = port_slices(2)[k]
        assert len(ports) == 500 and all(low <= port <= high for port in ports)
        used.append(ports)
    assert not used[0] & used[1]


def test_syn_cookies_and_isns_agree_across_workers() -> None:
    """A cookie one worker makes, any other accepts; the same 4-tuple gets the same ISN in each."""
    a, b = (find_tcp_layer(p.stack) for p in _worker_stacks(2))  # type: ignore[attr-defined]
    assert a is not None and b is not None
    material = socket.inet_aton("10.0.0.1") + (40000).to_bytes(2, "big") + socket.inet_aton("10.0.0.2") + b"\x00\x50"
    cookie = a._cookies.make(material, 12345, 2, 100.0)
    assert b._cookies.check(material, 12345, cookie, 110.0) == 2
    local, remote = (socket.inet_aton("10.0.0.2"), 80), (socket.inet_aton("10.0.0.1"), 40000)
    assert a.isn(local, remote, 5.0) == b.isn(local, remote, 5.0)


def test_ephemeral_range_is_validated() -> None:
    data = _data()
    tcp = next(x for x in data["layers"] if x["type"] == "tcp")  # type: ignore[attr-defined]
    tcp["ephemeral_low"], tcp["ephemeral_high"] = 60000, 50000
    link, _ = MemoryLink.pair()
    with pytest.raises(ConfigError, match="ephemeral_low: 60000 is above ephemeral_high"):
        prepare_stack(link=link, config=data)


def test_the_parent_merges_its_workers_replies(tmp_path: Path) -> None:
    """ss rows and stats counter sets marked by worker, counters added up, a worker that does not
    answer shown as such; restarts and lost connections among the events."""
    stacks = [ipv4_stack()[0] for _ in range(2)]
    stacks[0].stats.count("worker.connections", 3)
    stacks[1].stats.count("worker.connections", 4)
    stacks[1].stats.drop("ipv4", "bad_checksum")
    paths = [tmp_path / f"w{k}.sock" for k in range(3)]  # worker 2 never answers
    sup = Supervisor([], [{}, {}, {}], paths)
    sup.restarts, sup.connections_lost = 2, 5
    parent = tmp_path / "ctl.sock"

    async def main() -> tuple[dict[str, object], dict[str, object]]:
        servers = [ControlServer(s, p) for s, p in zip(stacks, paths, strict=False)]
        control = WorkersControl(sup, parent)
        for server in [*servers, control]:
            await server.start()
        loop = asyncio.get_running_loop()
        try:
            ss = await loop.run_in_executor(None, request, parent, "ss")
            stats = await loop.run_in_executor(None, request, parent, "stats")
        finally:
            for server in [*servers, control]:
                await server.stop()
        return ss, stats

    ss, stats = asyncio.run(main())
    assert ss == {"connections": [{"worker": 2, "state": "NO-ANSWER", "local": "-", "remote": "-"}]}
    assert stats["events"] == {  # type: ignore[comparison-overlap]
        "worker.connections": 7,
        "workers.restarts": 2,
        "workers.connections_lost": 5,
    }
    assert stats["drops"] == {"ipv4.bad_checksum": 1}
    workers = stats["workers"]
    assert [w["worker"] for w in workers] == [0, 1, 2] and "error" in workers[2]  # type: ignore[attr-defined]
    text = format_stats(stats)  # type: ignore[arg-type]
    assert "  w1 pid None: frames_in 0 connections 0 opened 4 drops 1" in text
    assert "  w2 pid None: no answer from" in text
    table = format_ss([{"worker": 1, "state": "LISTEN", "local": "*:7", "remote": "*:*"}]).splitlines()
    assert table[0].startswith("W  State") and table[1].startswith("1  LISTEN")


def test_merge_stats_without_a_supervisor() -> None:
    merged = merge_stats([{"frames_in": 2, "connections": 1, "drops": {}, "events": {"a": 1}}, {"error": "x"}])
    assert merged["frames_in"] == 2 and merged["events"] == {"a": 1} and merged["workers"][1]["error"] == "x"


FLAKY_WORKER = """
import json, socket, sys, time
srv = socket.socket(socket.AF_UNIX)
srv.bind(sys.argv[1]); srv.listen()
srv.settimeout(0.5)
try:
    c, _ = srv.accept()  # the parent's first question: answer it, then die soon after
    c.recv(100); c.sendall(json.dumps({"frames_in": 0, "connections": 2}).encode() + b"\\n"); c.close()
except OSError:
    pass
time.sleep(0.2)
sys.exit(3)
"""


class _FlakySupervisor(Supervisor):
    def command(self, worker: object) -> list[str]:
        import sys

        return [sys.executable, "-c", FLAKY_WORKER, str(worker.control)]  # type: ignore[attr-defined]


def test_a_worker_that_keeps_dying_at_once_is_restarted_then_given_up(tmp_path: Path) -> None:
    """Each death is counted and followed by a restart; five quick deaths in a row stop it all."""

    async def main() -> tuple[str | None, int]:
        sup = _FlakySupervisor([], [{}], [tmp_path / "w0.sock"])
        await sup.start(sup.workers[0])
        await asyncio.wait_for(sup.done.wait(), 60)
        await sup.stop()
        return sup.failed, sup.restarts

    failed, restarts = asyncio.run(main())
    assert failed == "worker 0 died 5 times within 2 s of starting"
    assert restarts == 5


@pytest.mark.parametrize("count", ["0", "65", "-1"])
def test_a_worker_count_out_of_range_is_one_line(count: str, capsys: pytest.CaptureFixture[str]) -> None:
    from tcpstack.cli import main

    assert main(["up", "--workers", count, "--tun", "tcps-none0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"tcpstack: error: --workers must be 1-64, not {count}"]
