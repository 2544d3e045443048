"""bench/netsim.py: the simulation benchmark is deterministic, plausible, and its committed
snapshot (bench/netsim.md) is current for its header and two cells.

A failure of :func:`test_snapshot_cells_are_current` after a change to TCP or a plugin means the
change moved the benchmark: regenerate the snapshot with ``.venv/bin/python bench/netsim.py``
and commit it with the change, so the diff shows the effect."""

from __future__ import annotations

from bench.netsim import COMMAND, SNAPSHOT, available_sets, cell, detail_row, header_lines

SMALL = 300_000  # bytes: about 200 full segments, a few tenths of a second of real time


def test_cell_is_deterministic_and_plausible() -> None:
    """The same cell twice gives identical results; 1% random loss costs retransmissions, every
    byte still arrives in order, and without loss and with a queue far above the window nothing
    is retransmitted or dropped."""
    first = cell("reno", 0.01, size=SMALL)
    second = cell("reno", 0.01, size=SMALL)
    assert first == second
    assert first.completed, first
    assert first.delivered == SMALL
    assert first.goodput > 0
    assert first.fault_drops > 0
    assert first.retransmits >= first.fault_drops > 0
    assert first.retransmitted_bytes > 0

    clean = cell("reno", 0.0, size=SMALL, queue=1000)
    assert clean.completed, clean
    assert clean.delivered == SMALL
    assert (clean.retransmits, clean.retransmitted_bytes, clean.fault_drops, clean.queue_drops) == (0, 0, 0, 0)
    assert clean.goodput > first.goodput


def test_snapshot_cells_are_current() -> None:
    """The committed snapshot's header (parameters, registered features, rows left out) and two
    of its cells, reno and cubic+sack at 1% loss (so reno, cubic and SACK each feed one), equal a
    fresh computation."""
    text = SNAPSHOT.read_text()
    stale = f"{SNAPSHOT.name} is stale: run {COMMAND}"
    header = "\n".join(header_lines()) + "\n"
    assert text.startswith(header), stale
    lines = text.splitlines()
    for ps in available_sets():
        assert any(line.startswith(f"| {ps.name} | 0% | ") for line in lines), f"{stale} (no row {ps.name})"
    for name in ("reno", "cubic+sack"):
        row = detail_row(cell(name, 0.01))
        assert row in lines, f"{stale}: expected the details row\n{row}"
