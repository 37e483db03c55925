"""The webhook allow-list (KSR_WEBHOOK_ALLOW): hosts and networks a callback may reach
although they are private.

A value of the settings, so it sits below them; the guard that applies it to a URL is
runner.callbacks.netguard.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["HOSTNAME", "Allowlist", "IPAddress", "IPNetwork"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$")


@dataclass(frozen=True)
class Allowlist:
    """Hosts and networks exempt from the private-address refusal (KSR_WEBHOOK_ALLOW).

    Entries: a hostname (`receiver.ns.svc`), a wildcard suffix (`*.example.internal`), an IP
    address or a CIDR. An allowed hostname exempts every address it resolves to.
    """

    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        """Raises ValueError naming the bad entry."""
        hosts: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            if entry.startswith("*."):
                if not HOSTNAME.match(entry[2:]):
                    raise ValueError(f"{raw!r} is not a valid wildcard host")
                suffixes.append(entry[1:])  # keep the dot: "*.a.b" matches "x.a.b", not "xa.b"
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if "/" in entry or not HOSTNAME.match(entry):
                raise ValueError(f"{raw!r} is neither a host name, an IP address nor a CIDR")
            hosts.add(entry)
        return cls(frozenset(hosts), tuple(suffixes), tuple(networks))

    def allows_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.hosts or any(host.endswith(s) for s in self.suffixes)

    def allows_address(self, address: IPAddress) -> bool:
        return any(address.version == n.version and address in n for n in self.networks)

    def opens(self, address: IPAddress, sealed: IPNetwork) -> bool:
        """Whether a listed network inside the sealed range `sealed` holds `address`: a
        broad CIDR (0.0.0.0/0, a CGNAT pod range) never opens link-local or metadata."""
        return any(_inside(n, sealed) and address.version == n.version and address in n for n in self.networks)

    def entries(self) -> list[str]:
        return sorted(self.hosts) + ["*" + s for s in self.suffixes] + [str(n) for n in self.networks]


def _inside(inner: IPNetwork, outer: IPNetwork) -> bool:
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False
