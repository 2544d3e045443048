"""A set of disjoint half-open integer intervals with O(log n) updates and lookups.

The receive buffer's out-of-order blocks and the SACK scoreboard's ranges are such sets, and a
peer chooses how many there are (one per byte, with holes between): every per-segment operation
on them must cost O(log n), never a walk over all of them. The starts live in a
:class:`sortedcontainers.SortedDict` (start -> end); an operation touches only the intervals
that overlap what it changes, and each interval it merges away is gone for good, so a long
merge is paid for by the inserts that made the intervals (amortized O(log n) each).

Touching intervals merge (``[0, 5)`` and ``[5, 9)`` become ``[0, 9)``). ``total`` is the number
of integers covered, kept up to date by every update.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from typing import Any

from sortedcontainers import SortedDict

# Every empty set shares this one, never mutated: a SortedDict costs ~1.6 KB (it binds a dozen
# methods per instance), and an idle connection has five empty sets (its receive buffer's and
# its SACK scoreboard's). The first add() gives a set its own.
_EMPTY: Any = SortedDict()


class IntervalSet:
    """Disjoint, non-touching ``[start, end)`` intervals in ascending order.

    Compares equal to the list of its intervals (``sb.sacked == [(2000, 5000)]``), iterates
    in ascending order and indexes by position (``s[-1]`` is the highest interval, O(log n)).
    """

    __slots__ = ("_d", "total")

    def __init__(self) -> None:
        self._d: Any = _EMPTY  # start -> end; its own SortedDict from the first add()
        self.total = 0

    # ------------------------------------------------------------------ read

    def __len__(self) -> int:
        return len(self._d)

    def __bool__(self) -> bool:
        return bool(self._d)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._d.items())

    def __reversed__(self) -> Iterator[tuple[int, int]]:
        d = self._d
        return ((s, d[s]) for s in reversed(d))

    def __getitem__(self, index: int) -> tuple[int, int]:
        item: tuple[int, int] = self._d.peekitem(index)
        return item

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IntervalSet):
            return list(self) == list(other)
        if isinstance(other, list):
            return list(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"IntervalSet({list(self)!r})"

    # The lookups bisect the sorted key list's own sublists (``_maxes``, ``_lists``: the layout
    # sortedcontainers 2.x documents in its implementation notes, pinned in pyproject.toml):
    # two C bisections, where its public irange() costs a generator and a slice per call.

    def _floor(self, pos: int) -> int | None:
        """The start of the interval that starts at or below *pos*, if any."""
        keys = self._d._list
        maxes = keys._maxes
        if not maxes:
            return None
        i = bisect_right(maxes, pos)
        if i == len(maxes):
            return int(maxes[-1])
        sub = keys._lists[i]
        j = bisect_right(sub, pos)
        if j:
            return int(sub[j - 1])
        return int(maxes[i - 1]) if i else None

    def _keys_above(self, key: int, *, inclusive: bool) -> Iterator[int]:
        """Keys at or above (*inclusive*) or above *key*, ascending, lazily."""
        keys = self._d._list
        maxes = keys._maxes
        bisect = bisect_left if inclusive else bisect_right
        i = bisect(maxes, key)
        if i == len(maxes):
            return
        lists = keys._lists
        sub = lists[i]
        j = bisect(sub, key)
        while True:
            n = len(sub)
            while j < n:
                yield sub[j]
                j += 1
            i += 1
            if i == len(lists):
                return
            sub = lists[i]
            j = 0

    def _keys_from(self, pos: int) -> Iterator[int]:
        """Starts of the intervals that end above *pos*, ascending (lazily: bisections, never a
        walk from the lowest interval nor the sorted list's positional index)."""
        s = self._floor(pos)
        if s is not None and self._d[s] > pos:
            return self._keys_above(s, inclusive=True)
        return self._keys_above(pos, inclusive=False)

    def find(self, pos: int) -> tuple[int, int] | None:
        """The interval containing *pos*, if any."""
        s = self._floor(pos)
        if s is None:
            return None
        e: int = self._d[s]
        return (s, e) if pos < e else None

    def covers(self, start: int, end: int) -> bool:
        """True if one interval holds all of ``[start, end)``."""
        found = self.find(start)
        return found is not None and end <= found[1]

    def next_start_after(self, pos: int) -> int | None:
        """The start of the first interval that begins above *pos*."""
        for s in self._keys_above(pos, inclusive=False):
            return s
        return None

    def first(self) -> tuple[int, int]:
        """The lowest interval (the set must not be empty)."""
        item: tuple[int, int] = self._d.peekitem(0)
        return item

    def last(self) -> tuple[int, int]:
        """The highest interval (the set must not be empty)."""
        item: tuple[int, int] = self._d.peekitem(-1)
        return item

    def iter_from(self, pos: int) -> Iterator[tuple[int, int]]:
        """The intervals that end above *pos*, ascending. Do not change the set meanwhile."""
        d = self._d
        return ((s, d[s]) for s in self._keys_from(pos))

    def count_between(self, start: int, end: int, limit: int) -> int:
        """How many intervals overlap ``[start, end)``, counting up to *limit* at most."""
        n = 0
        if end > start:
            for s in self._keys_from(start):
                if s >= end or n >= limit:
                    break
                n += 1
        return n

    def top(self, k: int) -> list[tuple[int, int]]:
        """Up to *k* highest intervals, highest first."""
        d = self._d
        out: list[tuple[int, int]] = []
        for s in reversed(d):
            if len(out) >= k:
                break
            out.append((s, d[s]))
        return out

    def overlap(self, start: int, end: int) -> int:
        """How many integers of ``[start, end)`` the set covers (work: the intervals met)."""
        got = 0
        if end <= start or not self._d:
            return got
        d = self._d
        for s in self._keys_from(start):
            if s >= end:
                break
            got += min(d[s], end) - max(s, start)
        return got

    def gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` the set does not cover, in order."""
        out: list[tuple[int, int]] = []
        if end <= start:
            return out
        d = self._d
        pos = start
        for s in self._keys_from(start):
            if s >= end:
                break
            if s > pos:
                out.append((pos, s))
            pos = max(pos, d[s])
            if pos >= end:
                break
        if pos < end:
            out.append((pos, end))
        return out

    # ------------------------------------------------------------------ update

    def add(self, start: int, end: int) -> int:
        """Add ``[start, end)``, merging what it overlaps or touches; return how many integers
        were new."""
        if end <= start:
            return 0
        d = self._d
        if d is _EMPTY:
            d = self._d = SortedDict()
        lo, hi = start, end
        s0 = self._floor(start)
        if s0 is not None and d[s0] >= start:  # overlaps or touches the interval before
            if d[s0] >= end:
                return 0
            lo = s0
        # Every interval from lo that starts at or before `end` merges into the new one.
        merged = []
        for s in self._keys_above(lo, inclusive=True):
            if s > end:
                break
            merged.append(s)
        covered = 0
        for s in merged:
            e = d.pop(s)
            covered += e - s
            if e > hi:
                hi = e
        d[lo] = hi
        new = (hi - lo) - covered
        self.total += new
        return new

    def remove(self, start: int, end: int) -> int:
        """Remove ``[start, end)``; return how many integers were removed."""
        if end <= start or not self._d:
            return 0
        d = self._d
        hit = []
        for s in self._keys_from(start):
            if s >= end:
                break
            hit.append(s)
        removed = 0
        for s in hit:
            e = d.pop(s)
            removed += min(e, end) - max(s, start)
            if s < start:
                d[s] = start
            if e > end:
                d[end] = e
        self.total -= removed
        return removed

    def cut_below(self, pos: int) -> int:
        """Remove everything below *pos*; return how many integers were removed."""
        d = self._d
        removed = 0
        while d:
            s, e = d.peekitem(0)
            if s >= pos:
                break
            del d[s]
            if e > pos:
                d[pos] = e
                removed += pos - s
                break
            removed += e - s
        self.total -= removed
        return removed

    def pop_first(self) -> tuple[int, int]:
        """Remove and return the lowest interval."""
        s, e = self._d.popitem(0)
        self.total -= e - s
        return (s, e)

    def clear(self) -> None:
        self._d = _EMPTY  # the memory goes with the old one
        self.total = 0
