"""The dashboard's copy of a finished job's arguments: masked, at most SHOWN_BYTES, and the same
text whether it took the one-encoding path (it fits) or the cutting one (it does not)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.observability.masking import masked
from service.records.arguments import CUT, SHOWN_BYTES, bounded, preview


def cut_path(args: list[Any], kwargs: dict[str, Any]) -> str:
    """What preview wrote before it had a fast path: measure, then encode, with the cut rule."""
    return bounded(masked(list(args)), masked(dict(kwargs)), SHOWN_BYTES).encode()


def pair_size(text: str) -> int:
    data = json.loads(text)
    return len(
        json.dumps(
            [data["args"], data["kwargs"]], separators=(",", ":"), ensure_ascii=False
        ).encode()
    )


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ([], {}),
        ([], {"event": {"type": "signup", "plan": "pro", "n": 3, "ok": True, "none": None}}),
        (["to@example.com"], {"subject": "Ünïcödé 日本", "password": "hunter2"}),
        ([], {"url": "https://user:secret@example.com/hook?token=abc", "body": [1, 2.5]}),
        ([], {"text": "x" * 2000}),  # cut
        ([], {"text": "é" * 600}),  # fits in characters, not in bytes: cut
    ],
)
def test_preview_is_what_the_cut_rule_writes(args: list[Any], kwargs: dict[str, Any]) -> None:
    text = preview(args, kwargs)
    assert text == cut_path(args, kwargs)
    assert pair_size(text) <= SHOWN_BYTES
    assert "hunter2" not in text
    assert "secret" not in text


@pytest.mark.parametrize("extra", [0, 1])
def test_the_bound_is_exact_at_shown_bytes(extra: int) -> None:
    # [[],{"text":"..."}]: 16 bytes besides the string itself
    kwargs = {"text": "a" * (SHOWN_BYTES - 16 + extra)}
    size = len(json.dumps([[], kwargs], separators=(",", ":")).encode())
    assert size == SHOWN_BYTES + extra
    text = preview([], kwargs)
    assert json.loads(text)["truncated"] is bool(extra)
    assert (CUT in text) is bool(extra)
    assert text == cut_path([], kwargs)
