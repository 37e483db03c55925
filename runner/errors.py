"""The one exception vocabulary of kube-stream-runner.

Library errors (redis, kubernetes, urllib3) are translated where they enter our code
(`raise ... from e`), so the rest of the code, and the CLI mapping errors to exit codes,
only ever sees `KsrError` and its subclasses.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Iterable, Mapping
from typing import Any

from election.clock import SYSTEM_CLOCK

__all__ = [
    "ConfigError",
    "HostUnresolvable",
    "InvalidMessage",
    "KsrError",
    "KubeApiError",
    "KubeConflict",
    "KubeForbidden",
    "KubeInvalid",
    "KubeNotFound",
    "KubeTransientError",
    "PolicyRefused",
    "RedisUnavailable",
    "WebhookRefused",
    "kube_error_from",
    "parse_retry_after",
    "redis_error_from",
]


class KsrError(Exception):
    """Root of every error this project raises on purpose. `exit_code` is for the CLI."""

    exit_code: int = 1


class ConfigError(KsrError):
    """A setting is missing or malformed; the message names the environment variable."""

    exit_code = 2

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


class RedisUnavailable(KsrError):
    """Redis could not be reached or answered with a connection-level error."""

    exit_code = 3


class KubeApiError(KsrError):
    """An error answered by (or on the way to) the Kubernetes API.

    `status` is the HTTP status (None when no answer came back), `reason` the Status
    reason (e.g. "AlreadyExists") or the HTTP reason phrase, `message` the apiserver's words.
    """

    exit_code = 4
    retryable: bool = False

    def __init__(
        self,
        status: int | None,
        reason: str,
        message: str,
        *,
        retry_after: float | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        self.details: Mapping[str, Any] = details or {}
        code = status if status is not None else "no response"
        super().__init__(f"Kubernetes API {code} {reason}: {message}")

    @property
    def temporary(self) -> bool:
        """An answer that may change by itself: throttling, server trouble, no answer, or a
        403 (a ResourceQuota that is full frees as Jobs end; RBAC or an admission webhook
        being fixed). A create so refused waits; other answers are final for that message."""
        return self.retryable or self.status == 403


class KubeTransientError(KubeApiError):
    """429, 5xx, timeouts and connection errors: worth retrying (honour `retry_after`)."""

    retryable = True


class KubeConflict(KubeApiError):
    """409: AlreadyExists on create, or a resourceVersion conflict on update (see `reason`)."""


class KubeInvalid(KubeApiError):
    """422: the apiserver refused the object; `message` carries its words for the dead letter."""


class KubeForbidden(KubeApiError):
    """403: RBAC does not allow the call (or a quota/admission webhook refused it)."""


class KubeNotFound(KubeApiError):
    """404: the object (or its namespace) does not exist."""


class InvalidMessage(KsrError):
    """A stream entry that can never become a Job. Dead-lettered, then acked.

    Carries one or more (field path, problem) pairs; renders them "; "-joined, e.g.
    "job.gpuNumber: must be 1..4, got 9". `.field` and `.reason` describe the first one.
    """

    def __init__(self, field_path: str, problem: str, *, more: Iterable[tuple[str, str]] = ()) -> None:
        self.problems: list[tuple[str, str]] = [(field_path, problem), *more]
        self.field = field_path
        self.reason = problem
        super().__init__("; ".join(f"{f}: {p}" for f, p in self.problems))

    @classmethod
    def from_problems(cls, problems: list[tuple[str, str]]) -> InvalidMessage:
        (field, problem), *rest = problems
        return cls(field, problem, more=rest)


class PolicyRefused(InvalidMessage):
    """A well-formed message that this runner's policy does not allow; dead-lettered the same way."""


class WebhookRefused(KsrError):
    """A webhook URL refused by the SSRF guard (scheme, host or address not allowed)."""

    def __init__(self, url: str, problem: str) -> None:
        self.url = url
        self.problem = problem
        super().__init__(f"webhook {url}: {problem}")


class HostUnresolvable(WebhookRefused):
    """The webhook host did not resolve. `temporary` is True when the resolver failed (retry)
    rather than answering that the name does not exist."""

    def __init__(self, url: str, problem: str, *, temporary: bool) -> None:
        self.temporary = temporary
        super().__init__(url, problem)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """A Retry-After header as seconds from now: delta-seconds or an HTTP date; None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        current = SYSTEM_CLOCK.time() if now is None else now
        return max(0.0, when.timestamp() - current)
    if seconds != seconds or seconds < 0:  # NaN or negative: ignore the header
        return None
    return seconds


def _status_body(body: Any) -> Mapping[str, Any]:
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body:
        return {}
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    try:
        value = headers.get(name)
        if value is None:
            # plain dicts are case-sensitive; urllib3's HTTPHeaderDict is not
            for key, v in dict(headers).items():
                if str(key).lower() == name.lower():
                    return str(v)
        return None if value is None else str(value)
    except AttributeError:
        return None


def kube_error_from(exc: BaseException) -> KubeApiError:
    """Translate a kubernetes ApiException or a urllib3 error into our vocabulary.

    Use as `except (ApiException, urllib3.exceptions.HTTPError) as e: raise kube_error_from(e) from e`.
    """
    # Imported here so that modules using only the error classes don't pay for the client.
    import urllib3.exceptions
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, KubeApiError):
        return exc
    if isinstance(exc, ApiException):
        status = int(exc.status) if exc.status else None
        body = _status_body(exc.body)
        reason = str(body.get("reason") or exc.reason or "")
        message = str(body.get("message") or exc.reason or "")
        details = body.get("details") if isinstance(body.get("details"), dict) else None
        retry_after = parse_retry_after(_header(exc.headers, "Retry-After"))
        cls: type[KubeApiError]
        if status is None or status == 0:
            cls = KubeTransientError  # the client raises status 0 for some transport failures
        elif status == 429 or status >= 500 or status == 408:
            cls = KubeTransientError
        elif status == 409:
            cls = KubeConflict
        elif status == 422:
            cls = KubeInvalid
        elif status == 403:
            cls = KubeForbidden
        elif status == 404:
            cls = KubeNotFound
        else:
            cls = KubeApiError
        return cls(status or None, reason, message, retry_after=retry_after, details=details)
    if isinstance(exc, (urllib3.exceptions.HTTPError, TimeoutError, ConnectionError)):
        # timeouts, refused connections, resets, protocol errors: no answer, retry
        return KubeTransientError(None, type(exc).__name__, str(exc) or type(exc).__name__)
    return KubeApiError(None, type(exc).__name__, str(exc))


def redis_error_from(exc: BaseException) -> RedisUnavailable:
    """Wrap a redis-py connection/timeout error; callers `raise redis_error_from(e) from e`."""
    return RedisUnavailable(f"Redis unavailable: {type(exc).__name__}: {exc}")
