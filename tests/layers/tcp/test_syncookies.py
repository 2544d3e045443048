"""SYN cookies (RFC 4987 §3.6) and the listener's two queues, through the TCP layer.

Cookie SYN-ACKs are checked field by field; the connection a valid cookie ACK creates is checked
for what the SYN negotiated (MSS from the table, window scale, SACK, timestamps, ECN); forged,
stale and tampered cookies are rejected and answered with a RST like any stray ACK.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import replace

import pytest

from framework.errors import ConfigError
from framework.simulation import Simulation
from layers.tcp.syncookies import MSS_TABLE, OPTION_BITS, SynCookies, mss_index
from layers.tcp.wire import ACK, CWR, ECE, RST, SYN, TcpRepr
from tcpstack.io.driver import AsyncioDriver
from tcpstack.io.memory import MemoryLink
from tcpstack.streams import StackApi
from tests.layers.tcp.helpers import (
    LOCAL_PORT,
    REMOTE_ADDR,
    REMOTE_PORT,
    REMOTE_SEQ,
    SEND,
    App,
    LayerHarness,
    S,
    data,
    frame,
    make_stack,
    tcp_layer,
)

ALL = {"window_scaling": {}, "sack": {}, "timestamps": {}, "ecn": {}}


def options(
    *, mss: int | None = None, wscale: int | None = None, sack_perm: bool = False, ts: tuple[int, int] | None = None
) -> bytes:
    """Raw TCP option bytes, packed with struct (not the code under test)."""
    out = b""
    if mss is not None:
        out += struct.pack("!BBH", 2, 4, mss)
    if wscale is not None:
        out += struct.pack("!BBBB", 1, 3, 3, wscale)
    if sack_perm:
        out += struct.pack("!BBBB", 1, 1, 4, 2)
    if ts is not None:
        out += struct.pack("!BBBBII", 1, 1, 8, 10, *ts)
    return out


def harness(mode: str = "always", **tcp: object) -> LayerHarness:
    h = LayerHarness(syncookies=mode, **tcp)
    h.tcp.listen(LOCAL_PORT)
    return h


def syn(port: int = REMOTE_PORT, seq: int = REMOTE_SEQ, flags: int = SYN) -> TcpRepr:
    return replace(SEND, src_port=port, seq=seq, ack=0, flags=flags, window=65535)


def ack_for(synack: TcpRepr, port: int = REMOTE_PORT, **kw: object) -> TcpRepr:
    return replace(SEND, src_port=port, seq=synack.ack, ack=synack.seq + 1, flags=ACK, window=1000, **kw)


def cookies_of(h: LayerHarness) -> dict[str, int]:
    return {k: v for k, v in h.stack.stats.events.items() if k.startswith("tcp.syncookies")}


class TestCookieSynAck:
    def test_always_answers_without_keeping_state(self) -> None:
        """RFC 4987 §3.6: the SYN-ACK is sent, but no TCB exists until the ACK returns."""
        h = harness()
        [synack] = h.inject(syn(), t=0.0, options=options(mss=1460))
        assert synack.flags == SYN | ACK and synack.ack == REMOTE_SEQ + 1
        assert synack.mss == 1460 and synack.window == 65535
        assert h.tcp.connections == {}
        assert cookies_of(h) == {"tcp.syncookies_sent": 1}
        # Nothing is retransmitted: there is no state to drive a timer.
        assert h.advance(200.0) == []

    def test_cookie_depends_on_the_four_tuple_and_peer_isn(self) -> None:
        h = harness()
        [a] = h.inject(syn(port=40000), t=0.0)
        [b] = h.inject(syn(port=40001), t=0.0)
        [c] = h.inject(syn(port=40000, seq=REMOTE_SEQ + 7), t=0.0)
        assert a.seq != b.seq
        assert c.seq == (a.seq + 7) & 0xFFFFFFFF  # Linux's layout adds the peer's ISN

    def test_without_timestamps_only_the_mss_survives(self) -> None:
        """As Linux: with no TSval to carry them, the cookie SYN-ACK offers no other option."""
        h = harness(features=ALL)
        [synack] = h.inject(syn(flags=SYN | ECE | CWR), t=0.0, options=options(mss=1460, wscale=7, sack_perm=True))
        assert synack.wscale is None and not synack.sack_perm and synack.ts is None
        assert not synack.flags & ECE

    def test_with_timestamps_every_option_is_offered_and_bits_ride_in_tsval(self) -> None:
        h = harness(features=ALL)
        opts = options(mss=1460, wscale=7, sack_perm=True, ts=(1000, 0))
        [synack] = h.inject(syn(flags=SYN | ECE | CWR), t=5.0, options=opts)
        assert synack.wscale is not None and synack.sack_perm and synack.flags & ECE
        assert synack.ts is not None and synack.ts[1] == 1000
        bits = synack.ts[0] & ((1 << OPTION_BITS) - 1)
        assert bits == 7 | (1 << 4) | (1 << 5)  # wscale 7, SACK, ECN (Linux's TSBITS layout)

    def test_auto_sends_cookies_only_when_the_syn_queue_is_full(self) -> None:
        h = harness("auto", syn_backlog=2)
        for port in (40000, 40001):
            [synack] = h.inject(syn(port=port), t=0.0)
        assert len(h.tcp.connections) == 2 and cookies_of(h) == {}
        [synack] = h.inject(syn(port=40002), t=0.0)
        assert synack.flags == SYN | ACK and len(h.tcp.connections) == 2
        assert cookies_of(h) == {"tcp.syncookies_sent": 1}

    def test_no_cookie_when_no_connection_could_be_made(self) -> None:
        """At max_connections the SYN is dropped: a cookie would complete into a dropped ACK."""
        h = harness("auto", syn_backlog=1, max_connections=1)
        assert len(h.inject(syn(port=40000), t=0.0)) == 1
        assert h.inject(syn(port=40001), t=0.0) == []
        assert h.drops("too_many_connections") == 1 and cookies_of(h) == {}

    def test_never_drops_syns_beyond_the_syn_queue(self) -> None:
        h = harness("never", syn_backlog=1)
        assert len(h.inject(syn(port=40000), t=0.0)) == 1
        assert h.inject(syn(port=40001), t=0.0) == []
        assert h.drops("backlog_full") == 1 and cookies_of(h) == {}


class TestCookieAck:
    def test_valid_cookie_creates_an_established_connection(self) -> None:
        h = harness()
        [synack] = h.inject(syn(), t=0.0, options=options(mss=1300))
        assert h.inject(ack_for(synack), t=0.01) == []
        conn = h.tcp.connections[(REMOTE_ADDR, REMOTE_PORT, LOCAL_PORT)]
        assert conn.state is S.ESTABLISHED and conn.iss == synack.seq
        assert conn.snd_mss == 1300 and conn.snd_wnd == 1000
        assert h.tcp.listeners[LOCAL_PORT].accept() is conn
        assert cookies_of(h) == {"tcp.syncookies_sent": 1, "tcp.syncookies_accepted": 1}

    def test_data_on_the_cookie_ack_is_delivered(self) -> None:
        h = harness()
        [synack] = h.inject(syn(), t=0.0, options=options(mss=1460))
        [ack] = h.inject(ack_for(synack, payload=b"GET /"), t=0.01)
        assert ack.ack == REMOTE_SEQ + 1 + 5
        conn = h.tcp.listeners[LOCAL_PORT].accept()
        assert conn is not None and conn.read() == b"GET /"

    def test_options_are_restored_from_the_echoed_tsval(self) -> None:
        h = harness(features=ALL, recv_buffer=1 << 20)
        opts = options(mss=1460, wscale=7, sack_perm=True, ts=(1000, 0))
        [synack] = h.inject(syn(flags=SYN | ECE | CWR), t=5.0, options=opts)
        assert synack.ts is not None
        ack = ack_for(synack)
        h.inject(ack, t=5.01, options=options(ts=(1001, synack.ts[0])))
        conn = h.tcp.connections[(REMOTE_ADDR, REMOTE_PORT, LOCAL_PORT)]
        assert conn.state is S.ESTABLISHED
        assert conn.snd_wscale == 7 and conn.rcv_wscale == synack.wscale
        assert conn.snd_wnd == 1000 << 7  # the ACK's window is scaled (RFC 7323 §2.3)
        assert conn.scoreboard is not None  # SACK negotiated
        assert {e.name for e in conn.extensions if e.active} == {"window_scaling", "sack", "timestamps", "ecn"}
        assert conn.snd_mss == 1460 - 12  # timestamps take 12 bytes of every segment (MUST-16)
        # The echoed TSval is a send time rounded down by at most 2**6 ms: the first RTT sample (as Linux).
        assert conn.rtt.srtt is not None and 0.01 <= conn.rtt.srtt <= 0.01 + 0.064
        # Our TSvals keep increasing from the cookie's (the peer's PAWS would drop older ones).
        conn.send(b"x", 5.02)
        h.user(conn)
        [seg] = h.output(t=5.02)
        assert seg.ts is not None and seg.ts[0] - synack.ts[0] >= 0 and seg.ts[1] == 1001

    def test_ts_recent_follows_the_peer_after_a_cookie_handshake(self) -> None:
        """RFC 7323 §4.3: Last.ACK.sent is the cookie SYN-ACK's ACK, so the next in-order segment's TSval
        becomes TS.Recent and our ACK echoes it (as after a normal handshake)."""
        h = harness(features={"timestamps": {}, "delayed_ack": False})
        [synack] = h.inject(syn(seq=0x10000000), t=1.0, options=options(mss=1460, ts=(1000, 0)))
        assert synack.ts is not None
        h.inject(ack_for(synack, port=REMOTE_PORT), t=1.01, options=options(ts=(1001, synack.ts[0])))
        push = replace(ack_for(synack), payload=b"hello")
        [ack] = h.inject(push, t=1.5, options=options(ts=(1500, synack.ts[0])))
        assert ack.ts is not None and ack.ts[1] == 1500

    def test_an_ack_without_timestamps_gets_a_connection_without_options(self) -> None:
        """As Linux's cookie_timestamp_decode: no TSecr, no option bits, so no option is assumed."""
        h = harness(features=ALL)
        [synack] = h.inject(syn(), t=5.0, options=options(mss=1460, wscale=7, sack_perm=True, ts=(1000, 0)))
        assert h.inject(ack_for(synack), t=5.01) == []
        conn = h.tcp.connections[(REMOTE_ADDR, REMOTE_PORT, LOCAL_PORT)]
        assert conn.state is S.ESTABLISHED and conn.snd_wscale == 0 and conn.scoreboard is None

    def test_window_scale_codec_rejects_an_impossible_shift(self) -> None:
        from plugins.window_scaling import WindowScalingCookie

        codec = WindowScalingCookie()
        seg = replace(SEND)
        assert codec.decode(0xF, seg, None) and seg.wscale is None  # not offered
        assert codec.decode(14, seg, None) and seg.wscale == 14
        assert codec.decode(0x1F, replace(SEND), None) is False  # never encoded

    def test_forged_cookie_is_rejected_and_answered_with_rst(self) -> None:
        h = harness()
        [synack] = h.inject(syn(), t=0.0)
        bad = replace(ack_for(synack), ack=synack.seq + 1 + 1000)
        [rst] = h.inject(bad, t=0.01)
        assert rst.flags == RST and rst.seq == bad.ack  # §3.10.7.2: <SEQ=SEG.ACK><CTL=RST>
        assert h.tcp.connections == {}
        assert cookies_of(h)["tcp.syncookies_rejected"] == 1

    def test_cookie_for_another_four_tuple_is_rejected(self) -> None:
        h = harness()
        [synack] = h.inject(syn(port=40000), t=0.0)
        [rst] = h.inject(ack_for(synack, port=40001), t=0.01)
        assert rst.flags == RST and cookies_of(h)["tcp.syncookies_rejected"] == 1

    def test_cookie_expires_after_two_periods(self) -> None:
        """Linux's age limit: the minute counter may lag by at most one period."""
        h = harness()
        [synack] = h.inject(syn(port=40000), t=0.0)
        h.inject(syn(port=40009), t=100.0)  # keep the listener "recently sending cookies"
        [rst] = h.inject(ack_for(synack, port=40000), t=121.0)
        assert rst.flags == RST and cookies_of(h)["tcp.syncookies_rejected"] == 1
        [synack] = h.inject(syn(port=40001), t=130.0)
        assert h.inject(ack_for(synack, port=40001), t=179.0) == []  # one period later: fine
        assert cookies_of(h)["tcp.syncookies_accepted"] == 1

    def test_cookies_are_not_checked_on_a_listener_that_sent_none_lately(self) -> None:
        """An ACK flood costs no hash unless the listener answered with cookies in the last
        two periods (as Linux's tcp_synq_no_recent_overflow)."""
        h = harness()
        [synack] = h.inject(syn(), t=0.0)
        [rst] = h.inject(ack_for(synack), t=121.0)
        assert rst.flags == RST
        assert "tcp.syncookies_rejected" not in cookies_of(h) and h.tcp.connections == {}

    def test_full_accept_queue_drops_the_cookie_ack_without_reset(self) -> None:
        h = LayerHarness(syncookies="always")
        h.tcp.listen(LOCAL_PORT, backlog=1)
        [a] = h.inject(syn(port=40000), t=0.0)
        [b] = h.inject(syn(port=40001), t=0.0)
        h.inject(ack_for(a, port=40000), t=0.01)
        assert h.inject(ack_for(b, port=40001), t=0.01) == []
        assert h.drops("accept_queue_full") == 1
        assert h.tcp.listeners[LOCAL_PORT].accept() is not None
        h.inject(ack_for(b, port=40001), t=0.5)  # the peer's next segment completes it
        assert h.tcp.listeners[LOCAL_PORT].accept() is not None


