"""Standard Webhooks signatures for deliver_webhook (https://www.standardwebhooks.com/).

A receiver can tell our deliveries from forged or altered ones, and old ones played again:
each request carries ``webhook-id`` (the job id, the same on every attempt, so repeats can be
dropped), ``webhook-timestamp`` (this attempt's time, whole seconds) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, one per WEBHOOK_SIGNING_SECRET,
space-separated, so a receiver holding either key of a rotation accepts it). The signature is
the ``standardwebhooks`` library's own ``Webhook.sign``: what we send is what its ``verify``
checks. Without a secret nothing is added: deliveries go unsigned.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import SecretStr
from standardwebhooks import Webhook


@functools.lru_cache(maxsize=4)
def _signer(secret: str) -> Webhook:
    return Webhook(secret)  # decodes the whsec_ key once, not on every delivery


def signature_headers(
    secrets: Sequence[SecretStr], message_id: str, body: str, sent_at: float
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body`` sent at ``sent_at`` (epoch seconds);
    none without a secret."""
    if not secrets:
        return {}
    timestamp = datetime.fromtimestamp(int(sent_at), UTC)
    signatures = " ".join(
        _signer(secret.get_secret_value()).sign(message_id, timestamp, body) for secret in secrets
    )
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(sent_at)),
        "webhook-signature": signatures,
    }
