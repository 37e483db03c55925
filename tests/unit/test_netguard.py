"""The SSRF guard: address classification, the allow list, URL checks."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import pytest

from runner.allowlist import Allowlist
from runner.callbacks.netguard import (
    Resolver,
    check_url,
    refusal_reason,
    resolve_allowed,
)
from runner.errors import HostUnresolvable, WebhookRefused


@pytest.mark.parametrize(
    "address, fragment",
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("fc00::1", "unique local"),
        ("fd00:ec2::254", "unique local"),
        ("::ffff:127.0.0.1", "IPv4-mapped"),
        ("::ffff:8.8.8.8", "IPv4-mapped"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("2002:a00:1::", "embedding 10.0.0.1"),  # 6to4 wrapping a private address
        ("64:ff9b::a9fe:a9fe", "embedding 169.254.169.254"),  # NAT64 wrapping the metadata address
        ("240.0.0.1", ""),  # reserved (Python files it under private)
        ("192.0.2.10", ""),  # documentation range: not global
    ],
)
def test_refused_addresses(address: str, fragment: str) -> None:
    reason = refusal_reason(ipaddress.ip_address(address))
    assert reason is not None and fragment in reason


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "100.128.0.1"]
)
def test_public_addresses(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_allowlist_parse_and_match() -> None:
    allow = Allowlist.parse(["Receiver.Test.", " *.svc.cluster.local", "10.0.0.0/8", "127.0.0.1", "[::1]", ""])
    assert allow.allows_host("receiver.test") and allow.allows_host("RECEIVER.test.")
    assert allow.allows_host("hook.ns.svc.cluster.local") and not allow.allows_host("svc.cluster.local.evil")
    assert not allow.allows_host("xsvc.cluster.local")
    assert allow.allows_address(ipaddress.ip_address("10.20.30.40"))
    assert allow.allows_address(ipaddress.ip_address("127.0.0.1"))
    assert not allow.allows_address(ipaddress.ip_address("127.0.0.2"))
    assert allow.allows_address(ipaddress.ip_address("::1"))
    assert allow.entries() == ["receiver.test", "*.svc.cluster.local", "10.0.0.0/8", "127.0.0.1/32", "::1/128"]


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "has space", "a/b", "*.", "http://x"])
def test_allowlist_rejects_garbage(entry: str) -> None:
    with pytest.raises(ValueError):
        Allowlist.parse([entry])


def fixed(answers: dict[str, list[str]]) -> Resolver:
    def resolve(host: str, port: int) -> Sequence[str]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    return resolve


def test_check_url_gives_the_checked_addresses_and_request_target() -> None:
    target = check_url(
        "https://Hook.Example:8443/cb/x?a=1#frag",
        Allowlist(),
        resolver=fixed({"hook.example": ["93.184.216.34", "2606:2800:220:1::1", "93.184.216.34"]}),
    )
    assert target.scheme == "https" and target.host == "hook.example" and target.port == 8443
    assert target.request_target == "/cb/x?a=1"
    assert [str(a) for a in target.addresses] == ["93.184.216.34", "2606:2800:220:1::1"]
    assert target.host_header == "hook.example:8443"
    assert check_url("http://[2606:2800:220:1::1]/", Allowlist()).host_header == "[2606:2800:220:1::1]"
    assert check_url("http://93.184.216.34", Allowlist()).request_target == "/"


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("ftp://93.184.216.34/", "scheme must be http or https"),
        ("file:///etc/passwd", "scheme"),
        ("http://", "no host"),
        ("http://93.184.216.34:99999/", "not a valid URL"),
        ("http://93.184.216.34:0/", "port 0"),
        ("http://a@93.184.216.34/", "credentials"),
        ("http://bad_host!/", "not a valid host name"),
        ("http://2130706433/", "does not resolve"),  # decimal IP tricks go to the resolver, which says no
    ],
)
def test_check_url_refuses(url: str, fragment: str) -> None:
    with pytest.raises(WebhookRefused, match=fragment):
        check_url(url, Allowlist(), resolver=fixed({}))


def test_allowed_host_exempts_all_its_addresses_and_cidr_exempts_one() -> None:
    answers = fixed({"both.test": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(WebhookRefused, match="10.0.0.7, a private address"):
        check_url("http://both.test/", Allowlist(), resolver=answers)
    assert len(resolve_allowed("http://both.test/", Allowlist.parse(["both.test"]), resolver=answers)) == 2
    assert len(resolve_allowed("http://both.test/", Allowlist.parse(["10.0.0.0/24"]), resolver=answers)) == 2


def test_resolution_failures_say_whether_to_retry() -> None:
    def down(host: str, port: int) -> Sequence[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(HostUnresolvable) as caught:
        check_url("http://x.test/", Allowlist(), resolver=down)
    assert caught.value.temporary
    with pytest.raises(HostUnresolvable) as caught:
        check_url("http://x.test/", Allowlist(), resolver=fixed({}))
    assert not caught.value.temporary


def test_localhost_via_the_system_resolver() -> None:
    with pytest.raises(WebhookRefused, match="loopback"):
        check_url("http://localhost:1/", Allowlist())
    assert ipaddress.ip_address("127.0.0.1") in resolve_allowed(
        "http://localhost:1/", Allowlist.parse(["localhost"])
    ) or ipaddress.ip_address("::1") in resolve_allowed("http://localhost:1/", Allowlist.parse(["localhost"]))


ALWAYS_REFUSED = [
    ("169.254.169.254", "metadata"),  # AWS, GCP, Azure, OpenStack
    ("169.254.170.2", "link-local"),  # ECS task metadata
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fd00:ec2::254", "metadata"),  # AWS IMDS over IPv6
    ("100.100.100.200", "metadata"),  # Alibaba Cloud
    ("::ffff:169.254.169.254", "169.254.169.254"),  # the same, IPv4-mapped
    ("64:ff9b::a9fe:a9fe", "169.254.169.254"),  # the same, through NAT64
]


@pytest.mark.parametrize(("address", "fragment"), ALWAYS_REFUSED)
def test_an_allowed_host_never_reaches_link_local_or_metadata_addresses(address: str, fragment: str) -> None:
    answers = fixed({"hook.svc.cluster.local": ["93.184.216.34", address]})
    for allow in (["hook.svc.cluster.local"], ["*.svc.cluster.local"], ["0.0.0.0/0", "::/0"], ["100.64.0.0/10"]):
        with pytest.raises(WebhookRefused, match=fragment):
            check_url("http://hook.svc.cluster.local/", Allowlist.parse(allow), resolver=answers)


@pytest.mark.parametrize(("address", "fragment"), ALWAYS_REFUSED)
def test_a_broad_cidr_does_not_open_link_local_or_metadata_literals(address: str, fragment: str) -> None:
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(WebhookRefused, match=fragment):
        check_url(f"http://{host}/", Allowlist.parse(["0.0.0.0/0", "::/0", "100.64.0.0/10"]))


@pytest.mark.parametrize(
    ("address", "listed"),
    [
        ("169.254.169.254", "169.254.169.254"),
        ("169.254.169.254", "169.254.0.0/16"),
        ("169.254.170.2", "169.254.170.0/24"),
        ("fe80::1", "fe80::/10"),
        ("100.100.100.200", "100.100.100.200/32"),
    ],
)
def test_listing_the_range_itself_opens_it(address: str, listed: str) -> None:
    answers = fixed({"hook.test": [address]})
    allow = Allowlist.parse(["hook.test", listed])
    assert [str(a) for a in resolve_allowed("http://hook.test/", allow, resolver=answers)] == [address]
