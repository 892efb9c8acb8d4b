"""``Idempotency-Key`` on the enqueue endpoints: a repeated request replays the first answer.

Routes opt in by wrapping their handler (``idempotent(views.send_email)`` in routes.py). Keys
are scoped to the caller's API token. The first request with a key runs; a repeat within
``IDEMPOTENCY_TTL`` seconds gets ``200`` with the first answer's body (same ``task_id``) and
``Idempotent-Replayed: true``, and runs nothing: no job is queued, no file stored, no user
created. A key sent again with a different request is ``422``; a repeat that arrives while the
first is still running waits for it, up to ``WAIT_FOR_FIRST`` seconds, then gets ``409``.
A refused first request (4xx, 5xx) frees its key.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.typedefs import Handler

from service.queue.idempotency import IdempotencyKey, KeyInUseError, StoredAnswer
from web.auth import TOKEN_ID
from web.errors import ApiError
from web.keys import REDIS, SETTINGS, SUBSCRIPTIONS

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
WAIT_FOR_FIRST = 10.0  # seconds a repeat waits for the first request's answer
UPLOAD_CHUNK = 64 * 1024

# sha256 of the uploaded file, set by the upload handler while it streams the file to disk
UPLOAD_DIGEST = web.RequestKey("upload_digest", str)

Fingerprint = Callable[[web.Request], Awaitable[str]]


async def _request_print(request: web.Request, fingerprint: Fingerprint) -> str:
    """The route's fingerprint of what was sent, with the query string: a repeat asking for
    another ``priority`` is another request (422), not the first one's answer."""
    query = request.rel_url.raw_query_string
    return await fingerprint(request) + (f"?{query}" if query else "")


async def body_fingerprint(request: web.Request) -> str:
    """The request as sent: method, path and body bytes (aiohttp keeps the body once read)."""
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    digest.update(await request.read())
    return digest.hexdigest()


async def upload_fingerprint(request: web.Request) -> str:
    """The uploaded file's content, since multipart framing differs on every send.

    The handler records it while storing the file; a repeat is only read and hashed here,
    never written to disk.
    """
    if UPLOAD_DIGEST in request:
        return request[UPLOAD_DIGEST]
    limit = request.app[SETTINGS].max_upload_bytes
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, "send the image as multipart/form-data in a field named 'file'")
    reader = await request.multipart()
    async for part in reader:
        if isinstance(part, BodyPartReader) and part.name == "file":
            digest, size = hashlib.sha256(), 0
            while chunk := await part.read_chunk(UPLOAD_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"file is larger than the {limit}-byte limit")
                digest.update(chunk)
            return digest.hexdigest()
    raise ApiError(400, "multipart field 'file' is required")


def _client_key(request: web.Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= char <= "~" for char in key):
        raise ApiError(
            400, f"{HEADER} must be 1-{MAX_KEY_LENGTH} printable ASCII characters (e.g. a UUID)"
        )
    return key


def _replay(answer: StoredAnswer) -> web.Response:
    headers = {"Location": f"/task-status/{answer.task_id}", "Idempotent-Replayed": "true"}
    return web.json_response(answer.body, status=200, headers=headers)


def _answer(response: web.StreamResponse, fingerprint: str) -> StoredAnswer | None:
    """What to keep of a successful answer: its status, JSON body and task id."""
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return None
    body: Any = json.loads(response.body)
    if not isinstance(body, dict) or not isinstance(body.get("task_id"), str):
        return None
    return StoredAnswer(fingerprint, body["task_id"], response.status, body)


def idempotent(handler: Handler, fingerprint: Fingerprint = body_fingerprint) -> Handler:
    """``handler`` honouring ``Idempotency-Key``; without the header it runs as it is."""

    @functools.wraps(handler)
    async def run(request: web.Request) -> web.StreamResponse:
        client_key = _client_key(request)
        if client_key is None:
            return await handler(request)
        scope = request.get(TOKEN_ID, "-")  # the caller's token fingerprint: keys are per token
        hold = IdempotencyKey(request.app[REDIS], request.app[SUBSCRIPTIONS], scope, client_key)
        try:
            earlier = await hold.claim(wait=WAIT_FOR_FIRST)
        except KeyInUseError:
            raise ApiError(409, f"a request with this {HEADER} is still being handled") from None
        if earlier is not None:
            if await _request_print(request, fingerprint) != earlier.fingerprint:
                raise ApiError(422, f"this {HEADER} was already used for a different request")
            return _replay(earlier)
        try:
            response = await handler(request)
            answer = _answer(response, await _request_print(request, fingerprint))
        except BaseException:
            await asyncio.shield(hold.release())
            raise
        if answer is None or not 200 <= response.status < 300:
            await hold.release()
        else:
            await hold.complete(answer, ttl=request.app[SETTINGS].idempotency_ttl)
        return response

    return run
