"""Every log line is written with one ``write`` call (tcpstack.logging.LineLogger).

structlog's PrintLogger prints the message and the newline with two calls; standard error that
is not a terminal is write-through, so that is two ``write(2)`` system calls, and processes
sharing one log file (``tcpstack up --workers N``) put a line of one inside a line of another
(seen in CI: two JSON objects on one line). The first two tests fail with PrintLogger (two
calls per line); the last checks the --workers arrangement end to end (a merge needs the
other process to write between the two calls, so PrintLogger passes it most of the time).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from tcpstack import configure_logging
from tcpstack.logging import LineLogger, LineSink, flush_logs


class _Recorder(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, s: str) -> int:
        self.calls.append(s)
        return super().write(s)


def test_each_line_is_one_write_call() -> None:
    out = _Recorder()
    logger = LineLogger(out)
    for method in (logger.msg, logger.info, logger.warning, logger.error, logger.debug):
        method('{"event": "x"}')
    assert out.calls == ['{"event": "x"}\n'] * 5


def test_configure_logging_writes_whole_lines() -> None:
    out = _Recorder()
    configure_logging(fmt="json", level="info", stream=out, cache=False)
    try:
        structlog.get_logger("t").info("hello", a=1)
    finally:
        structlog.reset_defaults()
    [line] = out.calls
    assert line.endswith("\n") and json.loads(line)["event"] == "hello"


CHILD = """
import sys
from tcpstack import configure_logging
import structlog
configure_logging(fmt="json", level="info", cache=False)
log = structlog.get_logger("t")
for i in range(2000):
    log.info("line", worker=sys.argv[1], i=i, pad="x" * 300)
"""


def test_two_processes_sharing_one_stderr_file_never_merge_lines(tmp_path: Path) -> None:
    """The --workers arrangement: processes inheriting one stderr file (not a terminal)."""
    err = tmp_path / "shared.err"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with err.open("w") as f:
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(k)], stderr=f, env=env) for k in (0, 1)]
        assert [p.wait(timeout=120) for p in procs] == [0, 0]
    lines = err.read_text().splitlines()
    assert len(lines) == 4000
    events = [json.loads(line) for line in lines]  # a merged line would not parse
    assert sorted((e["worker"], e["i"]) for e in events) == [(w, i) for w in ("0", "1") for i in range(2000)]


# ---------------------------------------------------------------- batched lines (flush_after)


def test_batched_info_lines_wait_then_go_out_in_one_write() -> None:
    out = _Recorder()
    sink = LineSink(out, flush_after=0.02)
    logger = LineLogger(out, sink)

    async def main() -> list[str]:
        for i in range(3):
            logger.info(f"line {i}")
        before = list(out.calls)
        await asyncio.sleep(0.2)  # well past flush_after: the timer has written them
        return before

    assert asyncio.run(main()) == []
    assert out.calls == ["line 0\nline 1\nline 2\n"]


def test_a_warning_writes_the_waiting_lines_first_in_the_same_write() -> None:
    out = _Recorder()
    sink = LineSink(out, flush_after=10.0)
    logger = LineLogger(out, sink)

    async def main() -> None:
        logger.info("a")
        logger.debug("b")
        logger.warning("c")
        logger.info("d")

    asyncio.run(main())
    assert out.calls == ["a\nb\nc\n"]  # d waits for a loop that is gone...
    logger.info("e")  # ...and goes out, first, with the next line logged without a loop
    assert out.calls == ["a\nb\nc\n", "d\ne\n"]


def test_without_a_running_loop_every_line_is_written_at_once() -> None:
    out = _Recorder()
    logger = LineLogger(out, LineSink(out, flush_after=10.0))
    logger.info("x")
    logger.debug("y")
    assert out.calls == ["x\n", "y\n"]


def test_a_batch_stays_under_pipe_buf_and_keeps_every_line() -> None:
    out = _Recorder()
    logger = LineLogger(out, LineSink(out, flush_after=10.0))
    lines = [f"{i:04d} " + "x" * 195 for i in range(100)]  # 20,000 characters

    async def main() -> None:
        for line in lines:
            logger.info(line)

    asyncio.run(main())
    logger.msg("end")
    assert all(len(call.encode()) <= 4096 and call.endswith("\n") for call in out.calls)
    assert "".join(out.calls).splitlines() == [*lines, "end"]
    assert 5 <= len(out.calls) <= 7  # batched: not one write per line


def test_configure_logging_flush_after_and_flush_logs() -> None:
    out = _Recorder()
    with pytest.raises(ValueError, match="flush_after"):
        configure_logging(stream=out, flush_after=-1.0)
    configure_logging(fmt="json", level="info", stream=out, cache=False, flush_after=10.0)
    try:

        async def main() -> None:
            structlog.get_logger("t").info("one")
            structlog.get_logger("t").info("two")

        asyncio.run(main())
        assert out.calls == []
        flush_logs()
        [batch] = out.calls
        assert [json.loads(line)["event"] for line in batch.splitlines()] == ["one", "two"]
    finally:
        structlog.reset_defaults()
