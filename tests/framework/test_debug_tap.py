"""framework/lazylog.py's debug taps: every debug-level LazyLog event reaches the installed taps,
whatever the logging level; none installed, nothing changes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from framework.lazylog import LazyLog, add_debug_tap, debug_enabled, describe_decision, remove_debug_tap


@pytest.fixture
def quiet_logging() -> Iterator[None]:
    before = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings and up
    yield
    structlog.configure(**before)


def test_taps_see_filtered_debug_events_and_nothing_after_removal(quiet_logging: None) -> None:
    seen: list[tuple[str, Any]] = []
    also: list[str] = []

    def first(conn: str, plugin: str | None, event: str, kw: dict[str, Any]) -> None:
        seen.append((conn, plugin, event, dict(kw)))

    def second(conn: str, plugin: str | None, event: str, kw: dict[str, Any]) -> None:
        also.append(event)

    log = LazyLog("tcpstack.decision", "a>b", "nagle")
    assert not debug_enabled()
    log.debug("tcp.decision", decision="held")
    add_debug_tap(first)
    assert debug_enabled()
    log.debug("tcp.decision", decision="held", t=1.0)
    add_debug_tap(second)
    log.info("tcp.state", new="ESTABLISHED")  # only debug events are tapped
    log.debug("tcp.decision", decision="sent")
    remove_debug_tap(first)
    log.debug("tcp.decision", decision="third")
    remove_debug_tap(second)
    remove_debug_tap(second)  # a second removal does nothing
    assert not debug_enabled()
    log.debug("tcp.decision", decision="untapped")
    assert seen == [
        ("a>b", "nagle", "tcp.decision", {"decision": "held", "t": 1.0}),
        ("a>b", "nagle", "tcp.decision", {"decision": "sent"}),
    ]
    assert also == ["tcp.decision", "tcp.decision"]


def test_describe_decision_shows_the_deadline_relative_to_the_event() -> None:
    kw = {"decision": "ACK delayed", "rfc": "RFC 1122 §4.2.3.2", "deadline": 10.04, "t": 10.0, "segs": 1}
    assert describe_decision("delayed_ack", kw) == "ACK delayed, delayed_ack, RFC 1122 §4.2.3.2, deadline 40 ms, segs 1"
    assert describe_decision(None, {"decision": "RST ignored", "state": "TIME-WAIT"}) == "RST ignored, state TIME-WAIT"
