"""Fixtures for tests against the Linux kernel over a TUN device in a namespace.

These tests need root, /dev/net/tun and iproute2. Where that is genuinely absent they are
skipped with the reason; with ``TCPSTACK_REQUIRE_INTEGRATION=1`` (set by .ci/run) a missing
capability is a failure instead, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration.netns import Netns, missing_capability


@pytest.fixture(scope="session")
def netns_capability() -> None:
    reason = missing_capability()
    if reason is None:
        return
    if os.environ.get("TCPSTACK_REQUIRE_INTEGRATION"):
        pytest.fail(f"integration tests are required here but cannot run: {reason}")
    pytest.skip(f"integration test skipped: {reason}")


@pytest.fixture
def netns(netns_capability: None) -> Iterator[Netns]:
    ns = Netns()
    try:
        yield ns
    finally:
        ns.close()
