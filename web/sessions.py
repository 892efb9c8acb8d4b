"""Dashboard sessions: sign in once with an API token, then an http-only, SameSite cookie.

The cookie holds only a random id; the session lives in Redis under the id's SHA-256 (so a
copy of Redis holds no usable cookie) with the fingerprint of the token that opened it and
the session's CSRF token. A server-side session can be ended for real: signing out deletes
it, and removing a token from API_TOKENS ends every session it opened at the next request.
An encrypted-cookie session (aiohttp-session) could do neither, and would need a key to
manage besides the tokens.

State-changing requests made with the cookie must carry the session's CSRF token (form field
``csrf_token`` or header ``X-CSRF-Token``) and come from this origin (``Origin``, else
``Referer``); SameSite=Strict already keeps other sites' requests from carrying the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from aiohttp import web
from redis.asyncio import Redis
from yarl import URL

from service.store import keys
from web.errors import ApiError

COOKIE = "jobsvc_session"
SIGN_IN_PATH = "/dashboard/sign-in"
STATIC_PREFIX = "/dashboard/static/"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
EVENTS_PATH = re.compile(r"/jobs/[^/]+/events")


@dataclass(frozen=True, slots=True)
class Session:
    digest: str  # SHA-256 of the cookie value: the Redis key's suffix
    token_id: str  # fingerprint of the API token that opened it
    csrf: str


SESSION = web.RequestKey("dashboard_session", Session)


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def accepts_session(path: str) -> bool:
    """The dashboard's own routes, and the live status stream its pages open (EventSource
    cannot send an Authorization header). Every other route still needs the bearer token."""
    return (
        path == "/dashboard" or path.startswith("/dashboard/") or bool(EVENTS_PATH.fullmatch(path))
    )


async def open_session(redis: Redis, token_id: str, ttl_seconds: int) -> tuple[str, Session]:
    """A new session for ``token_id``; returns the cookie value and the session."""
    cookie = secrets.token_urlsafe(32)
    session = Session(_digest(cookie), token_id, secrets.token_urlsafe(32))
    key = keys.session(session.digest)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping={"token_id": token_id, "csrf": session.csrf})
        pipe.expire(key, ttl_seconds)
        await pipe.execute()
    return cookie, session


async def load_session(redis: Redis, cookie: str, valid_token_ids: set[str]) -> Session | None:
    """The session behind ``cookie``, if it exists and its token is still configured."""
    if not cookie or len(cookie) > 100:
        return None
    digest = _digest(cookie)
    raw: dict[bytes, bytes] = await redis.hgetall(keys.session(digest))  # type: ignore[misc]
    token_id, csrf = raw.get(b"token_id", b"").decode(), raw.get(b"csrf", b"").decode()
    if not token_id or not csrf or token_id not in valid_token_ids:
        return None
    return Session(digest, token_id, csrf)


async def close_session(redis: Redis, session: Session) -> None:
    await redis.delete(keys.session(session.digest))


async def forget_cookie(redis: Redis, cookie: str) -> None:
    """End whatever session ``cookie`` held; a new sign-in replaces it, never adds to it."""
    if cookie and len(cookie) <= 100:
        await redis.delete(keys.session(_digest(cookie)))


def set_cookie(response: web.StreamResponse, request: web.Request, cookie: str, ttl: int) -> None:
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=ttl,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


def clear_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")


def same_origin(request: web.Request) -> bool:
    """Whether the request says it comes from a page of this site (Origin, else Referer)."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source or source == "null":
        return False
    try:
        origin = URL(source).origin()
    except ValueError:
        return False
    return origin == request.url.origin()


async def check_csrf(request: web.Request, session: Session) -> None:
    """403 for a state-changing request without this session's CSRF token or from elsewhere."""
    if request.method in SAFE_METHODS:
        return
    if not same_origin(request):
        raise ApiError(403, "cross-site request refused: it must come from this dashboard")
    given = request.headers.get(CSRF_HEADER, "")
    if not given and request.content_type == "application/x-www-form-urlencoded":
        given = str((await request.post()).get(CSRF_FIELD, ""))
    if not hmac.compare_digest(given.encode(), session.csrf.encode()):
        raise ApiError(403, "missing or wrong CSRF token: reload the page and try again")
