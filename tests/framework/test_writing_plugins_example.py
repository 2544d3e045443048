"""The example plugin of docs/writing-plugins.md works as the guide says."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.packet import raw

from tcpstack.config import build_stack, config_from_dict
from tcpstack.plugins import PluginHost

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-plugins.md"


def _example_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    text = DOC.read_text()
    code = re.search(r"```python\n(# mytap\.py.*?)```", text, re.S)
    assert code is not None, "the five-line plugin example is missing from the guide"
    mod = types.ModuleType("mytap")
    monkeypatch.setitem(sys.modules, "mytap", mod)  # dataclasses look their module up
    exec(compile(code.group(1), str(DOC), "exec"), mod.__dict__)
    return mod


def test_guide_plugin_counts_datagrams_by_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guide's tap plugin registers a layer type that configuration can place and that counts."""
    host = PluginHost(entry_points=False, extra=[_example_module(monkeypatch)])
    config = config_from_dict(
        {"layers": [{"type": "memory"}, {"type": "tap", "label": "seen"}, {"type": "ipv4"}]}, host=host
    )
    stack = build_stack(config)
    stack.receive_frame(raw(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()), now=0.0)
    assert stack.stats.events["seen.proto1"] == 1
    assert len(stack.frames_to_send(now=0.0)) == 1  # the echo was still answered


def test_guide_feature_plugin_delays_acks_on_one_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guide's slowack feature installs its AckPolicy only on the connection that enables it."""
    text = DOC.read_text()
    code = re.search(r"```python\n(# slowack\.py.*?)```", text, re.S)
    assert code is not None, "the per-connection feature example is missing from the guide"
    mod = types.ModuleType("slowack")
    monkeypatch.setitem(sys.modules, "slowack", mod)
    exec(compile(code.group(1), str(DOC), "exec"), mod.__dict__)
    from layers.tcp.policy import TcpOptions

    host = PluginHost(entry_points=False, extra=[mod])
    config = config_from_dict(
        {"layers": [{"type": "memory"}, {"type": "ipv4"}, {"type": "tcp", "default_features": False}]}, host=host
    )
    tcp = build_stack(config).layer("tcp")
    slow = tcp.connect(bytes([10, 0, 0, 1]), 80, now=0.0, options=TcpOptions(features={"slowack": {"delay": 0.05}}))  # type: ignore[attr-defined]
    plain = tcp.connect(bytes([10, 0, 0, 1]), 81, now=0.0)  # type: ignore[attr-defined]
    assert type(slow.ack_policy).__name__ == "SlowAck" and slow.ack_policy.on_data(100, 1.0) == 1.05
    assert type(plain.ack_policy).__name__ == "AckPolicy"


def test_guide_extension_acks_psh_segments_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guide's pshack extension uses the typed connection view: with delayed ACKs on, a data segment
    carrying PSH is acknowledged at once, one without waits for the delayed-ACK timer."""
    from layers.tcp.wire import ACK, PSH
    from tcpstack.testing import ConnectionBuilder, VirtualClock

    text = DOC.read_text()
    code = re.search(r"```python\n(# pshack\.py.*?)```", text, re.S)
    assert code is not None, "the extension example is missing from the guide"
    mod = types.ModuleType("pshack")
    monkeypatch.setitem(sys.modules, "pshack", mod)
    exec(compile(code.group(1), str(DOC), "exec"), mod.__dict__)
    build = ConnectionBuilder(PluginHost(entry_points=False, extra=[mod]), VirtualClock())
    features = {"delayed_ack": {"timeout": 0.2}}
    for pshack, flags, acked_at_once in ((True, ACK | PSH, True), (True, ACK, False), (False, ACK | PSH, False)):
        conn = build("ESTABLISHED", {**features, "pshack": {}} if pshack else features, recv_buffer=8192)
        build.drain(conn)
        build.send(conn, build.segment(conn, b"hello", flags=flags))
        assert bool(build.recv(conn)) is acked_at_once, (pshack, flags)


def test_the_algorithm_example_of_plugins_md_runs_with_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/plugins.md: the `slow` algorithm example registers, takes its settings from the tcp layer's
    `congestion` table and keeps the base class's slow start."""
    from tcpstack.testing import stack_config, tcp_layer

    text = (DOC.parent / "plugins.md").read_text()
    code = re.search(
        r"```python\n(from dataclasses import dataclass, field\n\nfrom framework.plugins.*?)```", text, re.S
    )
    assert code is not None, "the algorithm example is missing from docs/plugins.md"
    mod = types.ModuleType("slowplug")
    monkeypatch.setitem(sys.modules, "slowplug", mod)
    exec(compile(code.group(1), "docs/plugins.md", "exec"), mod.__dict__)
    host = PluginHost(entry_points=False, extra=[mod])
    cfg = stack_config(congestion_control="slow", congestion={"slow": {"divisor": 8}})
    conn = tcp_layer(build_stack(config_from_dict(cfg, host=host))).connect(bytes([10, 0, 0, 2]), 80, now=0.0)
    cc = conn.cc
    assert type(cc).__name__ == "Slow" and cc.divisor == 8  # type: ignore[attr-defined]
    before = cc.cwnd
    cc.on_ack(1000, 0, 0.0)  # below ssthresh: the base class's slow start
    assert cc.cwnd == before + 1000
