"""Raw IPv4/TCP/ICMP frames for the attack and fuzz benchmarks (bench/attack.py, bench/fuzz.py).

Plain byte builders with RFC 1071 checksums (framework.checksum), so a caller can also build a
frame the stack's own emitters never would (a bad data offset, a truncated option, a wrong
checksum). Nothing here sends anything.
"""

from __future__ import annotations

import socket
import struct

from framework.checksum import internet_checksum

PROTO_ICMP = 1
PROTO_TCP = 6

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")


def addr(text: str) -> bytes:
    return socket.inet_aton(text)


def ipv4(
    src: bytes,
    dst: bytes,
    proto: int,
    payload: bytes,
    *,
    ident: int = 0,
    ttl: int = 64,
    tos: int = 0,
    flags_frag: int = 0x4000,
    options: bytes = b"",
    total_length: int | None = None,
    good_checksum: bool = True,
) -> bytes:
    """An IPv4 datagram (RFC 791 §3.1); *flags_frag* is the 16-bit flags + fragment offset word
    (default DF). *options* must be a multiple of 4 bytes for a consistent IHL."""
    ihl = 5 + len(options) // 4
    length = 20 + len(options) + len(payload) if total_length is None else total_length
    hdr = _IP.pack(0x40 | ihl, tos, length & 0xFFFF, ident & 0xFFFF, flags_frag, ttl, proto, 0, src, dst) + options
    csum = internet_checksum(hdr) if good_checksum else 0x1234
    return hdr[:10] + csum.to_bytes(2, "big") + hdr[12:] + payload


def tcp_options(
    *,
    mss: int | None = None,
    wscale: int | None = None,
    sack_perm: bool = False,
    ts: tuple[int, int] | None = None,
    sack: list[tuple[int, int]] | None = None,
) -> bytes:
    """Well-formed TCP options, padded with NOPs to a multiple of 4 bytes."""
    out = b""
    if mss is not None:
        out += struct.pack("!BBH", 2, 4, mss)
    if wscale is not None:
        out += bytes((1, 3, 3, wscale))
    if sack_perm:
        out += bytes((1, 1, 4, 2))
    if ts is not None:
        out += struct.pack("!BBBBII", 1, 1, 8, 10, ts[0] & 0xFFFFFFFF, ts[1] & 0xFFFFFFFF)
    if sack:
        out += bytes((1, 1, 5, 2 + 8 * len(sack))) + b"".join(
            struct.pack("!II", a & 0xFFFFFFFF, b & 0xFFFFFFFF) for a, b in sack
        )
    return out + b"\x01" * (-len(out) % 4)


def tcp(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    *,
    window: int = 65535,
    options: bytes = b"",
    payload: bytes = b"",
    urgent: int = 0,
    data_offset: int | None = None,
    reserved: int = 0,
    good_checksum: bool = True,
) -> bytes:
    """A TCP segment (RFC 9293 §3.1) with its checksum over the IPv4 pseudo-header (§3.1)."""
    doff = (20 + len(options)) // 4 if data_offset is None else data_offset
    hdr = _TCP.pack(
        sport & 0xFFFF,
        dport & 0xFFFF,
        seq & 0xFFFFFFFF,
        ack & 0xFFFFFFFF,
        (doff & 0xF) << 4 | (reserved & 0xF),
        flags & 0xFF,
        window & 0xFFFF,
        0,
        urgent & 0xFFFF,
    )
    seg = hdr + options + payload
    if good_checksum:
        pseudo = src + dst + struct.pack("!BBH", 0, PROTO_TCP, len(seg))
        csum = internet_checksum(pseudo + seg)
    else:
        csum = 0xBEEF
    return seg[:16] + csum.to_bytes(2, "big") + seg[18:]


def tcp_frame(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, **kw: object) -> bytes:
    """An IPv4 datagram carrying :func:`tcp` (*kw*: ``ident``/``tos``/``ttl`` for IPv4, the rest
    for TCP)."""
    ip_kw = {k: kw.pop(k) for k in ("ident", "tos", "ttl") if k in kw}
    return ipv4(src, dst, PROTO_TCP, tcp(src, dst, sport, dport, seq, ack, flags, **kw), **ip_kw)  # type: ignore[arg-type]


def icmp(type_: int, code: int, rest: bytes = b"\0\0\0\0", data: bytes = b"", *, good_checksum: bool = True) -> bytes:
    """An ICMP message (RFC 792): type, code, checksum, 4 bytes of *rest*, then *data*."""
    msg = bytes((type_ & 0xFF, code & 0xFF, 0, 0)) + rest[:4].ljust(4, b"\0") + data
    csum = internet_checksum(msg) if good_checksum else 0x4321
    return msg[:2] + csum.to_bytes(2, "big") + msg[4:]


def fix_ip_checksum(frame: bytes) -> bytes:
    """*frame* with a correct IPv4 header checksum where its IHL allows one."""
    if len(frame) < 20:
        return frame
    ihl = (frame[0] & 0x0F) * 4
    if not 20 <= ihl <= len(frame):
        return frame
    hdr = frame[:10] + b"\0\0" + frame[12:ihl]
    return hdr[:10] + internet_checksum(hdr).to_bytes(2, "big") + frame[12:]


def fix_tcp_checksum(frame: bytes) -> bytes:
    """*frame* with correct IPv4 and TCP checksums where its lengths allow (unfragmented TCP)."""
    frame = fix_ip_checksum(frame)
    if len(frame) < 40 or frame[9] != PROTO_TCP:
        return frame
    ihl = (frame[0] & 0x0F) * 4
    total = int.from_bytes(frame[2:4], "big")
    if not (20 <= ihl and ihl + 20 <= total <= len(frame)):
        return frame
    seg = bytearray(frame[ihl:total])
    if len(seg) < 18:
        return frame
    seg[16:18] = b"\0\0"
    pseudo = frame[12:20] + struct.pack("!BBH", 0, PROTO_TCP, len(seg))
    seg[16:18] = internet_checksum(pseudo + bytes(seg)).to_bytes(2, "big")
    return frame[:ihl] + bytes(seg) + frame[total:]


def parse_tcp(frame: bytes) -> tuple[bytes, bytes, int, int, int, int, int, bytes] | None:
    """``(src, dst, sport, dport, seq, ack, flags, options)`` of an IPv4/TCP frame, or ``None``."""
    if len(frame) < 40 or frame[0] >> 4 != 4 or frame[9] != PROTO_TCP:
        return None
    ihl = (frame[0] & 0x0F) * 4
    if len(frame) < ihl + 20:
        return None
    sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", frame, ihl)
    opts = frame[ihl + 20 : ihl + (off >> 4) * 4]
    return frame[12:16], frame[16:20], sport, dport, seq, ack, flags, opts
