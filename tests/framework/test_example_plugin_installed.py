"""The example third-party plugin package (examples/tcpstack-example-quickack) is installed and
published through the ``tcpstack`` entry-point group, as scripts/setup installs it."""

from __future__ import annotations

import os
from importlib.metadata import entry_points

import pytest

from framework.plugins import PluginHost

DIST = "tcpstack-example-quickack"
MODULE = "tcpstack_example_quickack.plugin"


def test_the_example_package_is_found_through_the_entry_point_group() -> None:
    found = [ep for ep in entry_points(group="tcpstack") if ep.dist is not None and ep.dist.name == DIST]
    if not found:
        message = f"{DIST} is not installed; scripts/setup runs `pip install ./examples/{DIST}`"
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(message)
        pytest.skip(message)
    [ep] = found
    assert (ep.name, ep.value) == ("quickack", MODULE)
    host = PluginHost()  # entry points on, as `tcpstack up` builds it
    assert "quickack" in host.plugin_names()
    assert host.registry.features["quickack"].plugin == "quickack"
    assert "quickack" not in PluginHost(entry_points=False).registry.features
