"""Where a webhook may be sent: the guard against server-side request forgery.

A webhook URL is chosen by whoever holds an admin key, and the dispatcher runs inside the
network Touchpulse is deployed in; without a guard a subscription could make it POST to
the cloud metadata service (169.254.169.254), the database, or anything else on loopback
or a private network. So the host is resolved and the target refused when *any* of its
addresses is not a public unicast one — unless ``webhook_allow_private_targets`` is set
(local testing). The check runs when a subscription is created or changed and again
before every delivery, because DNS answers change; the delivery then connects to the very
address that was checked (TLS still verifies the certificate against the host name), so a
second, different DNS answer between the check and the connection (DNS rebinding) cannot
slip through. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_S = 5.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


class TargetError(ValueError):
    """The URL cannot be used as a webhook target; the message says why."""


class ForbiddenTarget(TargetError):
    """The URL resolves to an address webhooks may not be sent to."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the addresses it may be reached at."""

    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal, without brackets
    port: int
    path: str  # path and query, at least "/"
    addresses: tuple[IPAddress, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def url_for(self, address: IPAddress) -> str:
        """The URL with the host replaced by ``address``: connect to what was checked."""
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.path}"


@dataclass(frozen=True)
class ParsedUrl:
    scheme: str
    host: str
    port: int
    path: str


def parse_url(url: str) -> ParsedUrl:
    """Check the URL's form; raise :class:`TargetError` naming the problem."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetError(f"a webhook URL has at most {MAX_URL_LENGTH} characters")
    try:
        url.encode()
    except UnicodeEncodeError:
        raise TargetError("a webhook URL must be valid Unicode") from None
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise TargetError("a webhook URL may not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetError(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise TargetError("a webhook URL must start with https:// or http://")
    if parts.username is not None or parts.password is not None:
        # The URL is shown in every response and stored in plain text: no credentials in it.
        raise TargetError(
            "a webhook URL may not carry credentials; receivers authenticate webhooks by "
            "their signature"
        )
    if not parts.hostname:
        raise TargetError("a webhook URL needs a host")
    try:
        host = parts.hostname.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        raise TargetError("the host name is not a valid (international) domain name") from None
    if not host:
        raise TargetError("a webhook URL needs a host")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return ParsedUrl(scheme, host, port or _DEFAULT_PORTS[scheme], path)


def forbidden_reason(address: IPAddress) -> str | None:
    """Why webhooks may not go to ``address``, or None for a public unicast address."""
    checks: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4-mapped address *is* that IPv4 address (the socket connects over IPv4).
        if address.ipv4_mapped is not None:
            return forbidden_reason(address.ipv4_mapped)
        # Addresses that carry an IPv4 address inside are judged by it as well.
        if address.sixtofour is not None:
            checks.append(address.sixtofour)
        if address.teredo is not None:
            checks.extend(address.teredo)
        if address in _NAT64 or address in _IPV4_COMPATIBLE:
            checks.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    for candidate in checks:
        for reason, flagged in (
            ("unspecified", candidate.is_unspecified),
            ("loopback", candidate.is_loopback),
            ("link-local", candidate.is_link_local),
            ("private", candidate.is_private),
            ("multicast", candidate.is_multicast),
            ("reserved", candidate.is_reserved),
            (
                "site-local",
                isinstance(candidate, ipaddress.IPv6Address) and candidate.is_site_local,
            ),
            # Anything else not globally routable: shared address space (100.64.0.0/10),
            # documentation and benchmarking ranges, …
            ("not globally routable", not candidate.is_global),
        ):
            if flagged:
                return reason
    return None


async def system_resolver(host: str, port: int) -> Sequence[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


def _address(text: str) -> IPAddress:
    # A link-local IPv6 answer carries its zone ("fe80::1%eth0").
    return ipaddress.ip_address(text.partition("%")[0])


async def resolve_target(
    url: str,
    *,
    allow_private: bool,
    resolver: Resolver = system_resolver,
    timeout_s: float = RESOLVE_TIMEOUT_S,
) -> Target:
    """The checked target of ``url``.

    Raises :class:`ForbiddenTarget` when any address is not public (and that is not
    allowed), :class:`TargetError` for a malformed URL or a host that does not resolve.
    """
    parsed = parse_url(url)
    try:
        addresses: tuple[IPAddress, ...] = (_address(parsed.host),)
    except ValueError:
        try:
            async with asyncio.timeout(timeout_s):
                answers = await resolver(parsed.host, parsed.port)
        except (OSError, TimeoutError, UnicodeError) as exc:
            raise TargetError(f"the host {parsed.host!r} does not resolve: {exc}") from None
        unique: dict[IPAddress, None] = {}
        for answer in answers:
            unique[_address(answer)] = None
        addresses = tuple(unique)
        if not addresses:
            raise TargetError(f"the host {parsed.host!r} does not resolve") from None
    if not allow_private:
        for address in addresses:
            reason = forbidden_reason(address)
            if reason is not None:
                raise ForbiddenTarget(
                    f"webhooks may not be sent to {parsed.host!r}: it resolves to {address}, "
                    f"a {reason} address"
                )
    return Target(parsed.scheme, parsed.host, parsed.port, parsed.path, addresses)
