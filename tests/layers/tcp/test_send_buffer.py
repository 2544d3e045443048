"""The send buffer (layers/tcp/buffers.py ``SendBuffer``) against a model (a ``bytes`` of what is
unacknowledged), under random writes (bytes, views, bytearrays, views of 2-byte items), ACKs and
views held across them: the same bytes, and every view unchanged while it lives."""

from __future__ import annotations

import array

from hypothesis import given, settings
from hypothesis import strategies as st

from layers.tcp.buffers import SendBuffer

ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 70_000), st.sampled_from(["bytes", "view", "bytearray", "words"])),
        st.tuples(st.just("ack"), st.integers(0, 80_000), st.just("")),
        st.tuples(st.just("hold"), st.integers(0, 70_000), st.just("")),
        st.tuples(st.just("release"), st.integers(0, 5), st.just("")),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.sampled_from([1, 1000, 65_536, 200_000, 1 << 20]), script=ops)
def test_send_buffer_is_its_model(capacity: int, script: list[tuple[str, int, str]]) -> None:
    buf = SendBuffer(capacity)
    model = b""
    held: list[tuple[memoryview, bytes]] = []
    counter = 0
    for op, n, kind in script:
        if op == "write":
            counter += 1
            data = bytes((counter + i) & 0xFF for i in range(min(n, 3))) * (n // 3 + 1)
            data = data[: n - n % 2] if kind == "words" else data[:n]
            arg: bytes | bytearray | memoryview = data
            if kind == "view":
                arg = memoryview(data)
            elif kind == "bytearray":
                arg = bytearray(data)
            elif kind == "words":
                arg = memoryview(array.array("H", data))  # 2-byte items: counted in bytes
            n = len(data)
            taken = buf.write(arg)
            assert taken == min(n, capacity - len(model))
            model += data[:taken]
        elif op == "ack":
            k = min(n, len(model))
            buf.consume(k)
            model = model[k:]
        elif op == "hold":
            off = n % (len(model) + 1)
            v = buf.view(off, 1448 * 3)
            held.append((v, model[off : off + 1448 * 3]))
        elif held:
            v, _ = held.pop(n % len(held))
            v.release()
        assert len(buf) == len(model) and buf.free == max(0, capacity - len(model))
        assert bytes(buf.view(0, len(model) + 10)) == model
        assert buf.peek(1, 100) == model[1:101]
        for v, expected in held:
            assert bytes(v) == expected  # a view keeps its bytes whatever happened since
