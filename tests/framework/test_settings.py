"""Settings validation: every problem in plain data is reported at once, with its key path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from framework.settings import describe, settings_doc, validate_settings
from tcpstack.plugins import PluginHost


def _check_even(value: int) -> str | None:
    return None if value % 2 == 0 else "must be even"


@dataclass(slots=True)
class Example:
    name: str
    """What to call it (required)."""

    count: int = field(default=1, metadata={"min": 0, "max": 10})
    """How many, 0 to 10."""

    ratio: float = 0.5
    """A number; an integer is accepted."""

    flag: bool = False
    """On or off."""

    mode: Literal["fast", "slow"] = "fast"
    """How to go."""

    level: Literal[1, 2] = 1
    """An integer literal."""

    label: str | None = None
    """An optional string."""

    tags: list[str] = field(default_factory=list)
    """Some strings."""

    even: int = field(default=0, metadata={"check": _check_even})
    """An even number."""

    low: int = 0
    """Lower bound."""

    high: int = 10
    """Upper bound, at least ``low``."""

    def problems(self) -> list[tuple[str, str]]:
        if self.high < self.low:
            return [("high", f"must be at least low ({self.low})")]
        return []


def check(data: object, path: str = "t") -> tuple[Example | None, list[str]]:
    problems: list[str] = []
    return validate_settings(Example, data, path, problems), problems


def test_valid_data_builds_the_object() -> None:
    """Valid data builds the dataclass, converting an integer to float where a float is expected."""
    obj, problems = check({"name": "n", "count": 10, "ratio": 2, "mode": "slow", "tags": ["a", "b"], "label": "x"})
    assert problems == []
    assert obj == Example(name="n", count=10, ratio=2.0, mode="slow", tags=["a", "b"], label="x")
    assert type(obj.ratio) is float


def test_unknown_key_suggests_the_close_one() -> None:
    """An unknown key is reported with a "did you mean" hint, or the known keys when nothing is close."""
    _, problems = check({"name": "n", "cuont": 1, "zzzzzz": 2})
    assert problems == [
        "t.cuont: unknown key (did you mean 'count'?)",
        "t.zzzzzz: unknown key (known keys: count, even, flag, high, label, level, low, mode, name, ratio, tags)",
    ]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("count", True, "t.count: expected integer, got True"),  # bool is not int
        ("count", 1.5, "t.count: expected integer, got 1.5"),
        ("count", "3", "t.count: expected integer, got '3'"),
        ("ratio", False, "t.ratio: expected number, got False"),
        ("ratio", "0.5", "t.ratio: expected number, got '0.5'"),
        ("flag", 1, "t.flag: expected boolean, got 1"),
        ("name", 5, "t.name: expected string, got 5"),
        ("mode", "medium", "t.mode: expected one of 'fast', 'slow', got 'medium'"),
        ("level", True, "t.level: expected one of 1, 2, got True"),  # True == 1, but not an int literal
        ("level", 3, "t.level: expected one of 1, 2, got 3"),
        ("label", 3, "t.label: expected string or none, got 3"),
        ("tags", "a", "t.tags: expected list of string, got 'a'"),
        ("tags", ["a", 1], "t.tags: expected list of string, got ['a', 1]"),
    ],
)
def test_wrong_types(key: str, value: object, expected: str) -> None:
    """A value of the wrong type is reported with the expected type and the value given."""
    obj, problems = check({"name": "n", key: value})
    assert obj is None
    assert problems == [expected]


def test_accepted_type_edge_cases() -> None:
    """An int for a float, None for an optional, an empty list and a literal are all accepted."""
    obj, problems = check({"name": "n", "ratio": 3, "label": None, "tags": [], "level": 2})
    assert problems == []
    assert obj is not None
    assert (obj.ratio, obj.label, obj.tags, obj.level) == (3.0, None, [], 2)


@pytest.mark.parametrize(("value", "ok"), [(-1, False), (0, True), (10, True), (11, False)])
def test_min_max_inclusive(value: int, ok: bool) -> None:
    """Bounds from field metadata are inclusive, and a value outside them names the range."""
    obj, problems = check({"name": "n", "count": value})
    if ok:
        assert problems == [] and obj is not None and obj.count == value
    else:
        assert problems == [f"t.count: {value} is out of range [0, 10]"]


def test_check_callback() -> None:
    """A check callback's message becomes the problem for that key."""
    assert check({"name": "n", "even": 3})[1] == ["t.even: must be even"]
    assert check({"name": "n", "even": 4})[1] == []


