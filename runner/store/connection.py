"""The one way to a Redis client: plain, TLS, ACL credentials, or the primary Sentinel names.

Every process of a pod gets its clients here (the runner and its Redis lock, the RQ
worker, the probes, the CLI), so `REDIS_URL` and the `KSR_REDIS_*` variables mean the
same everywhere. With Sentinel the client is redis-py's own `Sentinel.master_for`: each
new connection asks the sentinels for the primary, and a connection that finds a replica
(`READONLY`) or a dead address is dropped, so the next command reaches the new primary.

`preflight` is the check at start: it turns the mistakes an operator can make (wrong CA,
plain URL against a TLS port, wrong password, a user without the needed rights, an
unknown master name) into one ConfigError naming the variable to change. An unreachable
Redis is not such a mistake: the runner waits for it.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from runner.errors import ConfigError
from runner.settings import RedisSettings

__all__ = ["connect", "describe", "preflight", "require"]


def _retry(retries: int) -> Retry:
    if retries <= 0:
        return Retry(NoBackoff(), 0)
    # Enough for one Sentinel failover to be noticed by the next attempt, short enough
    # that a caller's own timeout still bounds the call.
    return Retry(ExponentialBackoff(cap=1.0, base=0.1), retries)


def _tls_options(r: RedisSettings) -> dict[str, Any]:
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if r.tls_ca is not None:
        options["ssl_ca_certs"] = str(r.tls_ca)
    if r.tls_cert is not None and r.tls_key is not None:
        options["ssl_certfile"] = str(r.tls_cert)
        options["ssl_keyfile"] = str(r.tls_key)
    return options


def _credentials(r: RedisSettings, parsed: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    username = r.username if r.username is not None else parsed.get("username")
    password = r.password if r.password is not None else parsed.get("password")
    if username:
        out["username"] = username
    if password:
        out["password"] = password
    return out


def connect(
    r: RedisSettings,
    *,
    socket_timeout: float | None,
    connect_timeout: float = 5.0,
    retries: int = 0,
    health_check_interval: int = 0,
) -> redis.Redis:
    """A client (bytes replies) for `r`. `retries` are redis-py's own, on connection errors
    and timeouts: 0 where a caller bounds its time itself (the lock, probes, the CLI)."""
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": _retry(retries),
        "health_check_interval": health_check_interval,
    }
    if not r.sentinels:
        options = dict(common)
        options.update(_credentials(r, parse_url(r.url)))
        if r.tls:
            options.update(_tls_options(r))
        return redis.Redis.from_url(r.url, **options)

    parsed = parse_url(r.url)
    data_node: dict[str, Any] = dict(common, db=int(parsed.get("db", 0) or 0), **_credentials(r, parsed))
    if r.tls:
        data_node.update(ssl=True, **_tls_options(r))
    sentinel_node: dict[str, Any] = {
        "socket_timeout": connect_timeout if socket_timeout is None else min(socket_timeout, connect_timeout),
        "socket_connect_timeout": connect_timeout,
    }
    if r.sentinel_username:
        sentinel_node["username"] = r.sentinel_username
    if r.sentinel_password:
        sentinel_node["password"] = r.sentinel_password
    if r.sentinel_tls:
        sentinel_node.update(ssl=True, **_tls_options(r))
    sentinel = Sentinel(list(r.sentinels), sentinel_kwargs=sentinel_node, **data_node)
    return sentinel.master_for(r.master, redis_class=redis.Redis, **data_node)


def describe(r: RedisSettings) -> str:
    """Where Redis is, for logs and errors: never a password."""
    if r.sentinels:
        hosts = ",".join(f"{h}:{p}" for h, p in r.sentinels)
        return f"master {r.master!r} of sentinels {hosts}"
    return r.masked_url


def preflight(client: redis.Redis, r: RedisSettings) -> bool:
    """PING once. True when Redis answered, False when it is unreachable (the caller waits
    for it); a ConfigError naming the variable when the answer shows a configuration mistake."""
    try:
        client.ping()
        return True
    except redis.AuthenticationError as e:
        raise ConfigError(_credential_variable(r), f"Redis refused the credentials ({e}) at {describe(r)}") from None
    except redis.ResponseError as e:
        if str(e).startswith("NOPERM"):
            raise ConfigError(_user_variable(r), f"the ACL user may not run PING ({e})") from None
        raise
    except MasterNotFoundError as e:
        # Also what a failover in progress looks like (the primary is down, none promoted
        # yet): only a name that no answering sentinel monitors is a mistake.
        if _sentinels_answer_without(r):
            raise ConfigError("KSR_REDIS_MASTER", f"no sentinel of KSR_REDIS_SENTINELS monitors it ({e})") from None
        return False
    except (redis.ConnectionError, redis.TimeoutError) as e:
        problem = _tls_problem(str(e), r)
        if problem is not None:
            raise ConfigError(*problem) from None
        return False


def require(r: RedisSettings, what: str, call: Any) -> Any:
    """`call()`, with a NOPERM answer turned into a ConfigError naming the ACL user's variable."""
    try:
        return call()
    except redis.ResponseError as e:
        if str(e).startswith("NOPERM") or "no permissions" in str(e):
            raise ConfigError(
                _user_variable(r), f"the ACL user cannot {what} ({e}); docs/redis.md has the minimal ACL"
            ) from None
        raise


