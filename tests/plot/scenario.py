"""Synthetic TCP conversations for the plot tests: a capture (any link type, pcap or pcapng) and
the probe file the stack would have written beside it, both built from one small simulation.

The main connection is a download from the "stack" (10.0.0.2:80, the probed end) to a client
(10.0.0.1:40000), captured at the stack: slow start, one dropped segment that the client SACKs
around, a fast retransmission and recovery, congestion avoidance, FINs. The server's ISN sits
just below 2**32 so the sequence numbers wrap during the transfer. A second, small connection,
a third that only the capture has (a SYN answered by a RST), and frames that are not TCP (UDP,
ICMP, ARP) or not valid (garbage, a broken TCP header) go around it.
"""

from __future__ import annotations

import csv
import heapq
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Ether
from scapy.packet import Packet, Raw
from scapy.utils import PcapNgWriter, wrpcap

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)  # "inconsistent linktypes" for the noise frames

T0 = 1_700_000_000.0
CLIENT = ("10.0.0.1", 40000)
SERVER = ("10.0.0.2", 80)
CLIENT6 = ("fd00::1", 40000)
SERVER6 = ("fd00::2", 80)
ISN_C = 1000
ISN_S = (1 << 32) - 30_000  # wraps after 30 kB
MSS = 1000
DATA_SEGMENTS = 80
DROP = (20, 45)  # segment indexes lost once on the way to the client
ONE_WAY = 0.005
SPACING = 0.0002  # serialisation time per segment at the sender
PROBE_FIELDS = (
    "t conn event local remote seq ack len flags snd_una snd_nxt cwnd ssthresh in_flight pipe sacked lost "
    "srtt rttvar rto rtt_sample snd_wnd rcv_wnd retrans phase ce ece decisions"
).split()


@dataclass
class Seg:
    t: float
    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    ack: int
    flags: str
    length: int = 0
    win: int = 1000
    sack: list[tuple[int, int]] = field(default_factory=list)
    syn_opts: bool = False
    comment: str | None = None

    def tcp(self) -> TCP:
        opts: list[Any] = []
        if self.syn_opts:
            opts = [
                ("MSS", 1460 if self.src[1] != 80 else MSS),
                ("NOP", None),
                ("WScale", 7 if self.src[1] != 80 else 2),
                ("SAckOK", b""),
            ]
        if self.sack:
            opts = [("NOP", None), ("NOP", None), ("SAck", tuple(x % (1 << 32) for b in self.sack for x in b))]
        return TCP(
            sport=self.src[1],
            dport=self.dst[1],
            seq=self.seq % (1 << 32),
            ack=self.ack % (1 << 32),
            flags=self.flags,
            window=self.win,
            options=opts,
        )


@dataclass
class Scenario:
    segs: list[Seg]
    probe: list[dict[str, Any]]
    noise: list[tuple[float, str]]  # (time, kind): frames that are not TCP or not valid
    v6: bool = False


def _probe_record(**kw: Any) -> dict[str, Any]:
    rec = {k: None for k in PROBE_FIELDS}
    rec["decisions"] = []
    rec.update(kw)
    return rec


