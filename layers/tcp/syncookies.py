"""SYN cookies (RFC 4987 §3.6): a listener answers a SYN without keeping any state.

The initial sequence number of the SYN-ACK *is* the state: a keyed hash of the 4-tuple, the
peer's ISN, a minute counter and an index into a small MSS table, laid out as Linux lays it
out (``net/ipv4/syncookies.c``)::

    cookie = H1(4-tuple) + SEG.SEQ + (count << 24) + ((H2(4-tuple, count) + mss_index) mod 2**24)

When the peer's ACK comes back, ``SEG.ACK - 1`` is the cookie and ``SEG.SEQ - 1`` the peer's
ISN, so the listener can check the hash, the age (the minute counter may be at most one
period behind: Linux's ``MAX_SYNCOOKIE_AGE`` of 2) and recover the MSS. The key changes every
minute (it hashes the counter with the secret), so a cookie cannot be replayed past its age.

What else the SYN negotiated (window scale, SACK-permitted, ECN) has no room in 32 bits; as in
Linux it travels in the low bits of the SYN-ACK's TSval when the peer offered timestamps, and
comes back in the ACK's TSecr. Each option plugin encodes and decodes its own part through a
:class:`SynCookieCodec` it registers with its feature (``add_feature(registry, ..., syncookie=)``);
this module never imports a plugin. Without timestamps a cookie carries only the MSS, and the
cookie SYN-ACK offers no other option (the connection then runs without them, as Linux's).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from layers.tcp.policy import TcpOptions
from layers.tcp.seq import MASK
from layers.tcp.wire import TcpRepr

# Linux's msstab for IPv4 (net/ipv4/syncookies.c) and small entries down to 48 (Linux's floor,
# tcp_min_snd_mss), so a peer with a small MSS is not sent more than it asked for (RFC 9293
# §3.7.1, MUST-15): the largest entry not above the peer's MSS.
MSS_TABLE = (48, 88, 256, 536, 1300, 1440, 1460)
PERIOD = 60.0  # seconds per counter step (Linux: TCP_SYNCOOKIE_PERIOD)
MAX_AGE = 2  # counter steps a cookie stays valid (Linux: MAX_SYNCOOKIE_AGE)
VALID_FOR = MAX_AGE * PERIOD  # cookies are checked this long after the last one was sent
OPTION_BITS = 6  # bits of the TSval the options may use (Linux: TSBITS)
_COUNT_SHIFT = 24
_LOW = (1 << _COUNT_SHIFT) - 1


class SynCookieCodec:
    """A feature's part of a SYN cookie. Stateless and shared by every listener of a stack.

    An option codec (window scaling, SACK, ECN) says how many ``bits`` it needs; a *carrier*
    (timestamps) puts the packed option bits in its option and gets them back. The layer calls,
    only for features enabled on the listener:

    - :meth:`encode` on each option codec while it builds a cookie SYN-ACK (only when the
      carrier could carry the bits): add the option to *synack* if the peer's *syn* offered it
      and return the value to remember (``0 <= value < 2**bits``);
    - :meth:`decode` when a valid cookie ACK arrives: put the remembered *value* back on the
      synthetic SYN the connection is then built from, as if the peer's SYN had said it;
      ``False`` means the value is impossible (the cookie is rejected).

    A carrier instead implements :meth:`carry`, :meth:`recover` and :meth:`restore`.
    """

    bits = 0
    carrier = False
    order = 50
    """Codecs take their bits in ascending ``order`` (then by feature name)."""

    def encode(self, syn: TcpRepr, synack: TcpRepr, settings: Any, options: TcpOptions) -> int:
        return 0

    def decode(self, value: int, syn: TcpRepr, settings: Any) -> bool:
        return True

    def offered(self, syn: TcpRepr) -> bool:
        """Carrier: whether the peer's *syn* offered the option that carries the bits."""
        return False

    def carry(self, syn: TcpRepr, synack: TcpRepr, bits: int, iss: int, now: float) -> None:
        """Carrier: put *bits* (``OPTION_BITS`` wide) in *synack*'s option (only called when
        :meth:`offered`)."""

    def recover(self, ack: TcpRepr) -> int | None:
        """Carrier: the option bits echoed by the peer's ACK, or ``None`` if it has no option."""
        return None

    def restore(self, ack: TcpRepr, syn: TcpRepr) -> None:
        """Carrier: put the option on the synthetic SYN (from what the ACK carries)."""


