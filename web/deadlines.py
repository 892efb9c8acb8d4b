"""A time limit on receiving a request's body, so a slow client cannot hold the server.

aiohttp waits for a body as long as its bytes keep coming: one byte a second kept a sign-in
form open for 150 s and an upload (and its temporary file) for 130 s, and enough of them use
up the process's open files. Here a body must be whole within ``REQUEST_BODY_TIMEOUT`` of
the request's head, an upload's within MAX_UPLOAD_BYTES at ``UPLOAD_MIN_BYTES_PER_SECOND``
(never less); past it, the read the handler is waiting on fails, the handler's own clean-up
runs (an upload's temporary file is removed, nothing is stored or queued), and the client gets
``408`` and a closed connection. The head's own limit is web.front_door's.
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
    """The request's body did not arrive in time (set on its stream, raised by its reads).

    A TimeoutError, so that aiohttp's lingering read of an unfinished body after the answer
    stops at once and closes the connection, instead of logging it as unhandled."""


def _expire(body: StreamReader) -> None:
    if not body.is_eof():
        body.set_exception(BodyTooSlowError())


@web.middleware
async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.body_exists or request.content.is_eof():
        return await handler(request)
    settings = request.app[SETTINGS]
    uploading = request.path in UPLOAD_PATHS
    seconds = settings.upload_body_timeout if uploading else settings.request_body_timeout
    timer = asyncio.get_running_loop().call_later(seconds, _expire, request.content)
    try:
        return await handler(request)
    except BodyTooSlowError:
        return plain_error(408, f"the request body did not arrive within {seconds:g} s")
    finally:
        timer.cancel()