def _sentinels_answer_without(r: RedisSettings) -> bool:
    """True when some sentinel answers and none of those that answer monitors `r.master`."""
    answered = False
    tls = {"ssl": True, **_tls_options(r)} if r.sentinel_tls else {}
    for host, port in r.sentinels:
        probe = redis.Redis(
            host=host,
            port=port,
            username=r.sentinel_username,
            password=r.sentinel_password,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            retry=Retry(NoBackoff(), 0),
            **tls,
        )
        try:
            if r.master in probe.sentinel_masters():
                return False
            answered = True
        except redis.RedisError:
            continue
        finally:
            probe.close()
    return answered


def _credential_variable(r: RedisSettings) -> str:
    return "KSR_REDIS_PASSWORD" if r.password is not None else "REDIS_URL"


def _user_variable(r: RedisSettings) -> str:
    return "KSR_REDIS_USERNAME" if r.username is not None else "REDIS_URL"


def _tls_problem(text: str, r: RedisSettings) -> tuple[str, str] | None:
    """(variable, problem) when a connection error is a TLS mismatch, None otherwise."""
    where = describe(r)
    lowered = text.lower()
    if "hostname mismatch" in lowered or "doesn't match" in lowered or "ip address mismatch" in lowered:
        return "REDIS_URL", f"the server's certificate does not name the host of {where} ({text})"
    if "certificate verify failed" in lowered:
        variable = "KSR_REDIS_TLS_CA"
        return variable, f"the server's certificate at {where} is not signed by this CA ({text})"
    if "wrong version number" in lowered or "record layer failure" in lowered or "unexpected eof" in lowered:
        return "REDIS_URL", f"{where} does not speak TLS: use redis:// ({text})"
    if not r.tls and ("closed by server" in lowered or "connection reset" in lowered):
        return "REDIS_URL", f"{where} closed a plain connection: a TLS port needs rediss:// ({text})"
    if r.tls and ("alert" in lowered or "eof occurred in violation" in lowered):
        # The server ended the handshake: it wants a client certificate, or not this one.
        variable = "KSR_REDIS_TLS_CERT"
        return variable, f"{where} refused the TLS client (no or an unknown client certificate; {text})"
    if r.tls and ("timed out" in lowered or "timeout" in lowered) and not r.sentinels and _answers_plain(r):
        return "REDIS_URL", f"{where} answers plain Redis, not TLS: use redis://"
    return None


def _answers_plain(r: RedisSettings) -> bool:
    """True when the URL's host:port answers a plain PING (any reply, even NOAUTH)."""
    parsed = parse_url(r.url)
    probe = redis.Redis(
        host=parsed.get("host", "localhost"), port=int(parsed.get("port", 6379)), socket_timeout=1.0,
        socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0),
    )  # fmt: skip
    try:
        probe.ping()
        return True
    except redis.ResponseError:
        return True
    except redis.RedisError:
        return False
    finally:
        probe.close()
