"""What one webhook attempt got back, for its delivery ledger (the job's attempt history).

Each attempt records the answer's status (None when none came: refused, timed out), how long
the request took, the response headers that help explain it (``LEDGER_HEADERS``: what it is,
when to come back, where it points) and the first ``BODY_KEPT`` bytes of its body. The job
hands the record to the tracking wrapper as ``ctx["delivery"]``, which masks secrets in it and
stores it in the attempt's history entry: bounded by JOB_HISTORY_MAX, gone with the job's
records, written in the round trip that closes the attempt.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from typing import Any

import aiohttp

BODY_KEPT = 1024  # bytes of the answer's body the ledger keeps
HEADER_VALUE_KEPT = 256  # characters of each kept header
LEDGER_HEADERS = (
    "content-type",
    "content-length",
    "retry-after",
    "location",
    "x-request-id",
)


async def read_head(content: aiohttp.StreamReader, limit: int) -> tuple[bytes, bool]:
    """The first BODY_KEPT bytes of a body, and whether it went on past them. The rest is
    read and dropped, up to ``limit`` bytes in all, so a short answer leaves its connection
    reusable and a huge one costs no more than ``limit``."""
    head = b""
    read = 0
    while read < limit:
        chunk = await content.read(limit - read)
        if not chunk:
            break
        if len(head) < BODY_KEPT:
            head += chunk[: BODY_KEPT - len(head)]
        read += len(chunk)
    return head, read > BODY_KEPT


def delivery_record(
    *,
    status: int | None,
    duration_ms: int,
    headers: Mapping[str, str] | None = None,
    head: bytes = b"",
    cut: bool = False,
) -> dict[str, Any]:
    """One ledger entry (unmasked: the tracking wrapper masks what it stores)."""
    kept = {}
    if headers is not None:
        kept = {
            name: str(headers[name])[:HEADER_VALUE_KEPT]
            for name in LEDGER_HEADERS
            if name in headers
        }
    return {
        "status": status,
        "duration_ms": duration_ms,
        "headers": kept,
        # a character cut at BODY_KEPT is left out rather than shown as U+FFFD
        "body": codecs.getincrementaldecoder("utf-8")("replace").decode(head, final=False),
        "body_truncated": cut,
    }
