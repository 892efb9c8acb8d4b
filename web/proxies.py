"""The client's address, scheme and host as a reverse proxy saw them (TRUSTED_PROXIES).

Behind a TLS-terminating proxy (nginx) the app sees the proxy's address and plain http: the
dashboard's Origin check then compares ``https://site`` with ``http://upstream`` and refuses
every form, the session cookie loses ``Secure``, and the sign-in limit counts every user as
the proxy. The proxy says what it saw in ``X-Forwarded-For``, ``X-Forwarded-Proto`` and
``X-Forwarded-Host``; anyone can send those headers, so they are believed only on a
connection from an address in TRUSTED_PROXIES, and from anyone else they change nothing.

Reading them is aiohttp-remotes' ``XForwardedFiltered``: X-Forwarded-For from right to left,
skipping trusted addresses (a chain of proxies), the client being the first untrusted one,
with the scheme and host at the same hop. That class alone would believe any peer, so it is
called only once the peer itself is trusted.

``Forwarded`` (RFC 7239) is not read: nginx passes a client's own ``Forwarded`` header through
untouched, so believing it from a trusted nginx would let any client name its own address.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_remotes import XForwardedFiltered

# Set on the connection's request when a trusted proxy says the client spoke HTTPS: answers
# are prepared with that request (on_response_prepare), not the one the proxy's headers made.
FORWARDED_HTTPS = web.RequestKey("forwarded_https", bool)
# A year, this host only: subdomains may be other services, not all of them behind TLS
HSTS = "max-age=31536000"


class TrustedProxies:
    """The middleware that applies forwarded headers sent by trusted proxies, and only them."""

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks: list[IPv4Network | IPv6Network] = [ip_network(n) for n in networks]
        self._forwarded = XForwardedFiltered(set(self._networks)) if self._networks else None

    def trusts(self, peer: str | None) -> bool:
        """Whether the connection's other end (an IP address; None on a Unix socket) is one
        of the trusted proxies."""
        try:
            address = ip_address(peer or "")
        except ValueError:
            return False
        if isinstance(address, IPv6Address) and address.ipv4_mapped:  # a dual-stack socket
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._forwarded is None or not self.trusts(request.remote):
            return await handler(request)

        async def as_forwarded(seen: web.Request) -> web.StreamResponse:
            request[FORWARDED_HTTPS] = seen.secure
            return await handler(seen)

        return await self._forwarded.middleware(request, as_forwarded)


async def strict_transport_security(request: web.Request, response: web.StreamResponse) -> None:
    """Tell browsers to use HTTPS only, on answers that went out over HTTPS (seen through a
    trusted proxy): over plain http the header would be ignored, and it must not be sent
    where nobody set up TLS."""
    if request.secure or request.get(FORWARDED_HTTPS, False):
        response.headers["Strict-Transport-Security"] = HSTS