def download(*, v6: bool = False) -> Scenario:
    """The simulation (a Reno-like sender with SACK, the capture at the sender)."""
    client, server = (CLIENT6, SERVER6) if v6 else (CLIENT, SERVER)
    segs: list[Seg] = []
    probe: list[dict[str, Any]] = []
    t = T0 + 0.001
    segs.append(Seg(t, client, server, ISN_C, 0, "S", win=64240, syn_opts=True))
    probe.append(
        _probe_record(
            t=t,
            conn=1,
            event="open",
            local=f"{_ep(server)}",
            remote=_ep(client),
            seq=ISN_S,
            ack=ISN_C + 1,
            cwnd=10 * MSS,
            ssthresh=None,
            rto=1.0,
            phase="slow_start",
            snd_una=ISN_S,
            snd_nxt=ISN_S,
            in_flight=0,
            pipe=0,
            sacked=0,
            lost=0,
            retrans=0,
            ce=0,
            ece=0,
            snd_wnd=0,
            rcv_wnd=65535,
        )
    )
    t += 0.0001
    segs.append(Seg(t, server, client, ISN_S, ISN_C + 1, "SA", win=65535, syn_opts=True))
    state = dict(
        cwnd=4 * MSS, ssthresh=None, phase="slow_start", lost=0, sacked=0, retrans=0, srtt=None, rttvar=None, rto=1.0
    )

    def rec(t: float, event: str, **kw: Any) -> None:
        base = dict(
            conn=1,
            snd_una=ISN_S + 1 + una * MSS,
            snd_nxt=ISN_S + 1 + nxt * MSS,
            in_flight=(nxt - una) * MSS,
            pipe=max(0, (nxt - una) * MSS - state["sacked"] - state["lost"]),
            snd_wnd=250 * 4000,
            rcv_wnd=65535,
            ce=0,
            ece=0,
        )
        base.update(
            {k: state[k] for k in ("cwnd", "ssthresh", "phase", "lost", "sacked", "retrans", "srtt", "rttvar", "rto")}
        )
        base.update(kw)
        probe.append(_probe_record(t=t, event=event, **base))

    una = nxt = 0
    t += 2 * ONE_WAY
    segs.append(Seg(t, client, server, ISN_C + 1, ISN_S + 1, "A", win=502))
    rec(t, "ack", seq=ISN_C + 1, ack=ISN_S + 1, len=0, flags="A", rtt_sample=2 * ONE_WAY + 0.0001)
    t += 0.0005
    segs.append(Seg(t, client, server, ISN_C + 1, ISN_S + 1, "PA", length=100, win=502))
    rec(
        t,
        "ack",
        seq=ISN_C + 1,
        ack=ISN_S + 1,
        len=100,
        flags="PA",
        decisions=["ACK now, RFC 9293 §3.8.6.3, reason request"],
    )
    t += 0.0001
    segs.append(Seg(t, server, client, ISN_S + 1, ISN_C + 101, "A", win=65535 >> 2))
    rec(t, "send", seq=ISN_S + 1, ack=ISN_C + 101, len=0, flags="A")

    # Event simulation: the receiver ACKs every segment on arrival (segments arrive in the order
    # sent); the ACKs reach the sender ONE_WAY later; the sender sends what cwnd allows.
    sent_at: dict[int, float] = {}
    received: set[int] = set()
    dropped: set[int] = set()
    retransmitted: set[int] = set()
    acks: list[tuple[float, int, int, list[tuple[int, int]]]] = []  # heap: (arrival, order, cum, SACK blocks)
    order = 0
    dupacks = 0
    recover: int | None = None
    now = t

    def send(i: int, when: float, again: bool) -> None:
        nonlocal nxt, order
        seq = ISN_S + 1 + i * MSS
        segs.append(Seg(when, server, client, seq, ISN_C + 101, "PA", length=MSS, win=65535 >> 2))
        if again:
            state["retrans"] += 1
            retransmitted.add(i)
        else:
            nxt = i + 1
            sent_at[i] = when
        rec(
            when,
            "send",
            seq=seq,
            ack=ISN_C + 101,
            len=MSS,
            flags="PA",
            decisions=[f"fast retransmit, RFC 6675 §5, seq {i * MSS + 1}"] if again else [],
        )
        if i in DROP and i not in dropped:
            dropped.add(i)
            return
        received.add(i)
        cum = 0
        while cum in received:
            cum += 1
        blocks: list[tuple[int, int]] = []
        for j in sorted(j for j in received if j > cum):
            if blocks and blocks[-1][1] == j:
                blocks[-1] = (blocks[-1][0], j + 1)
            else:
                blocks.append((j, j + 1))
        heapq.heappush(acks, (when + 2 * ONE_WAY, order, cum, blocks))
        order += 1

    while una < DATA_SEGMENTS:
        while nxt < DATA_SEGMENTS and (nxt - una) * MSS - state["sacked"] < state["cwnd"]:
            send(nxt, now, False)
            now += SPACING
        if not acks:
            break
        when, _, cum, blocks = heapq.heappop(acks)
        now = max(now, when)  # the ACK is captured on arrival, processed once the sender is free
        sack = [(ISN_S + 1 + a * MSS, ISN_S + 1 + b * MSS) for a, b in blocks[:3]]
        segs.append(Seg(when, client, server, ISN_C + 101, ISN_S + 1 + cum * MSS, "A", win=502, sack=sack))
        state["sacked"] = sum(b - a for a, b in blocks) * MSS
        sample = None
        decisions: list[str] = []
        if cum > una:
            if not any(j in retransmitted for j in range(una, cum)):
                sample = now - sent_at[cum - 1]
                if state["srtt"] is None:
                    state["srtt"], state["rttvar"] = sample, sample / 2
                else:
                    state["rttvar"] = 0.75 * state["rttvar"] + 0.25 * abs(state["srtt"] - sample)
                    state["srtt"] = 0.875 * state["srtt"] + 0.125 * sample
                state["rto"] = max(1.0, state["srtt"] + 4 * state["rttvar"])
            una = cum
            dupacks = 0
            if recover is not None and una >= recover:
                recover = None
                state["phase"] = "congestion_avoidance"
                state["lost"] = 0
                decisions.append("recovery done, RFC 6675 §5")
            elif recover is None:
                if state["phase"] == "slow_start":
                    state["cwnd"] += MSS
                else:
                    state["cwnd"] += MSS * MSS // state["cwnd"]
        else:
            dupacks += 1
            if dupacks == 3 and recover is None:
                recover = nxt
                state["ssthresh"] = max(2 * MSS, state["cwnd"] // 2)
                state["cwnd"] = state["ssthresh"]
                state["phase"] = "fast_recovery"
                state["lost"] = MSS
                decisions += [
                    "marked lost, RFC 6675 §5, segments 1",
                    f"cwnd reduced, reno, RFC 5681 §3.2, cwnd {state['cwnd']}",
                ]
        rec(
            now,
            "ack",
            seq=ISN_C + 101,
            ack=ISN_S + 1 + cum * MSS,
            len=0,
            flags="A",
            rtt_sample=sample,
            decisions=decisions,
        )
        if recover is not None and dupacks == 3:
            send(una, now, True)
            now += SPACING
    # FINs: the server closes after the data, then the client.
    fin_seq = ISN_S + 1 + DATA_SEGMENTS * MSS
    now += 0.001
    segs.append(Seg(now, server, client, fin_seq, ISN_C + 101, "FA", win=65535 >> 2))
    rec(now, "send", seq=fin_seq, ack=ISN_C + 101, len=0, flags="FA")
    now += 2 * ONE_WAY
    segs.append(Seg(now, client, server, ISN_C + 101, fin_seq + 1, "FA", win=502))
    nxt_fin = fin_seq + 1
    probe.append(
        _probe_record(
            t=now,
            conn=1,
            event="ack",
            seq=ISN_C + 101,
            ack=nxt_fin,
            len=0,
            flags="FA",
            snd_una=nxt_fin,
            snd_nxt=nxt_fin,
            cwnd=state["cwnd"],
            ssthresh=state["ssthresh"],
            in_flight=0,
            pipe=0,
            sacked=0,
            lost=0,
            srtt=state["srtt"],
            rttvar=state["rttvar"],
            rto=state["rto"],
            snd_wnd=1_004_000,
            rcv_wnd=65535,
            retrans=state["retrans"],
            phase=state["phase"],
            ce=0,
            ece=0,
        )
    )
    now += 0.0001
    segs.append(Seg(now, server, client, nxt_fin, ISN_C + 102, "A", win=65535 >> 2))
    probe.append(
        _probe_record(
            t=now + 0.001,
            conn=1,
            event="close",
            snd_una=nxt_fin,
            snd_nxt=nxt_fin,
            cwnd=state["cwnd"],
            ssthresh=state["ssthresh"],
            in_flight=0,
            pipe=0,
            sacked=0,
            lost=0,
            srtt=state["srtt"],
            rttvar=state["rttvar"],
            rto=state["rto"],
            snd_wnd=1_004_000,
            rcv_wnd=65535,
            retrans=state["retrans"],
            phase=state["phase"],
            ce=0,
            ece=0,
            decisions=["TIME-WAIT skipped, RFC 9293 §3.6"],
        )
    )
    return Scenario(segs=segs, probe=probe, noise=[], v6=v6)


def _ep(ep: tuple[str, int]) -> str:
    return f"[{ep[0]}]:{ep[1]}" if ":" in ep[0] else f"{ep[0]}:{ep[1]}"


def full(*, v6: bool = False) -> Scenario:
    """The download, a small second connection (probed too), a capture-only SYN/RST, and noise."""
    sc = download(v6=v6)
    client2 = ("fd00::1" if v6 else "10.0.0.1", 40001)
    server = SERVER6 if v6 else SERVER
    t = T0 + 0.002
    c, s = 5000, 9000
    extra = [
        Seg(t, client2, server, c, 0, "S", win=64240, syn_opts=True),
        Seg(t + 0.0001, server, client2, s, c + 1, "SA", win=65535, syn_opts=True),
        Seg(t + 0.0101, client2, server, c + 1, s + 1, "A", win=502),
        Seg(t + 0.0102, client2, server, c + 1, s + 1, "PA", length=50, win=502),
        Seg(t + 0.0103, server, client2, s + 1, c + 51, "PA", length=700, win=16383),
        Seg(t + 0.0203, client2, server, c + 51, s + 701, "A", win=502),
        Seg(t + 0.0204, client2, server, c + 51, s + 701, "FA", win=502),
        Seg(t + 0.0205, server, client2, s + 701, c + 52, "FA", win=16383),
        Seg(t + 0.0305, client2, server, c + 52, s + 702, "A", win=502),
    ]
    other = ("fd00::3" if v6 else "10.0.0.3", 22)
    extra += [
        Seg(t + 0.05, (client2[0], 50000), other, 777, 0, "S", win=64240, syn_opts=True),
        Seg(t + 0.0501, other, (client2[0], 50000), 0, 778, "RA", win=0),
    ]
    sc.segs = sorted(sc.segs + extra, key=lambda g: g.t)
    sc.probe.append(
        _probe_record(
            t=t + 0.0001,
            conn=2,
            event="open",
            local=_ep(server),
            remote=_ep(client2),
            seq=s,
            ack=c + 1,
            cwnd=10 * MSS,
            rto=1.0,
            phase="slow_start",
            snd_una=s,
            snd_nxt=s + 1,
            in_flight=1,
            pipe=1,
            sacked=0,
            lost=0,
            retrans=0,
            ce=0,
            ece=0,
            snd_wnd=0,
            rcv_wnd=65535,
        )
    )
    sc.probe.append(
        _probe_record(
            t=t + 0.0103,
            conn=2,
            event="send",
            seq=s + 1,
            ack=c + 51,
            len=700,
            flags="PA",
            cwnd=10 * MSS,
            rto=1.0,
            phase="slow_start",
            snd_una=s + 1,
            snd_nxt=s + 701,
            in_flight=700,
            pipe=700,
            sacked=0,
            lost=0,
            retrans=0,
            ce=0,
            ece=0,
            snd_wnd=64256,
            rcv_wnd=65535,
        )
    )
    sc.probe.sort(key=lambda r: r["t"])
    sc.noise = [
        (T0 + 0.0105, "udp"),
        (T0 + 0.0106, "icmp"),
        (T0 + 0.0107, "arp"),
        (T0 + 0.0108, "garbage"),
        (T0 + 0.0109, "badtcp"),
    ]
    return sc


# ====================================================================== files


def _ip(seg: Seg, v6: bool) -> Packet:
    ip = IPv6(src=seg.src[0], dst=seg.dst[0]) if v6 else IP(src=seg.src[0], dst=seg.dst[0], flags="DF")
    pkt = ip / seg.tcp()
    if seg.length:
        pkt = pkt / Raw(bytes(seg.length))
    return pkt


def _noise(kind: str, v6: bool) -> Packet | bytes:
    src, dst = ("fd00::1", "fd00::2") if v6 else ("10.0.0.1", "10.0.0.2")
    ip = IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)
    if kind == "udp":
        return ip / UDP(sport=5353, dport=5353) / Raw(b"x" * 20)
    if kind == "icmp":
        return IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()
    if kind == "garbage":
        return b"\x45\x00\x00"  # a truncated IPv4 header
    if kind == "badtcp":  # a TCP header with data offset 2 (8 bytes): broken
        raw = bytearray(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80)))
        raw[20 + 12] = 2 << 4
        return bytes(raw)
    raise ValueError(kind)


