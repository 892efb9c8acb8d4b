"""The mailbox an address delivers to, as RATE_LIMIT_PER_RECIPIENT counts it.

``victim+1@example.com`` and ``victim+2@example.com`` reach one inbox, so counting spellings
would let anyone multiply the limit by tagging (README "Security"). Rules applied, to the
address the API already validated and normalized:

- the whole address lower-cased (mail servers treat local parts case-blind in practice);
- a sub-address tag removed: everything from the first ``+`` in the local part (Gmail,
  Outlook, Fastmail, Proton, iCloud and Postfix's default ``recipient_delimiter`` all use
  ``+``); a local part that starts with ``+`` is kept whole;
- for gmail.com and googlemail.com (one mailbox under both names): the dots in the local
  part removed, and the domain counted as gmail.com.

Only the limit uses this: messages go to the address as given, tag and dots included.
"""

from __future__ import annotations

GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


def canonical_mailbox(address: str) -> str:
    """``"V.ictim+news@GoogleMail.com"`` -> ``"victim@gmail.com"``; see the module docstring."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        return address.strip().lower()
    local = local.split("+", 1)[0] or local
    if domain in GMAIL_DOMAINS:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"
