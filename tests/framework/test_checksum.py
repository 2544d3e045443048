"""The Internet checksum (RFC 1071) against a word-by-word reference implementation."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from framework.checksum import fold, internet_checksum, ones_sum


def reference_checksum(data: bytes) -> int:
    """RFC 1071 §1 done the slow, obvious way: 16-bit words, end-around carry, complement."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


zero_data = st.integers(min_value=0, max_value=200).map(bytes)
any_data = st.one_of(st.binary(max_size=300), zero_data)


@given(any_data)
def test_matches_reference(data: bytes) -> None:
    """For any bytes (odd lengths and all zeros included) the fast checksum equals the reference."""
    assert internet_checksum(data) == reference_checksum(data)


@given(any_data)
def test_accepts_bytearray_and_memoryview(data: bytes) -> None:
    """bytes, bytearray and memoryview of the same data give the same checksum."""
    expected = internet_checksum(data)
    assert internet_checksum(bytearray(data)) == expected
    assert internet_checksum(memoryview(data)) == expected


@given(st.binary(max_size=300), st.data())
def test_buffer_with_its_own_checksum_verifies_to_zero(data: bytes, draw: st.DataObject) -> None:
    """Storing the checksum in a zeroed field at an even offset makes the whole buffer sum to 0."""
    offset = draw.draw(st.integers(min_value=0, max_value=len(data) // 2)) * 2
    buf = bytearray(data[:offset] + b"\x00\x00" + data[offset:])
    buf[offset : offset + 2] = internet_checksum(buf).to_bytes(2, "big")
    assert internet_checksum(buf) == 0
    assert reference_checksum(bytes(buf)) == 0


def test_rfc1071_example() -> None:
    """RFC 1071 §3's example bytes sum to 0xddf2, so the checksum is 0x220d."""
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert 0xFFFF - fold(ones_sum(data)) == 0xDDF2
    assert internet_checksum(data) == 0x220D
    assert reference_checksum(data) == 0x220D


def test_edge_values() -> None:
    """Empty and all-zero data give 0xFFFF; a sum of 0xFFFF ("negative zero") gives 0."""
    assert internet_checksum(b"") == 0xFFFF
    assert internet_checksum(bytes(7)) == 0xFFFF
    assert internet_checksum(b"\xff\xff") == 0
    assert internet_checksum(b"\xff\xfe\x00\x01") == 0
    assert internet_checksum(b"\x01") == 0xFEFF  # an odd byte is padded on the right (RFC 1071 §1)


@given(st.binary(max_size=200).map(lambda b: b[: len(b) & ~1]), st.binary(max_size=200))
def test_partial_sums_add_up(head: bytes, tail: bytes) -> None:
    """A partial sum of an even-length head, passed as ``initial``, equals checksumming head + tail."""
    whole = internet_checksum(head + tail)
    assert internet_checksum(tail, ones_sum(head)) == whole
    assert fold(ones_sum(head) + ones_sum(tail)) == whole
    assert internet_checksum(tail, initial=ones_sum(head, 0)) == reference_checksum(head + tail)
