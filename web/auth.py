"""API tokens: every route needs ``Authorization: Bearer <token>`` unless it is listed as public.

Routes are protected by default, so an endpoint added later cannot be left open by mistake;
making one public is a deliberate edit of :data:`PUBLIC_ROUTES` or :data:`PUBLIC_PREFIXES`.
With no ``API_TOKENS`` configured the middleware refuses every protected request (it fails
closed), and ``python -m web`` refuses to start at all (see ``web/__main__.py``).
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from web.errors import ApiError
from web.keys import REDIS, SETTINGS
from web.sessions import (
    COOKIE,
    SESSION,
    SIGN_IN_PATH,
    STATIC_PREFIX,
    accepts_session,
    check_csrf,
    load_session,
)

# (method, exact path) pairs anyone may call; HEAD counts as GET.
# Add here: the dashboard's sign-in page and form. /metrics stays behind a token (README).
PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/health"),
        ("GET", SIGN_IN_PATH),
        ("POST", SIGN_IN_PATH),  # checks the token itself (web/dashboard.py)
        ("GET", "/openapi.json"),  # describes the API, including how to authenticate
    }
)
# Path prefixes served to anyone with GET/HEAD, e.g. the dashboard's static files ("/static/").
PUBLIC_PREFIXES: tuple[str, ...] = (STATIC_PREFIX,)

# The caller's token fingerprint (never the token itself), for per-token rate limits and logs.
TOKEN_ID = web.RequestKey("token_id", str)

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="jobservice"'}


def is_public(method: str, path: str) -> bool:
    """Whether ``method path`` may be called without a token."""
    method = "GET" if method == "HEAD" else method
    if (method, path) in PUBLIC_ROUTES:
        return True
    return method == "GET" and any(path.startswith(prefix) for prefix in PUBLIC_PREFIXES)


def token_fingerprint(token: str) -> str:
    """A short, stable id for a token that is safe to put in Redis keys and logs."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive).

    Exactly one space after the scheme and none around the token: a token with spaces around
    it is not what was configured, and trimming it would let a malformed header through."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token or token != token.strip():
        return None
    return token


def matching_token(given: str, tokens: tuple[str, ...]) -> str | None:
    """The configured token equal to ``given``, compared in constant time against every token.

    No early exit, and digests of equal length are compared (compare_digest's time still
    depends on the lengths): the time taken tells neither which token matched nor how long
    the tokens are.
    """
    given_digest = hashlib.sha256(given.encode()).digest()
    found = None
    for token in tokens:
        if hmac.compare_digest(hashlib.sha256(token.encode()).digest(), given_digest):
            found = token
    return found


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 without a bearer token, 403 with a wrong one; public routes pass untouched."""
    if is_public(request.method, request.path):
        return await handler(request)
    header = request.headers.get("Authorization")
    given = bearer_token(header)
    if given is None:
        if header is None and accepts_session(request.path):
            return await _with_session(request, handler)
        raise ApiError(401, "an API token is required: Authorization: Bearer <token>", CHALLENGE)
    token = matching_token(given, request.app[SETTINGS].api_tokens)
    if token is None:
        raise ApiError(403, "the API token is not valid")
    request[TOKEN_ID] = token_fingerprint(token)
    return await handler(request)


async def _with_session(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The dashboard's way in: its session cookie, CSRF-checked for state changes.

    A browser asking for a page without a session is sent to the sign-in page; anything
    else gets the API's usual 401.
    """
    tokens = {token_fingerprint(token) for token in request.app[SETTINGS].api_tokens}
    cookie = request.cookies.get(COOKIE, "")
    session = await load_session(request.app[REDIS], cookie, tokens) if cookie else None
    if session is None:
        if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
            raise web.HTTPSeeOther(URL(SIGN_IN_PATH).with_query(next=request.path_qs).human_repr())
        raise ApiError(401, "an API token is required: Authorization: Bearer <token>", CHALLENGE)
    await check_csrf(request, session)
    request[SESSION] = session
    request[TOKEN_ID] = session.token_id
    return await handler(request)
