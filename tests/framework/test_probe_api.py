"""``open_stack(probe=...)``: a path, a callable, a text stream (tcpstack/embed.py), on an in-memory
link; and ``up_config``'s ``probe`` override."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import tcpstack
from framework.errors import ConfigError
from plugins.probe import FIELDS
from tcpstack.embed import up_config
from tcpstack.io.memory import MemoryLink


async def _echo_once(probe: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    la, lb = MemoryLink.pair()
    try:
        async with (
            tcpstack.open_stack(link=lb, address="10.0.0.2/24") as server,
            tcpstack.open_stack(link=la, address="10.0.0.1/24", probe=probe) as client,
        ):
            await server.start_server(handler, port=7)
            reader, writer = await client.open_connection("10.0.0.2", 7)
            writer.write(b"hello")
            assert await reader.read(100) == b"hello"
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.05)
    finally:
        la.close()
        lb.close()


def test_a_callable_gets_every_record_as_a_dict() -> None:
    records: list[Mapping[str, object]] = []
    asyncio.run(_echo_once(records.append))
    assert records and all(list(r) == list(FIELDS) for r in records)
    events = [r["event"] for r in records]
    assert events[0] == "open" and events[-1] == "close" and "ack" in events and "send" in events
    assert sum(r["len"] for r in records if r["event"] == "send" and r["len"]) == 5  # type: ignore[misc]
    assert all(isinstance(r["t"], float) and r["t"] > 1.7e9 for r in records)  # wall-clock time


def test_a_stream_and_a_path(tmp_path: Path) -> None:
    stream = io.StringIO()
    asyncio.run(_echo_once(stream))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines and lines[0]["event"] == "open" and lines[-1]["event"] == "close"
    path = tmp_path / "p.csv"
    asyncio.run(_echo_once(path))
    text = path.read_text().splitlines()
    assert text[0] == ",".join(FIELDS) and len(text) == len(lines) + 1


def test_up_config_turns_the_feature_on_and_names_the_file() -> None:
    data = up_config({"layers": [{"type": "memory"}, {"type": "ipv4"}, {"type": "tcp"}]}, probe="x.jsonl")
    assert data["layers"][2]["features"]["probe"] == {} and data["plugins"]["probe"]["path"] == "x.jsonl"
    held = up_config({"layers": [{"type": "memory"}, {"type": "ipv4"}, {"type": "tcp"}]}, probe=True)
    assert held["layers"][2]["features"]["probe"] == {} and "plugins" not in held
    with pytest.raises(ConfigError, match="--probe"):
        up_config({"layers": [{"type": "memory"}, {"type": "ipv4"}]}, probe="x.jsonl")
    with pytest.raises(ConfigError, match=r"does not exist"):
        asyncio.run(_echo_once("/nonexistent-dir/p.jsonl"))
