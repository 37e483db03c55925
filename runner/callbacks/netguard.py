"""SSRF guard for webhook URLs: which hosts and addresses a callback may reach.

Used twice: when a message is validated (so a bad URL dead-letters the message) and right
before every send (DNS may have changed since). The sender connects to exactly the addresses
returned here, so there is no second lookup an attacker's DNS could answer differently.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from runner.allowlist import HOSTNAME, Allowlist, IPAddress, IPNetwork
from runner.errors import HostUnresolvable, WebhookRefused

__all__ = [
    "Resolver",
    "Target",
    "check_url",
    "parse_target",
    "refusal_reason",
    "resolve_allowed",
    "sealed_range",
]

log = logging.getLogger(__name__)

# (host, port) -> addresses as strings; injectable so unit tests need no DNS.
Resolver = Callable[[str, int], Sequence[str]]

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_ULA = ipaddress.IPv6Network("fc00::/7")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_METADATA = ipaddress.IPv4Address("169.254.169.254")
_LINK_LOCAL: tuple[IPNetwork, ...] = (ipaddress.IPv4Network("169.254.0.0/16"), ipaddress.IPv6Network("fe80::/10"))
# Cloud metadata endpoints outside link-local: AWS over IPv6, Alibaba Cloud.
_METADATA_ELSEWHERE = {
    ipaddress.IPv6Address("fd00:ec2::254"): "the AWS metadata address (IPv6)",
    ipaddress.IPv4Address("100.100.100.200"): "the Alibaba Cloud metadata address",
}


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def sealed_range(address: IPAddress) -> tuple[str, IPNetwork] | None:
    """Why no webhook may reach `address` whatever host the allow list names, with the range
    that must itself be listed to open it; None for every other address.

    Link-local addresses and the clouds' metadata endpoints hand out credentials to whoever
    asks from inside the node: an allowed host name that resolves there (DNS rebinding, a
    careless record) must not make the runner ask.
    """
    inner = _embedded_ipv4(address)
    if inner is not None:
        found = sealed_range(inner)
        if found is not None:
            single = ipaddress.ip_network(address)
            return f"an IPv6 address embedding {inner}, which is {found[0]}", single
        return None
    if address in _METADATA_ELSEWHERE:
        return _METADATA_ELSEWHERE[address], ipaddress.ip_network(address)
    for network in _LINK_LOCAL:
        if address.version == network.version and address in network:
            what = "the cloud metadata address (link-local)" if address == _METADATA else "a link-local address"
            return what, network
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why a webhook must not reach this address by default, or None if it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address"
        if address in _ULA:
            return "an IPv6 unique local address"
        embedded = address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            inner = refusal_reason(embedded)
            if inner is not None:
                return f"an IPv6 address embedding {embedded}, which is {inner}"
            if address in _NAT64:
                return None  # DNS64 in an IPv6-only cluster: judged by the IPv4 address inside
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address == _METADATA:
        return "the cloud metadata address (link-local)"
    if address.is_link_local:
        return "a link-local address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "a carrier-grade NAT address (100.64.0.0/10)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved or non-global address"
    return None


@dataclass(frozen=True)
class Target:
    """A checked webhook URL: where to connect (the addresses) and what to ask for."""

    url: str
    scheme: str
    host: str  # as written in the URL, lowercased, without brackets
    port: int
    request_target: str  # path plus query, what goes on the request line
    addresses: tuple[IPAddress, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_target(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, request target) of a webhook URL; WebhookRefused if unusable."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise WebhookRefused(url, f"not a valid URL ({e})") from e
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookRefused(url, f"scheme must be http or https, got {scheme or 'none'!r}")
    if parts.username is not None or parts.password is not None:
        raise WebhookRefused(url, "credentials in the URL are not supported")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise WebhookRefused(url, "no host")
    if port is None:
        port = 443 if scheme == "https" else 80
    if port == 0:
        raise WebhookRefused(url, "port 0 is not a valid port")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return scheme, host, port, target


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        addr = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 zone id
        if addr not in seen:
            seen.append(addr)
    return seen


def check_url(url: str, allow: Allowlist, *, resolver: Resolver | None = None) -> Target:
    """Resolve a webhook URL and refuse it unless every address it resolves to may be reached.

    Raises WebhookRefused (HostUnresolvable when DNS gives no answer; `.temporary` tells a
    failing resolver from a name that does not exist).
    """
    scheme, host, port, request_target = parse_target(url)
    literal = _literal(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        if not HOSTNAME.match(host):
            raise WebhookRefused(url, f"host {host!r} is not a valid host name")
        try:
            found = (resolver or _system_resolver)(host, port)
        except socket.gaierror as e:
            temporary = e.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None))
            raise HostUnresolvable(
                url, f"host {host!r} does not resolve ({e.strerror or e})", temporary=temporary
            ) from e
        except OSError as e:
            raise HostUnresolvable(url, f"host {host!r} could not be resolved ({e})", temporary=True) from e
        addresses = []
        for text in found:
            addr = _literal(text)
            if addr is not None and addr not in addresses:
                addresses.append(addr)
        if not addresses:
            raise HostUnresolvable(url, f"host {host!r} resolved to no addresses", temporary=True)

    for addr in addresses:
        sealed = sealed_range(addr)
        if sealed is not None and not allow.opens(addr, sealed[1]):
            where = str(addr) if literal is not None else f"{host!r} resolves to {addr}"
            raise WebhookRefused(
                url, f"{where}, {sealed[0]}; only {sealed[1]} or a range inside it in KSR_WEBHOOK_ALLOW permits it"
            )
    if not allow.allows_host(host):
        # Any refused address refuses the URL: a name mixing public and private answers is
        # exactly what a DNS-rebinding attacker would serve.
        for addr in addresses:
            reason = refusal_reason(addr)
            if reason is not None and not allow.allows_address(addr):
                where = str(addr) if literal is not None else f"{host!r} resolves to {addr}"
                raise WebhookRefused(
                    url, f"{where}, {reason}; add the host or a CIDR to KSR_WEBHOOK_ALLOW to permit it"
                )
    log.debug("webhook %s allowed, addresses %s", host, addresses)
    return Target(url, scheme, host, port, request_target, tuple(addresses))


def resolve_allowed(url: str, allow: Allowlist, *, resolver: Resolver | None = None) -> list[IPAddress]:
    """The addresses a webhook URL may be sent to; raises WebhookRefused otherwise."""
    return list(check_url(url, allow, resolver=resolver).addresses)