class TestQueues:
    def test_one_batch_of_acks_cannot_overfill_the_accept_queue(self) -> None:
        """RFC 4987 §3.2: a completed handshake joins the accept queue as its ACK is processed, so five ACKs
        read in one batch (before any flush) fill a backlog of 1 and the other four are held back."""
        for mode in ("always", "never"):
            h = LayerHarness(syncookies=mode)
            listener = h.tcp.listen(LOCAL_PORT, backlog=1)
            synacks = [h.inject(syn(port=40000 + i), t=0.0)[0] for i in range(5)]
            for i, synack in enumerate(synacks):
                h.stack.receive_frame(frame(ack_for(synack, port=40000 + i)), now=0.01)
            h.output(t=0.01)
            assert len(listener.accept_queue) == 1, mode
            assert h.drops("accept_queue_full") == 4, mode

    def test_accept_queue_full_drops_syns_until_accept(self) -> None:
        h = LayerHarness(syncookies="never")
        listener = h.tcp.listen(LOCAL_PORT, backlog=1)
        [a] = h.inject(syn(port=40000), t=0.0)
        h.inject(ack_for(a, port=40000), t=0.01)
        assert h.inject(syn(port=40001), t=0.1) == []
        assert h.drops("accept_queue_full") == 1
        assert listener.accept() is not None
        assert len(h.inject(syn(port=40001), t=1.0)) == 1

    def test_handshake_completing_into_a_full_accept_queue_is_held_back(self) -> None:
        """RFC 4987 §3.2 (as Linux with tcp_abort_on_overflow=0): the ACK is dropped, the
        connection stays half-open, and completes once there is room."""
        h = LayerHarness(syncookies="never")
        listener = h.tcp.listen(LOCAL_PORT, backlog=1)
        [a] = h.inject(syn(port=40000), t=0.0)
        [b] = h.inject(syn(port=40001), t=0.0)
        h.inject(ack_for(a, port=40000), t=0.01)
        h.inject(ack_for(b, port=40001), t=0.01)
        conn_b = h.tcp.connections[(REMOTE_ADDR, 40001, LOCAL_PORT)]
        assert conn_b.state is S.SYN_RECEIVED and h.drops("accept_queue_full") == 1
        assert listener.accept() is not None
        h.inject(ack_for(b, port=40001), t=0.02)
        assert conn_b.state is S.ESTABLISHED and listener.accept() is conn_b