@dataclass(slots=True)
class ListenerCodecs:
    """The codecs of the features enabled on one listener, with their bit positions."""

    carrier: tuple[SynCookieCodec, Any] | None
    options: list[tuple[SynCookieCodec, Any, int]]  # (codec, feature settings, shift)
    skipped: list[str]  # features whose bits did not fit (their option is not offered)


def plan(codecs: list[tuple[str, SynCookieCodec, Any]]) -> ListenerCodecs:
    """Assign bit positions to the option codecs of one listener's features."""
    carrier = next(((c, s) for _, c, s in codecs if c.carrier), None)
    options: list[tuple[SynCookieCodec, Any, int]] = []
    skipped: list[str] = []
    shift = 0
    for name, codec, settings in sorted(codecs, key=lambda t: (t[1].order, t[0])):
        if codec.carrier or codec.bits <= 0:
            continue
        if shift + codec.bits > OPTION_BITS:
            skipped.append(name)
            continue
        options.append((codec, settings, shift))
        shift += codec.bits
    return ListenerCodecs(carrier, options, skipped)


class SynCookies:
    """Cookie arithmetic for one stack, keyed with *key* (16+ random bytes)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = hashlib.blake2s(key, person=b"syncook").digest()

    def _hash(self, material: bytes, count: int | None, bits: int) -> int:
        extra = b"" if count is None else (count & 0xFFFFFFFF).to_bytes(4, "big")
        digest = hashlib.blake2s(material + extra, key=self._key, digest_size=4).digest()
        return int.from_bytes(digest, "big") & ((1 << bits) - 1)

    @staticmethod
    def counter(now: float) -> int:
        return int(now // PERIOD)

    def make(self, material: bytes, peer_isn: int, mss_index: int, now: float) -> int:
        """The cookie ISN for a SYN with sequence number *peer_isn* from the 4-tuple *material*."""
        count = self.counter(now)
        low = (self._hash(material, count, 24) + mss_index) & _LOW
        return (self._hash(material, None, 32) + peer_isn + ((count & 0xFF) << _COUNT_SHIFT) + low) & MASK

    def check(self, material: bytes, peer_isn: int, cookie: int, now: float) -> int | None:
        """The MSS index a valid *cookie* encodes, or ``None`` (forged, or too old)."""
        value = (cookie - self._hash(material, None, 32) - peer_isn) & MASK
        count = self.counter(now)
        age = (count - (value >> _COUNT_SHIFT)) & 0xFF
        if age >= MAX_AGE:  # Linux: older than MAX_SYNCOOKIE_AGE counter periods
            return None
        index = ((value & _LOW) - self._hash(material, count - age, 24)) & _LOW
        return index if index < len(MSS_TABLE) else None


def mss_index(mss: int | None) -> int:
    """The table entry that fits a peer's MSS option (536 without one, RFC 9293 §3.7.1)."""
    peer = mss if mss else 536  # RFC 9293 §3.7.1: 536 without the option
    index = 0  # below 48 too: Linux never sends less than tcp_min_snd_mss = 48 either
    for i, value in enumerate(MSS_TABLE):
        if value <= peer:
            index = i
    return index


__all__ = ["MSS_TABLE", "OPTION_BITS", "VALID_FOR", "ListenerCodecs", "SynCookieCodec", "SynCookies", "plan"]
