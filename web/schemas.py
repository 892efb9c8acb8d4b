"""Request bodies, validated by pydantic in strict mode: wrong types are refused, not coerced."""

from __future__ import annotations

import functools
import unicodedata
from datetime import date
from typing import Annotated, Any, TypeVar

from aiohttp import web
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from yarl import URL

from web.errors import ApiError

Model = TypeVar("Model", bound=BaseModel)


def _no_control_characters(value: str) -> str:
    """CR/LF, other control characters and Unicode line breaks in a header would let a client
    inject headers (``str.splitlines`` also splits on U+2028/U+2029)."""
    if any(unicodedata.category(char) in {"Cc", "Zl", "Zp"} for char in value):
        raise ValueError("must not contain control characters such as CR or LF")
    return value


# The addresses most recently found valid. The checks cost more than all the rest of a
# request's parsing; many emails go to an address already seen, and those skip them.
VALID_ADDRESSES_KEPT = 4096


@functools.lru_cache(maxsize=VALID_ADDRESSES_KEPT)
def _email_address(value: str) -> str:
    """The normalized address; a ValueError (never kept) for an invalid one."""
    _no_control_characters(value)
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None


def _webhook_url(value: str) -> str:
    try:
        url = URL(value)
    except ValueError:
        raise ValueError("not a valid URL") from None
    if url.scheme not in {"http", "https"} or not url.host:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value


EmailAddress = Annotated[
    str,
    StringConstraints(max_length=320),
    AfterValidator(_email_address),
    Field(json_schema_extra={"format": "email"}),  # for the OpenAPI description
]
HeaderText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_no_control_characters),
]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class SendEmailRequest(Strict):
    to: EmailAddress
    subject: HeaderText
    body: Annotated[str, StringConstraints(max_length=100_000)]


class RegisterRequest(Strict):
    name: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
        AfterValidator(_no_control_characters),
    ]
    email: EmailAddress


class EventRequest(Strict):
    event: dict[str, Any]


class WebhookRequest(Strict):
    url: Annotated[str, StringConstraints(max_length=2048), AfterValidator(_webhook_url)]
    payload: dict[str, Any] | list[Any]


class DailyReportRequest(Strict):
    day: date | None = None


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "body"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


async def parse_json(request: web.Request, model: type[Model], *, optional: bool = False) -> Model:
    """The request's JSON body as ``model``; any problem is a 400 naming the field."""
    raw = await request.read()
    if optional and not raw:  # no body at all; whitespace alone is not JSON (a 400)
        return model()
    try:
        # JSON mode keeps strict types as JSON has them (a date may be an ISO string)
        return model.model_validate_json(raw)
    except ValidationError as exc:
        kinds = {item["type"] for item in exc.errors() if not item["loc"]}
        if "json_invalid" in kinds:
            raise ApiError(400, "request body must be valid JSON") from None
        if "model_type" in kinds:
            raise ApiError(400, "request body must be a JSON object") from None
        raise ApiError(400, _describe(exc)) from None
