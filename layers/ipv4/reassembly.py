"""IPv4 fragment reassembly (RFC 791 §3.2, RFC 1122 §3.3.2) with hard limits.

Policy, chosen for robustness (RFC 1858, and what Linux does since 2018):

- fragments are keyed by (source, destination, protocol, identification) (RFC 791 §3.2);
- an exact duplicate fragment is ignored; any other overlap discards the whole datagram
  ("teardrop" and overlap-based evasion get nothing through);
- a fragment whose end exceeds 65535 - 20 octets discards the datagram (ping of death);
- every fragment but the last carries a multiple of 8 octets (RFC 791 §3.2);
- the reassembly timer starts at the first fragment and is not restarted (RFC 1122 §3.3.2,
  "the reassembly timeout value SHOULD be a fixed value"); on expiry the datagram is discarded
  and, if its first fragment had arrived, the caller sends ICMP Time Exceeded code 1;
- at most ``max_datagrams`` partial datagrams, ``max_fragments`` fragments each, and
  ``max_bytes`` octets in total are held: past that the oldest partial datagram is evicted.
"""

from __future__ import annotations

import bisect
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import islice

from framework.checksum import internet_checksum
from framework.errors import WireError
from layers.ipv4.wire import FLAG_DF, HEADER_LEN, MAX_DATAGRAM, Ipv4Repr

Key = tuple[bytes, bytes, int, int]


@dataclass(slots=True)
class _Partial:
    deadline: float
    starts: list[int] = field(default_factory=list)  # sorted fragment starts
    frags: list[tuple[int, bytes]] = field(default_factory=list)  # (start, data), same order
    total: int | None = None  # payload length, known once the last fragment arrived
    first: bytes | None = None  # original header + data of fragment 0 (for ICMP quoting)
    first_header: Ipv4Repr | None = None
    held: int = 0


@dataclass(slots=True)
class Expired:
    """A datagram that timed out; ``first`` is fragment 0 (header included) if it arrived."""

    key: Key
    first: bytes | None
    first_header_len: int


