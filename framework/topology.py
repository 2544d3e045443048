"""Where layers may sit: the checks of a configuration's ``[[layers]]`` tree against what the
layer types declared when they were registered (:meth:`~framework.registry.Registry.add_layer`).

The layers form a tree rooted at the bottom layer (the link): each ``[[layers]]`` entry sits on
the previous one, or on the layer its ``below`` key names, which must be listed before it (so
the list still reads bottom to top and cannot form a cycle). Several layers may sit on one only
if something below sets a demultiplexing key (``demux``) and each of them takes keys of its own
(``accepts``); a pass-through middleware takes the keys of the layers above it. Knows no
protocol: the names are the layer types' own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from framework.registry import LayerType


def resolve_below(raw: Mapping[str, Any], i: int, names: Sequence[str | None], problems: list[str]) -> int | None:
    """The index of the entry that ``layers[i]`` sits on (*names*: every entry's name, ``None``
    where it has none). ``None`` for the bottom entry or after a problem (appended)."""
    if "below" not in raw:
        return i - 1 if i else None
    path = f"layers[{i}].below"
    below = raw["below"]
    if not isinstance(below, str):
        problems.append(f"{path}: expected the name of a layer listed before this one, got {below!r}")
        return None
    for j in range(i):
        if names[j] == below:
            return j
    if names[i] == below:
        problems.append(f"{path}: a layer cannot sit on itself")
    elif below in names:
        j = names.index(below)
        problems.append(
            f"{path}: {below!r} is listed after this layer (layers[{j}]); list each layer after the "
            "layer it sits on, bottom to top"
        )
    else:
        known = ", ".join(repr(n) for n in names[:i] if n is not None) or "none"
        problems.append(f"{path}: no layer named {below!r} is listed before this one (listed before: {known})")
    return None


def check_shape(
    types: Sequence[LayerType], problems: list[str], parents: Sequence[int | None] | None = None
) -> list[tuple[int, ...]]:
    """Check the tree of layers (bottom first; *parents*: the index each sits on, default a
    chain) against their types' declarations: a ``bottom`` layer is at the bottom; whatever a
    layer ``requires`` is ``provided`` on its path down; nothing sits above a layer that passes
    nothing up; layers sitting on one layer are told apart by keys. Appends one problem per
    misplaced layer and returns the keys each layer takes from the one below it."""
    n = len(types)
    if parents is None:
        parents = [i - 1 if i else None for i in range(n)]
    children: list[list[int]] = [[] for _ in range(n)]
    for i, p in enumerate(parents):
        if p is not None:
            children[p].append(i)

    def path(i: int) -> list[int]:  # the layers below layers[i], nearest first
        out: list[int] = []
        p = parents[i]
        while p is not None:
            out.append(p)
            p = parents[p]
        return out

    def label(i: int) -> str:
        return f"layers[{i}] ({types[i].type_name})"

    for i, lt in enumerate(types):
        down = path(i)
        if lt.bottom and i:
            problems.append(f"{label(i)}: must be the bottom layer, below {label(0)}")
        for need in lt.requires:
            if any(need in types[j].provides for j in down):
                continue
            where = ""
            above = next((j for j in range(i + 1, n) if need in types[j].provides and i in path(j)), None)
            aside = next((j for j in range(n) if need in types[j].provides and j not in down and j != i), None)
            if above is not None:
                where = f" ({label(above)} is above it)"
            elif aside is not None:
                where = f" ({label(aside)} is on another branch"
                where += f"; sit on it with below = {types[aside].type_name!r})" if aside < i else ")"
            problems.append(f"{label(i)}: needs {_article(need)} {need} layer below it{where}")
        blocker = next((j for j in reversed(down) if not types[j].passes_up), None)
        if blocker is not None:
            problems.append(
                f"{label(i)}: never sees traffic: {label(blocker)} below it passes nothing up; "
                f"place it below layers[{blocker}]"
            )

    def space(i: int) -> str | None:  # the key that chooses among the layers on layers[i]
        j: int | None = i
        while j is not None:
            if types[j].demux:
                return types[j].demux
            j = parents[j]
        return None

    memo: dict[tuple[int, str], tuple[int, ...]] = {}

    def keys_in(i: int, key: str) -> tuple[int, ...]:  # what layers[i] takes under *key*
        if (i, key) not in memo:
            lt = types[i]
            if key in lt.accepts:
                memo[i, key] = tuple(lt.accepts[key])
            elif lt.accepts or lt.demux:
                memo[i, key] = ()
            else:  # a pass-through middleware: whatever the layers above it take
                memo[i, key] = tuple(sorted({k for c in children[i] for k in keys_in(c, key)}))
        return memo[i, key]

    keys: list[tuple[int, ...]] = [()] * n
    for p in range(n):
        if not children[p]:
            continue
        key = space(p)
        if key is not None:
            for c in children[p]:
                keys[c] = keys_in(c, key)
        if len(children[p]) < 2:
            continue
        first = children[p][0]
        for c in children[p][1:]:
            if key is None:
                problems.append(
                    f"{label(c)}: sits on {label(p)} beside {label(first)}, but no layer on the path down "
                    "sets a demultiplexing key to choose between them"
                )
        if key is None:
            continue
        taken: dict[int, int] = {}
        for c in children[p]:
            if not keys[c]:
                lt = types[c]
                if lt.accepts or lt.demux:
                    why = f"(it takes: {', '.join(sorted(lt.accepts)) or 'none'})"
                else:
                    why = "(a middleware takes the keys of the layers above it, and nothing sits on it)"
                problems.append(
                    f"{label(c)}: sits on {label(p)} beside other layers, chosen by {key}, but takes no {key} {why}"
                )
            for k in keys[c]:
                if k in taken:
                    problems.append(f"{label(c)}: {key} {k} on {label(p)} is already taken by {label(taken[k])}")
                else:
                    taken[k] = c
    return keys


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeio" else "a"
