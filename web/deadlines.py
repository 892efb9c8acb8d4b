"""A time limit on receiving a request's body, so a slow client cannot hold the server.

aiohttp waits for a body as long as its bytes keep coming: one byte a second kept a sign-in
form open for 150 s and an upload (and its temporary file) for 130 s, and enough of them use
up the process's open files. Here a body must be whole within ``REQUEST_BODY_TIMEOUT`` of
the request's head. An upload may take longer, but only while it keeps up: it gets
``REQUEST_BODY_TIMEOUT`` plus one second for every ``UPLOAD_MIN_BYTES_PER_SECOND`` bytes
received so far, and MAX_UPLOAD_BYTES at that rate at most (``Settings.upload_body_timeout``).
A fixed limit scaled to the largest upload would let a one-byte-a-second upload hold its
connection and temporary file for all of it (160 s by default); paced, it is cut after about
``REQUEST_BODY_TIMEOUT``, while an upload at the minimum rate or faster is never cut. Past
its limit, the read the handler is waiting on fails, the handler's own clean-up runs (an
upload's temporary file is removed, nothing is stored or queued), and the client gets ``408``
and a closed connection. The head's own limit is web.front_door's.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.typedefs import Handler

from web.front_door import plain_error
from web.keys import SETTINGS

UPLOAD_PATHS = frozenset({"/upload", "/dashboard/upload"})


class BodyTooSlowError(TimeoutError):
    """The request's body did not arrive in time (set on its stream, raised by its reads);
    its text is the answer's reason.

    A TimeoutError, so that aiohttp's lingering read of an unfinished body after the answer
    stops at once and closes the connection, instead of logging it as unhandled."""


class _Deadline:
    """Watches one body: due ``floor`` s after the head, later by a second for every ``rate``
    bytes received (no ``rate``: a fixed limit), never later than ``cap`` s."""

    def __init__(self, body: StreamReader, floor: float, cap: float, rate: float | None) -> None:
        self.body = body
        self.floor = floor
        self.cap = cap
        self.rate = rate
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time()
        self.timer = self.loop.call_at(self.start + floor, self._check)

    def _due(self) -> float:
        earned = self.body.total_bytes / self.rate if self.rate else 0.0
        return self.start + min(self.floor + earned, self.cap)

    def _check(self) -> None:
        if self.body.is_eof():
            return
        due = self._due()
        if self.loop.time() < due:
            self.timer = self.loop.call_at(due, self._check)
        elif self.rate and due - self.start < self.cap:
            reason = f"the upload arrived slower than {self.rate:g} bytes a second"
            self.body.set_exception(BodyTooSlowError(reason))
        else:
            reason = f"the request body did not arrive within {self.cap:g} s"
            self.body.set_exception(BodyTooSlowError(reason))

    def cancel(self) -> None:
        self.timer.cancel()


@web.middleware
async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.body_exists or request.content.is_eof():
        return await handler(request)
    settings = request.app[SETTINGS]
    floor = settings.request_body_timeout
    if request.path in UPLOAD_PATHS:
        deadline = _Deadline(
            request.content,
            floor,
            settings.upload_body_timeout,
            settings.upload_min_bytes_per_second,
        )
    else:
        deadline = _Deadline(request.content, floor, floor, None)
    try:
        return await handler(request)
    except BodyTooSlowError as slow:
        return plain_error(408, str(slow))
    finally:
        deadline.cancel()