class Reassembler:
    """Holds partial datagrams until complete, expired or evicted.

    :meth:`add` raises :class:`WireError` (layer ``"ipv4"``) for a fragment that is dropped;
    the reason names why (``overlap``, ``too_big``, ``bad_fragment``, ...).
    """

    def __init__(
        self,
        *,
        timeout: float = 60.0,
        max_datagrams: int = 64,
        max_fragments: int = 128,
        max_bytes: int = 1 << 20,
    ) -> None:
        self.timeout = timeout
        self.max_datagrams = max_datagrams
        self.max_fragments = max_fragments
        self.max_bytes = max_bytes
        self._partial: OrderedDict[Key, _Partial] = OrderedDict()  # oldest first
        self.bytes_held = 0
        self.evicted = 0
        self.duplicates = 0

    def __len__(self) -> int:
        return len(self._partial)

    def poll_at(self) -> float | None:
        if not self._partial:
            return None
        return next(iter(self._partial.values())).deadline

    def add(
        self, header: Ipv4Repr, payload: memoryview, raw: memoryview, *, now: float
    ) -> tuple[Ipv4Repr, bytes] | None:
        """Add one fragment; return ``(header, datagram)`` of the whole datagram once complete.

        ``datagram`` is the reassembled datagram, header included: fragment 0's header (options
        kept) with Total Length, MF and offset updated and the checksum recomputed, as Linux's
        ``ip_frag_reasm`` does, so an ICMP error about it quotes its own header (RFC 1122
        §3.2.2); the data starts at ``header.header_len``.

        :param raw: the fragment as received (header included), kept for fragment 0 so a
            Time Exceeded message can quote it.
        """
        start = header.frag_offset
        size = len(payload)
        end = start + size
        if size == 0:
            raise WireError("ipv4", "bad_fragment")
        if end > MAX_DATAGRAM - HEADER_LEN:
            self._discard((header.src, header.dst, header.protocol, header.ident))
            raise WireError("ipv4", "too_big")
        if header.more_frags and size % 8:
            raise WireError("ipv4", "bad_fragment")
        key = (header.src, header.dst, header.protocol, header.ident)
        p = self._partial.get(key)
        if p is None:
            p = _Partial(deadline=now + self.timeout)
            self._partial[key] = p
        if not header.more_frags:
            if p.total is not None and p.total != end:
                self._discard(key)
                raise WireError("ipv4", "inconsistent")
            if p.starts and p.frags[-1][0] + len(p.frags[-1][1]) > end:
                self._discard(key)
                raise WireError("ipv4", "inconsistent")
            p.total = end
        elif p.total is not None and end > p.total:
            self._discard(key)
            raise WireError("ipv4", "inconsistent")

        i = bisect.bisect_left(p.starts, start)
        # Exact duplicate: same place, same bytes.
        if i < len(p.starts) and p.starts[i] == start and len(p.frags[i][1]) == size:
            if p.frags[i][1] == payload:
                self.duplicates += 1
                raise WireError("ipv4", "duplicate_fragment")
            self._discard(key)
            raise WireError("ipv4", "overlap")
        # Any other overlap with the neighbour before or after discards the datagram.
        if i > 0 and p.starts[i - 1] + len(p.frags[i - 1][1]) > start:
            self._discard(key)
            raise WireError("ipv4", "overlap")
        if i < len(p.starts) and p.starts[i] < end:
            self._discard(key)
            raise WireError("ipv4", "overlap")
        if len(p.frags) >= self.max_fragments:
            self._discard(key)
            raise WireError("ipv4", "too_many_fragments")

        data = bytes(payload)
        p.starts.insert(i, start)
        p.frags.insert(i, (start, data))
        p.held += size
        self.bytes_held += size
        if start == 0:
            p.first = bytes(raw)
            p.first_header = header
        self._enforce_limits(keep=key)
        if key not in self._partial:
            raise WireError("ipv4", "reassembly_full")

        if p.total is None or p.first_header is None:
            return None
        # Complete when the fragments tile [0, total): they are disjoint and within it (any
        # overlap or overreach discarded the datagram above), so a count suffices (O(1)).
        if p.held != p.total:
            return None
        pos = p.total
        self._discard(key)
        h = p.first_header
        hl = h.header_len
        # RFC 791 §3.1: Total Length is 16 bits; fragment 0's options can push header + data past it.
        if hl + pos > MAX_DATAGRAM:
            raise WireError("ipv4", "too_big")
        assert p.first is not None  # set together with first_header
        datagram = bytearray(p.first[:hl])
        datagram += b"".join(d for _, d in p.frags)
        struct.pack_into("!HHH", datagram, 2, hl + pos, h.ident, FLAG_DF if h.dont_frag else 0)
        struct.pack_into("!H", datagram, 10, 0)
        struct.pack_into("!H", datagram, 10, internet_checksum(memoryview(datagram)[:hl]))
        whole = Ipv4Repr(h.src, h.dst, h.protocol, pos, h.ttl, h.tos, h.ident, h.dont_frag, False, 0, hl)
        return whole, bytes(datagram)

    def expire(self, now: float) -> list[Expired]:
        """Discard every partial datagram whose timer ran out by *now*."""
        out: list[Expired] = []
        while self._partial:
            key, p = next(iter(self._partial.items()))
            if p.deadline > now:
                break
            self._discard(key)
            hl = p.first_header.header_len if p.first_header else HEADER_LEN
            out.append(Expired(key, p.first, hl))
        return out

    def _discard(self, key: Key) -> None:
        p = self._partial.pop(key, None)
        if p is not None:
            self.bytes_held -= p.held

    def _enforce_limits(self, keep: Key) -> None:
        while self._partial and (len(self._partial) > self.max_datagrams or self.bytes_held > self.max_bytes):
            oldest = next(iter(self._partial))
            if oldest == keep and len(self._partial) == 1:
                # A single datagram larger than the whole budget cannot be reassembled.
                self._discard(keep)
                self.evicted += 1
                return
            victim = oldest if oldest != keep else next(islice(self._partial, 1, None))  # O(1)
            self._discard(victim)
            self.evicted += 1
