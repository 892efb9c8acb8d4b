"""Every error leaves the app as JSON ``{"error": ...}``, never as a traceback."""

from __future__ import annotations

import errno
import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from service.store.autopipeline import ReplicasBehindError
from service.store.database import DatabaseUnavailableError
from service.store.storage import StorageUnavailableError

logger = logging.getLogger("jobservice.web")
NOT_CONFIRMED = (
    "Redis replicas did not confirm the job in time, so it is not accepted (it may still run); "
    "try again shortly"
)


class ApiError(Exception):
    """Raised by handlers for a client error; the middleware turns it into JSON."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _message(exc: web.HTTPException) -> str:
    text = exc.text or ""
    prefix = f"{exc.status}: "
    text = text[len(prefix) :] if text.startswith(prefix) else text
    return text.strip() or exc.reason


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return web.json_response({"error": exc.message}, status=exc.status, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
        return web.json_response({"error": _message(exc)}, status=exc.status, headers=headers)
    except HttpProcessingError as exc:
        # a malformed body found while reading it (e.g. a NUL in a multipart part's headers);
        # the parser's message quotes the client's bytes, so it is not echoed back
        status = exc.code if 400 <= exc.code < 500 else 400
        return web.json_response({"error": "malformed request body"}, status=status)
    except ReplicasBehindError as exc:  # REDIS_MIN_REPLICAS_ACK: not promised, may still run
        logger.warning("not confirmed during %s %s: %s", request.method, request.path, exc)
        return web.json_response({"error": NOT_CONFIRMED}, status=503, headers={"Retry-After": "5"})
    except DatabaseUnavailableError as exc:
        logger.warning("database unavailable during %s %s: %s", request.method, request.path, exc)
        return web.json_response(
            {"error": "the users database is unavailable, try again shortly"},
            status=503,
            headers={"Retry-After": "5"},
        )
    except (TimeoutError, RedisError, ConnectionError) as exc:
        logger.warning("redis unavailable during %s %s: %s", request.method, request.path, exc)
        return web.json_response(
            {"error": "the job queue is unavailable, try again shortly"},
            status=503,
            headers={"Retry-After": "5"},
        )
    except StorageUnavailableError as exc:
        logger.warning("storage unavailable during %s %s: %s", request.method, request.path, exc)
        return web.json_response(
            {"error": "file storage is unavailable, try again shortly"},
            status=503,
            headers={"Retry-After": "5"},
        )
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            # aiohttp's static files: a requested name longer than the OS allows names nothing
            return web.json_response({"error": "Not Found"}, status=404)
        return _internal_error(request)
    except Exception:
        return _internal_error(request)


def _internal_error(request: web.Request) -> web.Response:
    logger.exception("unhandled error in %s %s", request.method, request.path)
    return web.json_response({"error": "internal server error"}, status=500)
