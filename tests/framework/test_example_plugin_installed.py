"""The example third-party plugin package (examples/tcpstack-example-quickack) is installed and
published through the ``tcpstack`` entry-point group, as scripts/setup installs it."""

from __future__ import annotations

import os
from importlib.metadata import entry_points

import pytest

from layers.tcp.extensions import features
from tcpstack.plugins import PluginHost

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
    assert features(host.registry)["quickack"].plugin == "quickack"
    assert "quickack" not in features(PluginHost(entry_points=False).registry)


def test_config_check_refuses_the_example_next_to_delayed_ack(tmp_path, capsys) -> None:
    """quickack and the default delayed_ack both claim the ACK policy: `config check` says so (exit 2) instead
    of passing a configuration on which every connection would fail; with delayed_ack off it is valid."""
    from tcpstack.cli import main

    if "quickack" not in features(PluginHost().registry):
        pytest.skip(f"{DIST} is not installed")  # the test above fails in CI in that case
    clash = tmp_path / "clash.toml"
    clash.write_text(
        '[[layers]]\ntype = "tun"\n[[layers]]\ntype = "ipv4"\n[[layers]]\ntype = "tcp"\n'
        "features = { quickack = { quick = 3 } }\n"
    )
    assert main(["config", "check", str(clash)]) == 2
    err = capsys.readouterr().err
    assert "layers[2].features:" in err and "both want to set ack_policy" in err, err
    ok = tmp_path / "ok.toml"
    ok.write_text(clash.read_text().replace("quick = 3 }", "quick = 3 }, delayed_ack = false"))
    assert main(["config", "check", str(ok)]) == 0
    assert "feature quickack: quick=3" in capsys.readouterr().out
