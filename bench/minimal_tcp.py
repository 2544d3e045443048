"""A minimal TCP endpoint over TUN: what pure Python can move on this machine (bench/run.py).

Run as root in a namespace whose TUN device carries the kernel at 10.0.0.1 (tcpstack.netns):

    minimal_tcp.py [--tun tun0] [--address 10.0.0.2] [--offload] [--verify] [--ack-every 2]

It serves, like ``tcpstack up --serve discard:9 --serve http:80``, so that bench/peer.py drives
it exactly as it drives our stack:

- port 9, a receiver that only ACKs: in-order data is counted (and hashed with ``--verify``),
  cumulative ACKs go out every ``--ack-every`` segments and at the end of each batch of frames
  read; at the client's FIN it closes too;
- port 80, a sender that only sends: it reads ``GET /bytes/N``, answers
  ``HTTP/1.1 200 OK`` with ``Content-Length: N`` and N bytes (a random cyclic pattern, its
  SHA-256 printed with ``--verify``), then FIN.

Every checksum is verified and computed with the function our stack uses
(:func:`framework.checksum.internet_checksum`; a compiled build of that module is used when it
is the one imported): the IPv4 header checksum (RFC 791 §3.1) and the TCP checksum over the
pseudo-header (RFC 9293 §3.1). With ``--offload`` the device is opened as ours is with
``offload = true`` (``IFF_VNET_HDR``, ``TUN_F_CSUM | TUN_F_TSO4``, docs/architecture.md "TUN
offload"): checksums the kernel marks partial or valid are not verified, ours are left partial,
and data goes out as TCP super-segments of up to 64 KB that the kernel cuts (TSO); it reads
super-segments too.

It is a measuring device, not a TCP: it is correct for one bulk transfer at a time per client
over a lossless path (handshake with MSS and window scale, in-order data, cumulative ACKs, the
peer's window respected, FIN both ways) and skips everything else. Its limits:

- no options beyond MSS and window scale (no SACK, no timestamps: segments carry 1460 bytes
  where ours, with timestamps, carry 1448), no urgent data, no keep-alive, no TIME-WAIT;
- no congestion control: the kernel's receive window is the only limit on what it sends;
- no reassembly: an out-of-order segment is dropped and answered by a duplicate ACK (counted,
  the kernel retransmits); its own losses are repaired only by a go-back-N after
  :data:`RTO` seconds without progress (counted as ``timeouts``: a run with any is suspect);
- no RST sent, none needed: frames for other ports or addresses are ignored, a RST closes;
- a constant receive window (:data:`RCV_BUF`, the same as our stack's default ``recv_buffer``),
  since what arrives is consumed at once.

Each closed connection prints one JSON line on stdout (role, port, bytes, out_of_order,
bad_checksum, timeouts, and ``sha256`` with ``--verify``); ``ready`` is printed once the device
is open.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import hashlib
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from framework.checksum import fold, internet_checksum, ones_sum  # noqa: E402  the functions ours uses

# <linux/if_tun.h>, <linux/virtio_net.h> (as in tcpstack/io/tun.py and layers/link/handler.py)
TUNSETIFF = 0x400454CA
IFF_MULTI_QUEUE = 0x0100


def device_multi_queue(name: str) -> bool:
    """Whether the TUN device *name* was made with ``multi_queue`` (bench/run.py's is)."""
    try:
        with open(f"/sys/class/net/{name}/tun_flags") as f:
            return bool(int(f.read().strip(), 16) & IFF_MULTI_QUEUE)
    except (OSError, ValueError):
        return False


IFF_TUN, IFF_NO_PI, IFF_VNET_HDR = 0x0001, 0x1000, 0x4000
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM, TUN_F_TSO4 = 0x01, 0x02
VNET = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_LEN = VNET.size
VNET_F_NEEDS_CSUM, VNET_F_DATA_VALID = 1, 2
GSO_NONE, GSO_TCPV4 = 0, 1

IP_TCP = struct.Struct("!BBHHHBBH4s4sHHIIBBHHH")  # IPv4 header (20) + TCP header (20)
TCP_HDR = struct.Struct("!HHIIBBH")  # ports, seq, ack, data offset, flags, window
HDRS = 40
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
MASK = 0xFFFFFFFF
MSS = 1460  # what we offer: a 1500-byte MTU less 40 bytes of headers (RFC 9293 §3.7.1)
RCV_BUF = 1 << 19  # our stack's default recv_buffer
WSCALE = 7  # RFC 7323 §2.3
RTO = 0.5  # seconds without progress before a go-back-N
MAX_GSO = 65535  # an IPv4 datagram's largest size
PATTERN = 1_000_003  # bytes in the source's cyclic pattern (not a multiple of any MSS)

STATE_SYN_RCVD, STATE_ESTABLISHED, STATE_FIN_SENT, STATE_DONE = range(4)


class Endpoint:
    """The TUN device and every connection on it; :meth:`run` is the whole program."""

    def __init__(self, device: str, address: str, *, offload: bool, verify: bool, ack_every: int) -> None:
        self.fd = os.open("/dev/net/tun", os.O_RDWR)
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
        if device_multi_queue(device):  # the kernel refuses a multi-queue device without the flag
            flags |= IFF_MULTI_QUEUE
        fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", device.encode(), flags))
        # Both ways or not at all; the setting outlives us, so say "none" without offload too.
        fcntl.ioctl(self.fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 if offload else 0)
        os.set_blocking(self.fd, False)
        self.offload = offload
        self.verify = verify
        self.ack_every = ack_every
        self.addr = socket.inet_aton(address)
        self.read_size = VNET_LEN + MAX_GSO if offload else 1500
        self.conns: dict[tuple[bytes, int], Conn] = {}
        self.ident = 0
        self.bad_ip_checksum = 0
        self.hdr = bytearray((VNET_LEN if offload else 0) + HDRS)
        rng = random.Random(11)
        pattern = rng.randbytes(PATTERN)
        self.pattern = memoryview(pattern + pattern[:MAX_GSO])

    def close(self) -> None:
        if self.offload:
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, 0)
        os.close(self.fd)

    # ------------------------------------------------------------------ output

    def emit(self, c: Conn, flags: int, seq: int, payload: memoryview | bytes, options: bytes = b"") -> None:
        """One datagram (or, with offload, one super-segment of MSS-sized pieces) to the kernel."""
        n = len(payload)
        olen = len(options)
        tcp_len = 20 + olen + n
        self.ident = (self.ident + 1) & 0xFFFF
        h = self.hdr
        off = VNET_LEN if self.offload else 0
        IP_TCP.pack_into(
            h, off, 0x45, 0, 20 + tcp_len, self.ident, 0x4000, 64, 6, 0, self.addr, c.peer,
            c.port, c.peer_port, seq, c.rcv_nxt, (5 + olen // 4) << 4, flags,
            c.window if not flags & SYN else min(RCV_BUF, 0xFFFF), 0, 0,
        )  # fmt: skip
        mv = memoryview(h)
        struct.pack_into("!H", h, off + 10, internet_checksum(mv[off : off + 20]))  # RFC 791 §3.1
        if self.offload:
            # RFC 9293 §3.1 checksum left partial: the pseudo-header sum; the kernel completes it.
            csum = 0xFFFF ^ fold(c.pseudo + tcp_len)
            gso = n > c.mss
            VNET.pack_into(h, 0, VNET_F_NEEDS_CSUM, GSO_TCPV4 if gso else GSO_NONE, HDRS + olen,
                           c.mss if gso else 0, 20, 16)  # fmt: skip
        else:
            # RFC 9293 §3.1: pseudo-header, header (options included) and data.
            partial = ones_sum(mv[off + 20 :], c.pseudo + tcp_len)
            if olen:
                partial = ones_sum(options, partial)
            csum = internet_checksum(payload, partial)
        struct.pack_into("!H", h, off + 36, csum)
        parts: list[Any] = [h, options, payload] if olen else [h, payload]
        try:
            os.writev(self.fd, parts)
        except OSError as exc:  # a full queue: the go-back-N repairs it
            if exc.errno not in (errno.EAGAIN, errno.ENOBUFS):
                raise

    def ack(self, c: Conn) -> None:
        c.unacked = 0
        self.emit(c, ACK, c.snd_seq(c.snd_nxt + c.fin_sent), b"")  # after our FIN, FIN + 1

    # ------------------------------------------------------------------ input

    def frame(self, mv: memoryview) -> None:
        csum_ok = False
        if self.offload:
            if len(mv) <= VNET_LEN:
                return
            csum_ok = bool(mv[0] & (VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID))
            mv = mv[VNET_LEN:]
        if len(mv) < HDRS or mv[0] >> 4 != 4 or mv[9] != 6:
            return  # not IPv4 (RFC 791 §3.1) or not TCP
        ihl = (mv[0] & 0x0F) * 4
        total = (mv[2] << 8) | mv[3]
        if ihl < 20 or total > len(mv) or total < ihl + 20 or mv[16:20] != self.addr:
            return
        if internet_checksum(mv[:ihl]) != 0:  # RFC 791 §3.1
            self.bad_ip_checksum += 1
            return
        src = bytes(mv[12:16])
        tcp = mv[ihl:total]
        sport, dport, seq, ack, doff, flags, window = TCP_HDR.unpack_from(tcp)
        c = self.conns.get((src, sport))
        if c is None:
            if flags & (SYN | ACK | RST) == SYN and dport in (9, 80):
                c = self.conns[(src, sport)] = Conn(self, src, sport, dport, seq, tcp[20 : (doff >> 4) * 4])
                self.emit(c, SYN | ACK, c.iss, b"", c.syn_options())
            return
        if not csum_ok and internet_checksum(tcp, c.pseudo + len(tcp)) != 0:  # RFC 9293 §3.1
            c.bad_checksum += 1
            return
        c.segment(seq, ack, flags, window, tcp[(doff >> 4) * 4 :])

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        fd, readv = self.fd, os.readv
        buf = bytearray(self.read_size)  # one buffer, read into: no allocation per frame
        bufs, view = [buf], memoryview(buf)
        handle = self.frame
        print("ready", flush=True)
        while True:
            got = 0
            for _ in range(64):
                try:
                    n = readv(fd, bufs)
                except BlockingIOError:
                    break
                got += 1
                handle(view[:n])
            busy = False
            now = time.monotonic()
            for key, c in list(self.conns.items()):
                if c.unacked:
                    self.ack(c)  # the end of a batch: cumulative ACK for what it held
                if c.pump():
                    busy = True
                if c.state == STATE_DONE:
                    del self.conns[key]
                elif c.outstanding() and now - c.progress > RTO:
                    c.go_back_n(now)
            if not got and not busy:
                select.select([fd], [], [], 0.1)


class Conn:
    """One connection: a receiver (port 9) or a sender (port 80); offsets count stream bytes
    from 0, ``seq`` values are those offsets plus the initial sequence numbers, modulo 2**32."""

    def __init__(self, ep: Endpoint, peer: bytes, peer_port: int, port: int, irs: int, options: memoryview) -> None:
        self.ep = ep
        self.peer, self.peer_port, self.port = peer, peer_port, port
        self.pseudo = int.from_bytes(ep.addr + peer, "big") + 6  # RFC 9293 §3.1 pseudo-header
        self.iss = random.getrandbits(32)  # RFC 9293 §3.4.1 (unpredictable enough here)
        self.irs = irs
        self.rcv_nxt = (irs + 1) & MASK  # SYN consumed
        self.rcv_bytes = 0
        self.mss, self.snd_wscale = _syn_options(options)
        # RFC 7323 §2.2: scale our window only if the peer's SYN offered scaling too.
        self.window = RCV_BUF >> WSCALE if self.snd_wscale is not None else min(RCV_BUF, 0xFFFF)
        self.peer_fin = False
        self.snd_una = self.snd_nxt = 0  # stream offsets; the SYN is offset -1
        self.snd_max = 0
        self.snd_wnd = 0
        self.end = -1  # stream length to send (sender, once the request is read); -1: unknown
        self.fin_sent = False
        self.state = STATE_SYN_RCVD
        self.unacked = 0
        self.progress = time.monotonic()
        self.request = b""
        self.sha = hashlib.sha256() if ep.verify else None
        self.header_len = 0
        self.out_of_order = self.bad_checksum = self.timeouts = 0
        # Super-segments: whole MSS units up to the largest datagram (docs/architecture.md).
        self.seg_max = (MAX_GSO - HDRS) // self.mss * self.mss if ep.offload else self.mss
        self.response = b""

    def syn_options(self) -> bytes:
        # MSS (RFC 9293 §3.7.1), NOP + window scale (RFC 7323 §2.2) only because the SYN had it.
        opts = struct.pack("!BBH", 2, 4, MSS)
        if self.snd_wscale is not None:
            opts += struct.pack("!BBBB", 1, 3, 3, WSCALE)
        return opts

    def snd_seq(self, offset: int) -> int:
        return (self.iss + 1 + offset) & MASK

    def outstanding(self) -> bool:
        return self.state == STATE_SYN_RCVD or self.snd_una < self.snd_nxt + (1 if self.fin_sent else 0)

    def segment(self, seq: int, ack: int, flags: int, window: int, data: memoryview) -> None:
        ep = self.ep
        if flags & RST:
            self.state = STATE_DONE
            return
        if flags & SYN:  # the SYN again: our SYN-ACK was lost
            if self.state == STATE_SYN_RCVD:
                ep.emit(self, SYN | ACK, self.iss, b"", self.syn_options())
            return
        if not flags & ACK:
            return
        # RFC 9293 §3.10.7.4: an acceptable ACK advances SND.UNA; the window comes with it.
        sent = self.snd_nxt - self.snd_una + (1 if self.state == STATE_SYN_RCVD else 0) + (1 if self.fin_sent else 0)
        advance = (ack - self.snd_seq(self.snd_una)) & MASK
        if self.state == STATE_SYN_RCVD:
            advance = (ack - self.iss) & MASK
            if advance != 1:
                return
            self.state = STATE_ESTABLISHED
            self.progress = time.monotonic()
            advance = 0
        elif advance and advance <= sent:
            self.snd_una += advance
            self.progress = time.monotonic()
        self.snd_wnd = window << (self.snd_wscale or 0)  # RFC 7323 §2.3
        if self.peer_fin and self.fin_sent and self.snd_una > self.end:
            self.finish()  # our FIN acknowledged after theirs: closed (no TIME-WAIT)
        n = len(data)
        if n:
            offset = (seq - self.rcv_nxt) & MASK
            if offset:
                if offset < 0x80000000 or (0x100000000 - offset) >= n:
                    # RFC 5681 §4.2: an out-of-order segment is ACKed at once (a duplicate ACK).
                    self.out_of_order += 1
                    ep.ack(self)
                    return
                data = data[0x100000000 - offset :]  # a retransmission overlapping what we had
                n = len(data)
            self.rcv_nxt = (self.rcv_nxt + n) & MASK
            self.rcv_bytes += n
            if self.port == 9:
                if self.sha is not None:
                    self.sha.update(data)
            else:
                self.request += bytes(data)
                if self.end < 0 and b"\r\n\r\n" in self.request:
                    self.start_response()
            # RFC 5681 §4.2: an ACK at least every second full-sized segment (a super-segment
            # counts for all it holds).
            self.unacked += n // self.mss or 1
            if self.unacked >= ep.ack_every:
                ep.ack(self)
        elif flags & FIN and (seq - self.rcv_nxt) & MASK:
            return  # a FIN beyond a gap
        if flags & FIN and not self.peer_fin:
            self.peer_fin = True
            self.rcv_nxt = (self.rcv_nxt + 1) & MASK  # RFC 9293 §3.10.7.4 eighth step
            if self.port == 9:  # the discard service closes at EOF: ACK and FIN together
                self.end = self.snd_nxt
                self.fin_sent = True
                self.unacked = 0
                ep.emit(self, FIN | ACK, self.snd_seq(self.snd_nxt), b"")
            else:
                ep.ack(self)
                if self.fin_sent and self.snd_una > self.end:
                    self.finish()  # no TIME-WAIT: a measuring device
        elif flags & FIN:
            ep.ack(self)  # the FIN again: our ACK was lost

    def start_response(self) -> None:
        try:
            size = int(self.request.split(b" ", 2)[1].rsplit(b"/", 1)[1])
        except (IndexError, ValueError):
            size = 0
        self.response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size
        self.header_len = len(self.response)
        self.end = self.header_len + size

    def pump(self) -> bool:
        """Send what the peer's window allows (at most 64 segments); True if more is ready."""
        if self.end < 0 or self.fin_sent or self.state != STATE_ESTABLISHED:
            return False
        ep, h = self.ep, self.header_len
        pattern = ep.pattern
        for _ in range(64):
            nxt = self.snd_nxt
            room = self.snd_una + self.snd_wnd - nxt
            left = self.end - nxt
            if left <= 0:
                self.fin_sent = True  # RFC 9293 §3.10.4: FIN after the data
                ep.emit(self, FIN | ACK, self.snd_seq(nxt), b"")
                return False
            n = min(self.seg_max, left, room)
            if n < self.mss and n < left:
                return False  # RFC 1122 §4.2.3.4: no small segment while more is queued
            if nxt < h:
                payload: memoryview | bytes = self.response[nxt:h]
            else:
                n -= n % self.mss if n > self.mss and n < left else 0
                start = (nxt - h) % PATTERN
                payload = pattern[start : start + n]
                if self.sha is not None and nxt + n > self.snd_max:
                    self.sha.update(payload[max(0, self.snd_max - nxt) :])
            ep.emit(self, ACK | PSH if nxt + len(payload) == self.end else ACK, self.snd_seq(nxt), payload)
            self.unacked = 0
            self.snd_nxt = nxt + len(payload)
            self.snd_max = max(self.snd_max, self.snd_nxt)
        return True

    def go_back_n(self, now: float) -> None:
        self.timeouts += 1
        self.progress = now
        if self.state == STATE_SYN_RCVD:
            self.ep.emit(self, SYN | ACK, self.iss, b"", self.syn_options())
            return
        self.snd_nxt = self.snd_una
        if self.fin_sent and self.snd_una >= self.end:
            self.ep.emit(self, FIN | ACK, self.snd_seq(self.end), b"")
        else:
            self.fin_sent = False

    def finish(self) -> None:
        if self.state == STATE_DONE:
            return
        self.state = STATE_DONE
        report: dict[str, Any] = {
            "role": "receive" if self.port == 9 else "send",
            "port": self.port,
            "bytes": self.rcv_bytes if self.port == 9 else max(0, self.end - self.header_len),
            "out_of_order": self.out_of_order,
            "bad_checksum": self.bad_checksum + self.ep.bad_ip_checksum,
            "timeouts": self.timeouts,
        }
        if self.sha is not None:
            report["sha256"] = self.sha.hexdigest()
        print(json.dumps(report), flush=True)


def _syn_options(opts: memoryview) -> tuple[int, int | None]:
    """The peer's MSS (536 when absent, RFC 9293 §3.7.1) and window shift (RFC 7323 §2.2)."""
    mss, wscale = 536, None
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        length = opts[i + 1]
        if kind == 2 and length == 4:
            mss = (opts[i + 2] << 8) | opts[i + 3]
        elif kind == 3 and length == 3:
            wscale = min(opts[i + 2], 14)  # RFC 7323 §2.3
        i += length
    return min(mss, MSS), wscale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tun", default="tun0", help="TUN device (default tun0)")
    ap.add_argument("--address", default="10.0.0.2", help="our IPv4 address (default 10.0.0.2)")
    ap.add_argument("--offload", action="store_true", help="IFF_VNET_HDR with checksum and TSO offload")
    ap.add_argument("--verify", action="store_true", help="print the SHA-256 of what each connection moved")
    ap.add_argument("--ack-every", type=int, default=2, help="ACK every N full segments (default 2)")
    args = ap.parse_args(argv)
    ep = Endpoint(args.tun, args.address, offload=args.offload, verify=args.verify, ack_every=args.ack_every)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        ep.run()
    finally:
        ep.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
