"""JSON text for what the worker writes on every attempt: log lines, live events, history.

Those three encodings cost a no-op job about 10 µs with the standard library's encoder and
under 1 µs with orjson. orjson is used only where its output means what the standard
library's would, and the standard library takes over for anything orjson refuses (an integer
beyond 64 bits, a key that is not a string, text that is not valid UTF-8), so every value
still encodes:

- dates, dataclasses and subclasses of str/int/dict/list go through ``default`` as with
  ``json.dumps(..., default=...)`` instead of orjson's own forms;
- a float may be spelled differently (``1e-7`` for ``1e-07``), with the same value;
- NaN and infinities come out as ``null``, which every JSON reader takes, where the standard
  library writes ``NaN``, which browsers' ``JSON.parse`` and most log shippers refuse.

Job payloads and results (service.store.serialization) stay on the standard library: a NaN a
client sent must reach the job as NaN.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def encoder(*, default: Callable[[Any], Any] | None = str) -> Callable[[Any], str]:
    """``json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=default)``,
    through orjson when it can."""
    fallback = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=default).encode

    def dumps(value: Any) -> str:
        try:
            return orjson.dumps(value, default=default, option=_OPTIONS).decode()
        except TypeError:  # orjson.JSONEncodeError is one
            return fallback(value)

    return dumps
