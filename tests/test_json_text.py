"""The worker's own JSON (log lines, live events, attempt history): orjson where it writes what
the standard library would, the standard library for whatever orjson refuses."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pytest

from service.observability.json_text import encoder


@dataclass
class Point:
    x: int


class Name(str):
    pass


def standard(value: Any, default: Any = str) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=default)


@pytest.mark.parametrize(
    "value",
    [
        {"job_id": "a1", "attempt": 1, "duration_ms": 0.3, "ok": True, "none": None},
        {"text": "Ünïcödé 日本 \u2764\ufe0f", "quote": 'say "hi"\n\t\\', "control": "\x00\x1f"},
        {"nested": [{"a": [1, 2.5, -3e-7, 1e16]}, [], {}], "tuple": (1, 2)},
        {"when": datetime(2026, 12, 4, 18, 0, tzinfo=UTC), "day": date(2026, 12, 4)},
        {"point": Point(3), "name": Name("x"), "set": {1}},
        {"big": 2**70, "small": -(2**70)},  # beyond 64 bits: orjson refuses
        {1: "int key", None: "null key", 2.5: "float key"},  # not strings: orjson refuses
        {"lone": "\ud800"},  # not valid UTF-8: orjson refuses
        ["a list", 1],
        "a string",
        7,
    ],
)
def test_it_writes_what_the_standard_library_writes(value: Any) -> None:
    text = encoder()(value)
    if "e-0" in standard(value):  # the one spelling that differs: 1e-7 for 1e-07
        assert json.loads(text) == json.loads(standard(value))
        assert text != standard(value)  # orjson wrote it, not the fallback
    else:
        assert text == standard(value)


def test_non_finite_numbers_become_null_which_every_json_reader_takes() -> None:
    text = encoder()({"nan": math.nan, "inf": math.inf, "list": [-math.inf]})
    assert text == '{"nan":null,"inf":null,"list":[null]}'
    assert json.loads(text, parse_constant=pytest.fail) == {
        "nan": None,
        "inf": None,
        "list": [None],
    }


def test_without_a_default_an_unknown_type_is_refused_as_the_standard_library_refuses_it() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        encoder(default=None)({"object": object()})
    assert encoder(default=None)({"a": [1, "b"]}) == standard({"a": [1, "b"]}, None)
