"""What is kept of a job's arguments once it has finished: a copy of bounded size.

A job's arguments are a client's payload (up to its route's limit, e.g.
WEBHOOK_MAX_PAYLOAD_BYTES). arq holds them in full while the job is queued; once it has
finished, the engine's stored result keeps none (service.engine.loop), and only a copy of at
most DEAD_LETTER_MAX_ARGUMENT_BYTES is kept in the failed-jobs list (whole when it fits, so
the job can be retried), and a masked one of at most SHOWN_BYTES in the job's tracking hash,
for the dashboard. Longer strings, lists and objects are cut (marked with ``…``) until the
copy fits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from service.observability.json_text import encoder
from service.observability.masking import masked
from service.store.serialization import compact_json

CUT = "…"
# What the dashboard shows of a finished job's arguments: every finished job keeps this for
# JOB_RESULT_TTL, so it is small (a failed job's entry keeps more, to be retried).
SHOWN_BYTES = 1024
MAX_DEPTH = 8  # nesting below this is replaced by CUT: a deep payload cannot blow the copy up
# (characters kept per string, items kept per list or object), tried in turn until it fits
_STEPS = ((1024, 64), (256, 32), (64, 16), (16, 8))


@dataclass(frozen=True, slots=True)
class Arguments:
    """A job's positional and keyword arguments, possibly cut short (``truncated``)."""

    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    truncated: bool = False

    def encode(self) -> str:
        return compact_json({"args": self.args, "kwargs": self.kwargs, "truncated": self.truncated})


def _size(args: Any, kwargs: Any) -> int:
    return len(compact_json([args, kwargs]).encode())


def _cut(value: Any, chars: int, items: int, depth: int = 0) -> Any:
    if isinstance(value, str):
        return value if len(value) <= chars else value[:chars] + CUT
    if isinstance(value, list | tuple | dict) and depth >= MAX_DEPTH:
        return CUT
    if isinstance(value, list | tuple):
        kept: list[Any] = [_cut(item, chars, items, depth + 1) for item in value[:items]]
        if len(value) > items:
            kept.append(f"{CUT} {len(value) - items} more")
        return kept
    if isinstance(value, dict):
        pairs = list(value.items())
        cut = {str(key)[:chars]: _cut(item, chars, items, depth + 1) for key, item in pairs[:items]}
        if len(pairs) > items:
            cut[CUT] = f"{len(pairs) - items} more"
        return cut
    return value


def bounded(args: list[Any] | tuple[Any, ...], kwargs: dict[str, Any], limit: int) -> Arguments:
    """``args`` and ``kwargs`` whole if their JSON fits in ``limit`` bytes, else cut to fit."""
    if _size(args, kwargs) <= limit:
        return Arguments(list(args), dict(kwargs))
    for chars, items in _STEPS:
        cut_args, cut_kwargs = _cut(list(args), chars, items), _cut(dict(kwargs), chars, items)
        if _size(cut_args, cut_kwargs) <= limit:
            return Arguments(cut_args, cut_kwargs, truncated=True)
    return Arguments(truncated=True)


# Every finished job's preview: one orjson encoding when it fits (json_text: a NaN shows as
# null), where measuring, then encoding, with the standard library cost ~3% of a no-op job.
_encode_shown = encoder(default=None)
# what {"args":A,"kwargs":K,"truncated":false} has around A and K beyond [A,K]'s three bytes
_RECORD_OVERHEAD = len('{"args":,"kwargs":,"truncated":false}') - len("[,]")


def preview(args: list[Any] | tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The masked copy of at most SHOWN_BYTES the dashboard shows of a finished job."""
    shown_args, shown_kwargs = masked(list(args)), masked(dict(kwargs))
    whole = _encode_shown({"args": shown_args, "kwargs": shown_kwargs, "truncated": False})
    if len(whole.encode()) - _RECORD_OVERHEAD <= SHOWN_BYTES:
        return whole
    return bounded(shown_args, shown_kwargs, SHOWN_BYTES).encode()


def decode(raw: str | bytes | None) -> Arguments | None:
    """A stored copy back; None when there is none or it cannot be read."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return Arguments(
            list(data.get("args") or []),
            dict(data.get("kwargs") or {}),
            bool(data.get("truncated")),
        )
    except (ValueError, TypeError, AttributeError):
        return None
