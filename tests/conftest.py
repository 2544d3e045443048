"""Fixtures shared by every suite, and automatic markers by directory.

``pytest tests/layers/ipv4`` runs one layer's suite; ``pytest -m ipv4`` does the same by marker.
Hypothesis uses the ``ci`` profile (many more examples) when ``CI`` is set in the environment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import HealthCheck, settings
from structlog.testing import LogCapture

from tcpstack.testing import capture_logs


def _quiet_logging() -> None:
    """Tests log at info level: unconfigured structlog would print every debug event (every
    dropped packet and policy decision) to stdout. Tests that look at logs use ``log_output``."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO), cache_logger_on_first_use=False
    )


_quiet_logging()

settings.register_profile("dev", max_examples=300, deadline=None)
settings.register_profile(
    "ci", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

_MARK_BY_DIR = {
    "framework": "framework",
    "link": "link",
    "ipv4": "ipv4",
    "tcp": "tcp",
    "plugins": "plugins",
    "middleware": "middleware",
    "integration": "integration",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        try:
            parts = Path(str(item.fspath)).relative_to(root).parts
        except ValueError:
            continue
        for part in parts[:-1]:
            mark = _MARK_BY_DIR.get(part)
            if mark:
                item.add_marker(getattr(pytest.mark, mark))


@pytest.fixture(autouse=True)
def _logging_isolation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests that run ``main()`` configure logging like the CLI does, but without freezing loggers
    (``cache_logger_on_first_use``) into a configuration whose stream the test closes; each test
    ends with the configuration it started with."""
    import functools

    import tcpstack.cli
    import tcpstack.logging

    monkeypatch.setattr(
        tcpstack.cli, "configure_logging", functools.partial(tcpstack.logging.configure_logging, cache=False)
    )
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def log_output() -> Iterator[LogCapture]:
    """Capture structlog events as dicts (``log_output.entries``); never caches loggers. The
    quiet configuration above comes back afterwards (``tcpstack.testing.capture_logs``, also
    offered to every suite as the ``tcpstack_logs`` fixture)."""
    with capture_logs() as capture:
        yield capture