def test_missing_required_key() -> None:
    """A field without a default is a required key."""
    obj, problems = check({})
    assert obj is None
    assert problems == ["t.name: required key is missing"]


def test_cross_field_problems() -> None:
    """problems() reports checks that span fields, with the key path of the key it names."""
    obj, problems = check({"name": "n", "low": 5, "high": 1})
    assert obj is None
    assert problems == ["t.high: must be at least low (5)"]


def test_cross_field_problems_wait_for_field_problems() -> None:
    """problems() is not consulted while single fields are wrong (the object cannot be built)."""
    _, problems = check({"name": "n", "low": 5, "high": 1, "count": -1})
    assert problems == ["t.count: -1 is out of range [0, 10]"]


def test_all_problems_reported_at_once() -> None:
    """Every problem in the data is reported in one pass, each with its full key path."""
    problems = ["an earlier problem"]
    data = {"cuont": 1, "count": 11, "mode": "x", "tags": [1], "even": 1}
    assert validate_settings(Example, data, "layers[2]", problems) is None
    assert problems == [
        "an earlier problem",
        "layers[2].cuont: unknown key (did you mean 'count'?)",
        "layers[2].count: 11 is out of range [0, 10]",
        "layers[2].mode: expected one of 'fast', 'slow', got 'x'",
        "layers[2].tags: expected list of string, got [1]",
        "layers[2].even: must be even",
        "layers[2].name: required key is missing",
    ]


def test_empty_path_gives_bare_keys() -> None:
    """With an empty path, problems name the bare key (no leading dot)."""
    _, problems = check({"cuont": 1}, path="")
    assert problems == ["cuont: unknown key (did you mean 'count'?)", "name: required key is missing"]
    _, problems = check({"name": "n", "low": 5, "high": 1}, path="")
    assert problems == ["high: must be at least low (5)"]


def test_not_a_table() -> None:
    """Data that is not a table is one problem at the path itself."""
    obj, problems = check([1, 2], path="plugins.x")
    assert obj is None
    assert problems == ["plugins.x: expected a table, got list"]


def test_describe() -> None:
    """describe names field types the way error messages and docs show them."""
    assert describe(int) == "integer"
    assert describe(float | None) == "number or none"
    assert describe(list[bool]) == "list of boolean"
    assert describe(Literal["a", 2]) == "one of 'a', 2"
    assert describe(dict[str, object]) == "table"


def test_settings_doc_returns_docstrings() -> None:
    """settings_doc lists each field with its type, default and the docstring written under it."""
    rows = {row[0]: row[1:] for row in settings_doc(Example)}
    assert list(rows) == ["name", "count", "ratio", "flag", "mode", "level", "label", "tags", "even", "low", "high"]
    assert rows["name"] == ("string", "(required)", "What to call it (required).")
    assert rows["count"] == ("integer", "1", "How many, 0 to 10.")
    assert rows["tags"] == ("list of string", "[]", "Some strings.")
    assert rows["label"] == ("string or none", "None", "An optional string.")
    assert rows["high"] == ("integer", "10", "Upper bound, at least ``low``.")


def test_builtin_settings_document_every_key() -> None:
    """Every settings class a built-in plugin registers has a docstring under every field."""
    registry = PluginHost(entry_points=False).registry
    classes = [lt.settings for lt in registry.layers.values()] + list(registry.settings.values())
    undocumented = [f"{cls.__name__}.{key}" for cls in classes for key, _, _, doc in settings_doc(cls) if not doc]
    assert undocumented == []
