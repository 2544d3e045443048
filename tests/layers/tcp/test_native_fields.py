"""Compiled (mypyc), every attribute of a connection is a native field: compiled code reads it as a
struct load, not by a Python attribute lookup (docs/architecture.md, "Native connection fields").

mypyc makes a field only of an attribute that a compiled class declares itself (an annotation in
its body, or ``self.x: T = ...``); an attribute that only the interpreted base class
``ConnectionVerbs`` (layers/tcp/view.py) declares lands in the instance's ``__dict__``, and every
read from compiled code (``conn.rtt`` in note_sent, for each segment sent) is a generic getattr.
A native field shows on the compiled class as a getset descriptor."""

from __future__ import annotations

import inspect
import types

import pytest

import layers.tcp.connection
from framework._compiled import is_compiled
from layers.tcp.connection import TcpConnection
from layers.tcp.view import ConnectionVerbs
from tests.layers.tcp.helpers import LayerHarness

pytestmark = pytest.mark.skipif(
    not is_compiled(layers.tcp.connection),
    reason="pure-Python build: there are no native fields (the compiled run checks them)",
)


@pytest.mark.parametrize("name", sorted(ConnectionVerbs.__annotations__))
def test_attribute_is_a_native_field(name: str) -> None:
    attr = inspect.getattr_static(TcpConnection, name, None)
    assert isinstance(attr, types.GetSetDescriptorType), (
        f"TcpConnection.{name} is not a native field of the compiled class ({attr!r}): declare it "
        f"with an annotation in TcpConnection (self.{name}: T = ...), not only on ConnectionVerbs"
    )


def test_a_connection_keeps_nothing_in_its_dict() -> None:
    """``ConnectionVerbs`` is an interpreted base, so mypyc gives the compiled class a
    ``__dict__``: after an active open with the default plugins, nothing lives there."""
    harness = LayerHarness()
    conn = harness.tcp.connect(bytes([10, 0, 0, 2]), 80, now=0.0)
    assert isinstance(conn, TcpConnection)
    assert getattr(conn, "__dict__", {}) == {}
