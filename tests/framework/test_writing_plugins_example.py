"""The example plugin of docs/writing-plugins.md works as the guide says."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.packet import raw

from framework.config import build_stack, config_from_dict
from framework.plugins import PluginHost

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-plugins.md"


def _example_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    text = DOC.read_text()
    code = re.search(r"```python\n(# mytap\.py.*?)```", text, re.S)
    assert code is not None, "the five-line plugin example is missing from the guide"
    mod = types.ModuleType("mytap")
    monkeypatch.setitem(sys.modules, "mytap", mod)  # dataclasses look their module up
    exec(compile(code.group(1), str(DOC), "exec"), mod.__dict__)
    return mod


def test_guide_plugin_counts_datagrams_by_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guide's tap plugin registers a layer type that configuration can place and that counts."""
    host = PluginHost(entry_points=False, extra=[_example_module(monkeypatch)])
    config = config_from_dict(
        {"layers": [{"type": "memory"}, {"type": "tap", "label": "seen"}, {"type": "ipv4"}]}, host=host
    )
    stack = build_stack(config)
    stack.receive_frame(raw(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()), now=0.0)
    assert stack.stats.events["seen.proto1"] == 1
    assert len(stack.frames_to_send(now=0.0)) == 1  # the echo was still answered
