"""Reading a Server-Sent Events stream in tests, one event at a time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientResponse


@dataclass(frozen=True)
class Event:
    kind: str
    data: dict[str, Any]


async def next_event(response: ClientResponse) -> Event | None:
    """The next event on the stream (comments skipped), or None once the server ends it."""
    kind, data = "message", ""
    while True:
        line = (await response.content.readline()).decode()
        if not line:
            return None
        line = line.rstrip("\n")
        if line == "":
            if data:
                return Event(kind, json.loads(data))
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(": ")
        if field == "event":
            kind = value
        elif field == "data":
            data += value


async def all_events(response: ClientResponse) -> list[Event]:
    """Every event until the server closes the stream."""
    found = []
    while (event := await next_event(response)) is not None:
        found.append(event)
    return found