LINKS = {
    "raw": 101,
    "ether": 1,
    "sll": 113,
    "sll2": 276,
}


def _frame(pkt: Packet | bytes, link: str, v6: bool, *, arp: bool = False) -> Packet:
    if link == "raw":
        return Raw(pkt) if isinstance(pkt, bytes) else pkt
    body = Raw(pkt) if isinstance(pkt, bytes) else pkt
    etype = 0x0806 if arp else (0x86DD if v6 and not isinstance(pkt, bytes) and IPv6 in pkt else 0x0800)
    if link == "ether":
        return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=etype) / body
    if link == "sll":
        return (
            CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02\x00\x00\x00\x00\x01\x00\x00", proto=etype)
            / body
        )
    if link == "sll2":
        return (
            CookedLinuxV2(
                proto=etype, ifindex=3, lladdrtype=1, pkttype=4, lladdrlen=6, src=b"\x02\x00\x00\x00\x00\x01\x00\x00"
            )
            / body
        )
    raise ValueError(link)


def write_capture(
    sc: Scenario, path: Path, link: str = "raw", *, pcapng: bool = False, noise: bool = True, sort: bool = True
) -> Path:
    """The scenario's frames as a capture file: link type *link*, pcap or pcapng (with comments)."""
    items: list[tuple[float, Packet]] = []
    for seg in sc.segs:
        frame = _frame(_ip(seg, sc.v6), link, sc.v6)
        frame.time = seg.t
        if seg.comment:
            frame.comment = seg.comment.encode()
        items.append((seg.t, frame))
    if noise:
        for t, kind in sc.noise:
            if kind == "arp":
                if link == "raw":
                    continue
                frame = _frame(ARP(psrc="10.0.0.1", pdst="10.0.0.2"), link, False, arp=True)
            else:
                frame = _frame(_noise(kind, sc.v6), link, sc.v6)
            frame.time = t
            items.append((t, frame))
    if sort:
        items.sort(key=lambda x: x[0])
    frames = [f for _, f in items]
    if pcapng:
        w = PcapNgWriter(str(path))
        w.linktype = LINKS[link]
        for f in frames:
            w.write(f)
        w.close()
    else:
        wrpcap(str(path), frames, linktype=LINKS[link])
    return path


def write_probe(sc: Scenario, path: Path) -> Path:
    """The probe records as the spec says: CSV (``*.csv``) or JSON lines."""
    if path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(PROBE_FIELDS)
            for rec in sc.probe:
                row = []
                for k in PROBE_FIELDS:
                    v = rec[k]
                    if k == "decisions":
                        v = " | ".join(v)
                    row.append("" if v is None else v)
                w.writerow(row)
    else:
        with open(path, "w") as f:
            for rec in sc.probe:
                f.write(json.dumps({k: rec[k] for k in PROBE_FIELDS}) + "\n")
    return path
