"""``tcpstack.plugin``, the one stable import of plugin authors: every name it promises imports,
the example plugin package needs nothing else of tcpstack, and plugins/ keeps to the typed view."""

from __future__ import annotations

import ast
import importlib
import sys
import types
from pathlib import Path

import pytest

import tcpstack.plugin as api
from layers.tcp.connection import TcpConnection
from layers.tcp.policy import AckPolicy, Extension, TcpSetup
from layers.tcp.state import TcpState
from layers.tcp.wire import ACK, RST, TcpRepr
from tcpstack.plugins import PluginHost
from tcpstack.testing import ConnectionBuilder

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tcpstack-example-quickack" / "src" / "tcpstack_example_quickack"
OWN_PACKAGES = {"framework", "layers", "plugins", "tcpstack"}


def test_everything_in_all_imports() -> None:
    fresh = importlib.reload(api)
    assert fresh.__all__, "tcpstack.plugin exports nothing"
    assert len(set(fresh.__all__)) == len(fresh.__all__), "a name is listed twice"
    missing = [name for name in fresh.__all__ if not hasattr(fresh, name)]
    assert missing == []
    namespace: dict[str, object] = {}
    exec("from tcpstack.plugin import *", namespace)
    assert set(fresh.__all__) <= set(namespace)


def test_it_offers_what_a_plugin_needs() -> None:
    """The hook marker, the setup, the slots' base classes and Protocols, the view, states and flags."""
    needed = {
        "hookimpl",
        "Registry",
        "TcpSetup",
        "ConnectionView",
        "AckPolicy",
        "SendPolicy",
        "Extension",
        "CongestionControl",
        "AckPolicyProtocol",
        "SendPolicyProtocol",
        "ExtensionProtocol",
        "CongestionControlProtocol",
        "TcpState",
        "TcpRepr",
        "SYN",
        "ACK",
        "RST",
        "FIN",
        "decision_log",
    }
    assert needed <= set(api.__all__), sorted(needed - set(api.__all__))
    assert api.AckPolicy is AckPolicy and api.TcpSetup is TcpSetup and api.TcpState is TcpState


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 or node.module is None or node.module.startswith("tcpstack_example_quickack")
            names.append(node.module or "")
    return names


def test_the_example_plugin_imports_only_tcpstack_plugin() -> None:
    sources = sorted(EXAMPLE.glob("*.py"))
    assert EXAMPLE / "plugin.py" in sources
    used = {name for path in sources for name in _imports(path)}
    ours = {name for name in used if name.split(".")[0] in OWN_PACKAGES}
    assert ours == {"tcpstack.plugin"}
    others = {name for name in used - ours if name.split(".")[0] not in sys.stdlib_module_names}
    assert others <= {"__future__"}, others


def test_plugins_never_touch_private_connection_members() -> None:
    """Issue 10: plugins reach a connection through its typed view only (ruff's SLF001 checks the same)."""
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "plugins").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "conn._" in line or "._ack_now" in line
    ]
    assert offenders == []


class _Probe(Extension):
    """Records what the view shows and uses its verbs."""

    name = "probe"

    def __init__(self) -> None:
        self.states: list[TcpState] = []

    def syn_options(self, conn: api.ConnectionView, seg: TcpRepr, now: float) -> None:
        self.states.append(conn.state)

    def on_peer_syn(self, conn: api.ConnectionView, syn: TcpRepr, now: float) -> None:
        self.states.append(conn.state)
        self.active = True


@pytest.mark.parametrize("passive", [True, False])
def test_extensions_see_the_handshake_states_as_the_enum(tcpstack_conn: ConnectionBuilder, passive: bool) -> None:
    probe = _Probe()

    @api.hookimpl
    def tcp_connection_setup(setup: TcpSetup) -> None:
        setup.extensions.append(probe)

    plugin = types.SimpleNamespace(tcp_connection_setup=tcp_connection_setup)
    builder = ConnectionBuilder(PluginHost(entry_points=False, extra=[plugin]), tcpstack_conn.clock)
    builder("ESTABLISHED", {}, active=not passive)
    if passive:  # the peer's SYN, then our SYN-ACK
        assert probe.states == [TcpState.SYN_RECEIVED, TcpState.SYN_RECEIVED]
    else:  # our SYN, then the peer's SYN-ACK
        assert probe.states == [TcpState.SYN_SENT, TcpState.SYN_SENT]


def test_the_verbs_change_the_connection(tcpstack_conn: ConnectionBuilder) -> None:
    conn = tcpstack_conn("ESTABLISHED", {}, recv_buffer=8192)
    view: api.ConnectionView = conn
    assert isinstance(conn, TcpConnection)
    tcpstack_conn.drain(conn)

    view.request_ack()  # an ACK goes out although nothing arrived
    [ack] = tcpstack_conn.recv(conn)
    assert ack.flags & ACK and not ack.flags & RST and ack.ack == view.rcv_nxt and not ack.payload

    view.set_send_mss(500)
    assert (view.snd_mss, view.info.mss, view.cc.mss) == (500, 500, 500)

    samples = view.rtt.samples
    view.sample_rtt(0.25)
    assert view.rtt.samples == samples + 1 and view.rtt.latest == 0.25

    view.set_window_scale(3, 2)
    assert (view.snd_wscale, view.rcv_wscale) == (3, 2)

    assert view.scoreboard is None
    view.start_sack_scoreboard()
    assert view.scoreboard is not None and view.scoreboard.mss == 500

    view.time_rtt_by_timestamps(lambda t: int(t * 1000))
    assert conn.ts_rtt and conn.tsval_at is not None and conn.tsval_at(2.0) == 2000
