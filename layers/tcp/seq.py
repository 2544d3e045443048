"""Sequence-number arithmetic modulo 2**32 (RFC 9293 §3.4).

"It is essential to remember that the actual sequence number space is finite, though very
large ... all arithmetic dealing with sequence numbers must be performed modulo 2**32."
Comparisons use the half-space rule: *a* is before *b* when ``(b - a) mod 2**32`` is in
``(0, 2**31)``. ``Seq`` is a ``NewType`` over ``int``: the type checker keeps sequence numbers
apart from lengths at zero run-time cost.
"""

from __future__ import annotations

from typing import Final, NewType

Seq = NewType("Seq", int)

MASK: Final = 0xFFFFFFFF
HALF: Final = 0x80000000


def seq_add(a: int, n: int) -> Seq:
    """``a + n`` modulo 2**32 (``n`` may be negative)."""
    return Seq((a + n) & MASK)


def seq_diff(a: int, b: int) -> int:
    """The signed distance ``a - b`` in sequence space, in ``[-2**31, 2**31)``."""
    return ((a - b + HALF) & MASK) - HALF


def seq_lt(a: int, b: int) -> bool:
    """``a < b`` in sequence space."""
    return ((a - b + HALF) & MASK) < HALF


def seq_le(a: int, b: int) -> bool:
    """``a <= b`` in sequence space."""
    return ((a - b + HALF) & MASK) <= HALF


def seq_gt(a: int, b: int) -> bool:
    return seq_lt(b, a)


def seq_ge(a: int, b: int) -> bool:
    return seq_le(b, a)


def seq_in(x: int, start: int, end: int) -> bool:
    """``start <= x < end`` in sequence space (an empty range contains nothing)."""
    return ((x - start) & MASK) < ((end - start) & MASK)
