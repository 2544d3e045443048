"""``tcpstack up`` freezes its start-up heap (gc.freeze) before serving connections."""

from __future__ import annotations

import gc
import inspect

from tcpstack import cli


def test_up_freezes_what_start_up_made() -> None:
    """``tcpstack up`` moves the start-up heap out of the collector's reach (gc.freeze), once
    the stack, its services and the loop exist (tcpstack/cli.py, before ``stack.up``)."""
    source = inspect.getsource(cli.cmd_up)
    assert source.index("freeze_startup_heap()") < source.index('"stack.up"')
    made = {"a": [1]}  # something start-up made and keeps
    try:
        cli.freeze_startup_heap()
        assert gc.get_freeze_count() > 0 and not any(made is o for o in gc.get_objects())
    finally:
        gc.unfreeze()
    assert any(made is o for o in gc.get_objects())
