"""A short run of bench/fuzz.py (RFC 1122 §1.2.2, robustness): 20,000 structure-aware fuzzed
frames against a sans-IO stack with live connections, on a virtual clock.

Correctness only, no timing: ``receive_frame`` never raises, ``stack.internal_error`` stays 0
on both stacks, the connections the fuzz never aims at deliver every byte intact both ways, and
a connection opened afterwards does too. The fuzzer itself must be able to see a failure: a
layer that raises on some frames shows up as internal errors with the frame to reproduce it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from bench.fuzz import fuzz
from layers.tcp.handler import TcpLayer


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    """bench.fuzz configures structlog (errors only); put the previous configuration back."""
    was_configured = structlog.is_configured()
    saved = structlog.get_config()
    try:
        yield
    finally:
        if was_configured:
            structlog.configure(**saved)
        else:
            structlog.reset_defaults()


def test_twenty_thousand_fuzzed_frames_leave_the_stack_working() -> None:
    """No exception, no internal error, sentinel connections and a new one intact (RFC 1122 §1.2.2)."""
    rep, errors = fuzz(20_000, seed=20240)
    assert rep.frames >= 20_000
    assert rep.exceptions == 0, rep.first_error
    assert rep.internal_errors == 0, rep.first_error
    assert rep.client_internal_errors == 0, rep.first_error
    assert not errors.errors, errors.errors[0]
    assert rep.sentinels_ok, rep.sentinel_detail
    assert rep.new_connection_ok
    # The fuzz reached the TCP layer's checks, not only the IPv4 layer's.
    assert rep.kinds["tcp_target"] > 5_000
    assert any(reason.startswith("tcp.") for reason in rep.drops)


def test_the_fuzzer_reports_an_internal_error_with_its_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TCP layer that raises on every 50th segment is seen: counted, with the frame's bytes."""
    real = TcpLayer.receive
    calls = [0]

    def flaky(self, pkt, ctx):
        calls[0] += 1
        if calls[0] % 50 == 0:
            raise RuntimeError("injected bug")
        return real(self, pkt, ctx)

    monkeypatch.setattr(TcpLayer, "receive", flaky)
    rep, errors = fuzz(2_000, seed=3)
    assert rep.internal_errors > 0
    assert rep.first_error is not None and "seed 3" in rep.first_error
    assert any("injected bug" in e for e in errors.errors)