class TestCookieMath:
    def test_round_trip_and_age(self) -> None:
        c = SynCookies(b"k" * 16)
        material = bytes(12)
        for index in range(len(MSS_TABLE)):
            cookie = c.make(material, 12345, index, now=59.0)
            assert c.check(material, 12345, cookie, now=59.0) == index
            assert c.check(material, 12345, cookie, now=60.0) == index  # one period later
            assert c.check(material, 12345, cookie, now=120.0) is None  # two: too old
            assert c.check(material, 12345 + 1000, cookie, now=59.0) is None
            assert c.check(bytes(11) + b"\1", 12345, cookie, now=59.0) is None

    def test_forgery_rate_is_small(self) -> None:
        c = SynCookies(b"k" * 16)
        hits = sum(c.check(bytes(12), 1, guess, now=0.0) is not None for guess in range(0, 1 << 32, 1 << 14))
        assert hits <= 2  # about len(MSS_TABLE) * 2 / 2**24 of all values pass

    def test_mss_table(self) -> None:
        """The largest entry not above the peer's MSS (MUST-15), 536 without the option."""
        cases = {None: 536, 40: 48, 64: 48, 88: 88, 500: 256, 536: 536, 1299: 536, 1300: 1300, 1460: 1460, 9000: 1460}
        assert {m: MSS_TABLE[mss_index(m)] for m in cases} == cases


