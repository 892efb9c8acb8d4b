"""Where a webhook may be sent: public addresses only, unless the operator allow-lists a host.

Without this, anyone who can queue a webhook could make the worker POST to Redis on loopback,
to the cloud metadata service on 169.254.169.254, or to any host of the private network (SSRF).

Two checks, one rule (:func:`address_refusal`):

- :func:`url_refusal` judges what the URL alone tells: scheme, ``localhost`` names and IP-literal
  hosts (also odd forms such as ``127.1`` or ``0x7f000001`` that ``inet_aton`` accepts). The web
  app runs it at the door (400) and the job again before sending.
- :class:`GuardedResolver` judges every address a host name resolves to, inside the HTTP
  client's connector, so the addresses checked are the ones connected to: a DNS answer that
  changes between a check and the connection (DNS rebinding) cannot slip through.

Hosts in ``WEBHOOK_ALLOWED_HOSTS`` skip both checks: an explicit opening for internal targets,
on every port, or on one port only when the entry names it (``hooks.internal:8443``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Checked in order, so the more telling name wins; anything else not globally routable is
# refused by the catch-all in address_refusal.
_BLOCKED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "an unspecified ('this host') address"),
    ("127.0.0.0/8", "a loopback address"),
    ("10.0.0.0/8", "a private address"),
    ("172.16.0.0/12", "a private address"),
    ("192.168.0.0/16", "a private address"),
    ("100.64.0.0/10", "a carrier-grade NAT address"),
    ("169.254.0.0/16", "a link-local address (cloud metadata lives there)"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
    ("::/128", "an unspecified address"),
    ("::1/128", "a loopback address"),
    ("::/96", "an IPv4-compatible IPv6 address"),
    ("::ffff:0:0/96", "an IPv4-mapped IPv6 address"),
    ("64:ff9b::/96", "a NAT64 address that embeds an IPv4 address"),
    ("2002::/16", "a 6to4 address that embeds an IPv4 address"),
    ("2001::/32", "a Teredo address that embeds an IPv4 address"),
    ("fc00::/7", "a unique-local address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
)
BLOCKED_NETWORKS = tuple((ipaddress.ip_network(net), why) for net, why in _BLOCKED)
LOCALHOST_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class TargetRefusedError(Exception):
    """The webhook's target is not a public address (and not allow-listed): never retried.

    Its message, for the worker's log, may name the address a host resolved to; ``public``
    says only that the target was refused, for the job's status: a client that could read
    what our DNS answers for a name could map internal hosts through its webhooks."""

    def __init__(self, detail: str, public: str | None = None) -> None:
        super().__init__(detail)
        self.public = detail if public is None else public


def address_refusal(address: IPAddress) -> str | None:
    """Why the worker must not connect to ``address``, or None for a public address."""
    for network, why in BLOCKED_NETWORKS:
        if address.version == network.version and address in network:
            return why
    if not address.is_global or address.is_multicast:
        return "not a public address"
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address when ``host`` is an IP literal, in any form a resolver would accept."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        # inet_aton takes what getaddrinfo takes: "127.1", "0x7f.1", "2130706433", "0177.0.0.1"
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def normalize_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def allowed_entry(entry: str) -> tuple[str, int | None]:
    """A WEBHOOK_ALLOWED_HOSTS entry as (host, port): ``hooks.internal`` or ``10.0.0.7`` opens
    every port (None), ``hooks.internal:8443`` or ``[fd00::7]:8443`` that port only; a bare
    IPv6 address (``fd00::7``) has no port. A malformed port is a ValueError (settings.py
    refuses it at start with the same rule)."""
    entry = entry.strip()
    port: str | None = None
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        if rest:
            port = rest[1:] if rest.startswith(":") else rest  # "]x": refused below
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    else:
        host = entry
    if port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{entry!r}: a port must be a number from 1 to 65535")
    return normalize_host(host), None if port is None else int(port)


def is_allowed(host: str, port: int | None, allowed_hosts: Iterable[str]) -> bool:
    """Whether an entry of ``allowed_hosts`` opens ``host`` on ``port``."""
    name = normalize_host(host)
    for entry in allowed_hosts:
        allowed_host, allowed_port = allowed_entry(entry)
        if allowed_host == name and allowed_port in (None, port):
            return True
    return False


def url_refusal(url: str, allowed_hosts: Iterable[str]) -> str | None:
    """Why ``url`` may not be a webhook target, as far as the URL alone tells; None if it may."""
    try:
        parsed = URL(url)
    except ValueError:
        return "not a valid URL"
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        return "must be an absolute http:// or https:// URL"
    host = parsed.host
    if is_allowed(host, parsed.port, allowed_hosts):
        return None
    name = normalize_host(host)
    if name in LOCALHOST_NAMES or name.endswith(".localhost"):
        return f"{host} is this machine: refused (allow it with WEBHOOK_ALLOWED_HOSTS)"
    address = literal_address(name)
    if address is not None:
        why = address_refusal(address) or "an IP address"
        return (
            f"{host} is {why}: webhooks go to public host names only "
            "(allow it with WEBHOOK_ALLOWED_HOSTS)"
        )
    return None


class GuardedResolver(AbstractResolver):
    """Resolves like ``inner`` but refuses a host if any of its addresses is not public."""

    def __init__(
        self, allowed_hosts: Iterable[str] = (), inner: AbstractResolver | None = None
    ) -> None:
        self._allowed = tuple(allowed_hosts)
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if is_allowed(host, port, self._allowed):
            return results
        for result in results:
            try:
                address: IPAddress = ipaddress.ip_address(result["host"])
            except ValueError:
                raise TargetRefusedError(
                    f"{host} resolves to an unreadable address: refused",
                    public=f"{host} does not resolve to a public address: refused",
                ) from None
            why = address_refusal(address)
            if why is not None:
                # one bad address refuses the host: mixing in a private one is a known trick
                raise TargetRefusedError(
                    f"{host} resolves to {address}, {why}: refused "
                    "(allow it with WEBHOOK_ALLOWED_HOSTS)",
                    public=f"{host} does not resolve to a public address: refused "
                    "(allow it with WEBHOOK_ALLOWED_HOSTS)",
                )
        return results

    async def close(self) -> None:
        await self._inner.close()
