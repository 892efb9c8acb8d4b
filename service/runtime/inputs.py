"""Input models: a job's keyword arguments as the API validates them before queueing.

A job declares a pydantic model (a :class:`JobInput`) whose fields are its keyword arguments.
The web app validates every request against it in strict mode (wrong types are refused, not
coerced) and answers 400 naming the field; only a valid job is queued. The field types here
carry the checks the service's own jobs share:

- :data:`HeaderText`: one line of text (no control, format or invisible characters:
  service.runtime.text);
- :data:`EmailAddress`: a valid address, normalized;
- :data:`MailRecipient`: an address the job will send mail to; the API counts every request's
  recipients against RATE_LIMIT_PER_RECIPIENT, whichever route queues the job.

Validators that need the settings find them in the validation context
(``info.context["settings"]``), which the web app always passes.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from service.runtime.text import refusal
from settings import Settings


class JobInput(BaseModel):
    """Base of every input model: strict types, no unknown fields, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class NoInput(JobInput):
    """For a job that takes no arguments."""


def no_control_characters(value: str) -> str:
    """Text that may reach a mail header: the one rule of service.runtime.text (control
    characters would inject headers; format characters and invisibles would spoof them)."""
    if (reason := refusal(value)) is not None:
        raise ValueError(reason)
    return value


def untrimmed_at_most(limit: int) -> BeforeValidator:
    """A length limit on the text as sent, before surrounding whitespace is stripped.

    The OpenAPI description says ``maxLength`` of the JSON string itself; a limit counted only
    after stripping would accept a longer string than the description allows (found by the
    schemathesis run: 101 characters, the first a vertical tab, got a 201)."""

    def check(value: Any) -> Any:
        if isinstance(value, str) and len(value) > limit:
            raise ValueError(f"String should have at most {limit} characters")
        return value

    return BeforeValidator(check)


# The addresses most recently found valid. The checks cost more than all the rest of a
# request's parsing; many emails go to an address already seen, and those skip them.
VALID_ADDRESSES_KEPT = 4096


@functools.lru_cache(maxsize=VALID_ADDRESSES_KEPT)
def _email_address(value: str) -> str:
    """The normalized address; a ValueError (never kept) for an invalid one."""
    no_control_characters(value)
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None


class _MailRecipientMark:
    """Marks a field whose address the job will mail (see :func:`mail_recipients`)."""

    def __repr__(self) -> str:
        return "MailRecipient"


MAIL_RECIPIENT = _MailRecipientMark()

EmailAddress = Annotated[
    str,
    StringConstraints(max_length=320),
    AfterValidator(_email_address),
    Field(json_schema_extra={"format": "email"}),  # for the OpenAPI description
]
MailRecipient = Annotated[EmailAddress, MAIL_RECIPIENT]
HeaderText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    untrimmed_at_most(200),
    AfterValidator(no_control_characters),
]


@functools.cache
def _recipient_fields(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(
        name
        for name, info in model.model_fields.items()
        if any(item is MAIL_RECIPIENT for item in info.metadata)
    )


def mail_recipients(model: BaseModel) -> list[str]:
    """The addresses a validated input says its job will mail."""
    values = (getattr(model, name) for name in _recipient_fields(type(model)))
    return [value for value in values if isinstance(value, str)]


def settings_in(context: Any) -> Settings | None:
    """The settings a validator was given in its context, if any."""
    settings = context.get("settings") if isinstance(context, dict) else None
    return settings if isinstance(settings, Settings) else None