def test_layer_never_imports_a_plugin() -> None:
    """The codecs reach the layer through the registry (the rings: layers know no plugins)."""
    import layers.tcp.handler as handler_module
    import layers.tcp.syncookies as cookie_module

    for module in (handler_module, cookie_module):
        source = open(module.__file__ or "").read()
        assert "import plugins" not in source and "from plugins" not in source


@pytest.mark.parametrize("features", [False, True], ids=["no-features", "default-features"])
def test_cookie_connection_carries_a_transfer_both_ways(features: bool) -> None:
    """Two stacks, the server answering every SYN with a cookie: 300 kB each way arrive intact,
    with window scaling, SACK and timestamps negotiated through the cookie when on."""
    sim = Simulation()
    a = make_stack("10.0.0.1/24", default_features=features)
    b = make_stack("10.0.0.2/24", default_features=features, syncookies="always")
    sim.wire(a, b, delay=0.002, bandwidth=20e6)
    ta, tb = tcp_layer(a), tcp_layer(b)
    server = App(sim, tb, data(300_000, start=3))
    tb.listen(80, on_accept=server.attach)
    client = App(sim, ta, data(300_000))
    client.attach(ta.connect(socket.inet_aton("10.0.0.2"), 80, now=0.0))
    sim.run(until=60.0, condition=lambda: client.eof and server.eof, max_steps=200_000)
    assert bytes(server.received) == data(300_000) and bytes(client.received) == data(300_000, start=3)
    assert b.stats.events["tcp.syncookies_accepted"] == 1
    assert server.conn is not None and client.conn is not None
    active = {e.name for e in server.conn.extensions if e.active}
    assert active == ({"window_scaling", "sack", "timestamps", "rack_tlp"} if features else set())
    assert server.conn.snd_wscale == client.conn.rcv_wscale
    assert server.conn.rcv_wscale == client.conn.snd_wscale


