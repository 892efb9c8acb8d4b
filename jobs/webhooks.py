"""The deliver_webhook job: POST a JSON payload with the worker's shared HTTP session."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Annotated, Any

import aiohttp
from pydantic import AfterValidator, StringConstraints, ValidationInfo
from yarl import URL

from jobs.webhook_guard import TargetRefusedError, normalize_host, url_refusal
from jobs.webhook_ledger import delivery_record, read_head
from jobs.webhook_signing import signature_headers
from service.runtime import (
    Job,
    JobContext,
    JobInput,
    PermanentError,
    RateLimit,
    SlotLimit,
    TransientError,
    connection_problem,
    settings_in,
    webhook_destination,
)
from settings import Settings

MAX_RETRY_AFTER = 3600.0
MAX_RESPONSE_READ = 64 * 1024  # the answer's body is never needed; read a little, never more


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also accepts "²", which float() refuses
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(when.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER)


async def deliver_webhook(
    ctx: JobContext, *, url: str, payload: dict[str, Any] | list[Any]
) -> dict[str, int]:
    """POST a JSON payload to a public http(s) URL, with the job id as Idempotency-Key.

    2xx succeeds; 5xx, 429 and network errors are retried; 3xx and other 4xx fail. The
    ``Idempotency-Key`` header is the job id, the same on every attempt, so a receiver can drop
    repeats of a delivery it already handled; with WEBHOOK_SIGNING_SECRET set the request is
    signed too (jobs/webhook_signing.py). What came back goes to the attempt's ledger entry
    (jobs/webhook_ledger.py).
    """
    settings = ctx["settings"]
    refusal = url_refusal(url, settings.webhook_allowed_hosts)
    if refusal is not None:  # the web app checks this too; a job may come from elsewhere
        raise PermanentError(f"webhook target refused: {refusal}")
    timeout = settings.webhook_timeout
    client_timeout = aiohttp.ClientTimeout(
        total=timeout, connect=min(5.0, timeout), sock_read=timeout
    )
    body = json.dumps(payload)  # the exact text signed is the text sent
    headers = {
        "Idempotency-Key": ctx["job_id"],
        "User-Agent": "jobservice-webhooks/1",
        "Content-Type": "application/json",
        **signature_headers(settings.webhook_signing_secret, ctx["job_id"], body, time.time()),
    }
    started = time.perf_counter()
    try:
        async with ctx["http"].post(
            url, data=body.encode(), headers=headers, timeout=client_timeout, allow_redirects=False
        ) as response:
            status = response.status
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            head, cut = await read_head(response.content, MAX_RESPONSE_READ)
    except TargetRefusedError as exc:  # raised by the connector's GuardedResolver
        # the log gets the address the host resolved to (raised from), the client no more
        raise PermanentError(f"webhook target refused: {exc.public}") from exc
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
        ctx["delivery"] = delivery_record(status=None, duration_ms=_since(started))
        # aiohttp's text names the address; the log gets it (raised from), the client a reason
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            reason = "timed out"
        elif isinstance(exc, aiohttp.ClientPayloadError):
            reason = "the answer was cut short"
        elif isinstance(exc, aiohttp.ServerDisconnectedError):
            reason = "the server closed the connection"
        else:
            reason = connection_problem(exc)
        raise TransientError(f"webhook unreachable: {reason}") from exc
    except aiohttp.ClientError as exc:
        raise PermanentError(f"webhook request failed: {exc}") from exc

    elapsed_ms = _since(started)
    ctx["delivery"] = delivery_record(
        status=status, duration_ms=elapsed_ms, headers=response.headers, head=head, cut=cut
    )
    if status == 429 or status >= 500:
        # "come back later" said outright opens the host's circuit breaker at once
        unavailable = status in (429, 503) and retry_after is not None
        raise TransientError(
            f"webhook answered {status}", retry_after=retry_after, unavailable=unavailable
        )
    if status >= 400:
        raise PermanentError(f"webhook answered {status}: not retried")
    if status >= 300:
        raise PermanentError(f"webhook answered {status}: redirects are not followed")
    return {"status": status, "attempts": ctx["job_try"], "elapsed_ms": elapsed_ms}


def _since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _webhook_url(value: str, info: ValidationInfo) -> str:
    """An absolute http(s) URL to a public host (or one in WEBHOOK_ALLOWED_HOSTS)."""
    try:
        url = URL(value)
    except ValueError:
        raise ValueError("not a valid URL") from None
    if url.scheme not in {"http", "https"} or not url.host:
        raise ValueError("must be an absolute http:// or https:// URL")
    settings = settings_in(info.context)
    if settings is not None and (refusal := url_refusal(value, settings.webhook_allowed_hosts)):
        raise ValueError(refusal)
    return value


class DeliverWebhook(JobInput):
    url: Annotated[str, StringConstraints(max_length=2048), AfterValidator(_webhook_url)]
    payload: dict[str, Any] | list[Any]


def breaker_destination(kwargs: Mapping[str, Any], settings: Settings) -> str | None:
    """The circuit breaker a delivery obeys: its host's (service.worker.breakers)."""
    host = destination_host(kwargs)
    return None if host is None else webhook_destination(host)


def destination_host(kwargs: Mapping[str, Any]) -> str | None:
    """The host a delivery goes to: the webhooks to one host share WEBHOOK_HOST_CONCURRENCY
    worker slots, so a target that never answers cannot hold them all."""
    try:
        host = URL(str(kwargs.get("url", ""))).host
    except ValueError:
        return None  # the job refuses the URL itself, at once
    return normalize_host(host) if host else None


def rate_scope(kwargs: Mapping[str, Any]) -> str | None:
    """WEBHOOK_HOST_RATE_LIMIT counts each target host on its own."""
    host = destination_host(kwargs)
    return None if host is None else f"webhook:{host}"


JOB = Job(
    name="deliver_webhook",
    run=deliver_webhook,
    input=DeliverWebhook,
    time_limit=lambda settings: settings.webhook_job_timeout,
    api=True,
    max_payload=lambda settings: settings.webhook_max_payload_bytes,
    replayable=True,
    slots=SlotLimit(
        key=destination_host, per_key=lambda settings: settings.webhook_host_concurrency
    ),
    rate=RateLimit(
        scope=rate_scope,
        limit=lambda settings: settings.webhook_host_rate_limit,
        setting="WEBHOOK_HOST_RATE_LIMIT",
    ),
    search_keys=lambda job: [URL(job.url).host or ""],
    destination=breaker_destination,
)