class TestSettings:
    def test_api_server_takes_syncookies_and_syn_backlog_and_checks_them(self) -> None:
        """start_server(syncookies=, syn_backlog=) reach the listener; a misspelt mode is a ValueError (as in a
        configuration file), never a silent "never"; a connection through a cookie carries data."""

        async def main() -> tuple[int, bytes]:
            la, lb = MemoryLink.pair()
            sa, sb = make_stack("10.0.0.1/24"), make_stack("10.0.0.2/24")
            da, db = AsyncioDriver(sa, la), AsyncioDriver(sb, lb)
            da.start()
            db.start()

            async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                writer.write(await reader.readexactly(5))
                await writer.drain()
                writer.close()

            try:
                api = StackApi(sb, db)
                with pytest.raises(ValueError, match="syncookies must be one of"):
                    await api.start_server(echo, port=7, syncookies="alwyas")
                server = await api.start_server(echo, port=7, syncookies="always", syn_backlog=2)
                assert server.listener.syn_backlog == 2 and server.listener.options.syncookies == "always"
                reader, writer = await asyncio.wait_for(StackApi(sa, da).open_connection("10.0.0.2", 7), 5)
                writer.write(b"hello")
                got = await asyncio.wait_for(reader.readexactly(5), 5)
                writer.close()
                server.close()
                return sb.stats.events["tcp.syncookies_accepted"], got
            finally:
                da.stop()
                db.stop()
                la.close()
                lb.close()

        assert asyncio.run(main()) == (1, b"hello")

    @pytest.mark.parametrize("name", ["isn_secret", "syncookie_secret"])
    def test_secrets_must_be_hex_keys(self, name: str) -> None:
        """Checked with the configuration (so `config check` and `up` agree), with its key path."""
        with pytest.raises(ConfigError, match=rf"layers\[2\]\.{name}: must be at least 16 bytes as hex"):
            make_stack(**{name: "xyz"})
        with pytest.raises(ConfigError, match=name):
            make_stack(**{name: "00" * 8})
        assert make_stack(**{name: "ab" * 16}) is not None
