"""What this runner allows, on top of a well-formed message (runner.message).

A refusal is a PolicyRefused (an InvalidMessage), so the message is dead-lettered with every
reason, each naming its field path.
"""

from __future__ import annotations

import logging

from runner.callbacks.netguard import Resolver, check_url
from runner.errors import HostUnresolvable, PolicyRefused, WebhookRefused
from runner.message import Message
from runner.settings import Settings

__all__ = ["check_policy"]

log = logging.getLogger(__name__)


def _listing(items: tuple[str, ...]) -> str:
    return ", ".join(items) if items else "none"


def _own(kind: str, name: str, namespace: str) -> str:
    return f"{kind} {name!r} in namespace {namespace!r} belongs to the runner itself (KSR_PROTECTED_NAMES)"


def check_policy(message: Message, settings: Settings, *, resolver: Resolver | None = None) -> None:
    """Raise PolicyRefused listing every rule the message breaks; return None if allowed.

    The webhook host is resolved (`resolver` is for tests). A resolver that fails for now
    (EAI_AGAIN) does not refuse the message: the guard runs again before every send.
    """
    policy = settings.policy
    job = message.job
    problems: list[tuple[str, str]] = []

    if not policy.namespace_allowed(job.namespace):
        problems.append(
            (
                "job.namespace",
                f"namespace {job.namespace!r} is not allowed (allowed: {_listing(policy.allowed_namespaces)})",
            )
        )
    if not policy.image_allowed(job.image):
        problems.append(
            (
                "job.image",
                f"image {job.image!r} does not start with an allowed prefix ({_listing(policy.allowed_images)})",
            )
        )
    for i, ref in enumerate(job.env_ref):
        if policy.protected(job.namespace, ref.name):
            problems.append((f"job.envRef[{i}].name", _own(ref.type, ref.name, job.namespace)))
        elif not policy.envref_allowed(ref.name, job.namespace):
            strict = job.namespace in policy.strict_envref_namespaces
            problems.append(
                (
                    f"job.envRef[{i}].name",
                    f"{ref.type} {ref.name!r} is not allowed in namespace {job.namespace!r} "
                    f"(KSR_STRICT_ENVREF_NAMESPACES; listed in KSR_ALLOWED_ENVREFS: {_listing(policy.allowed_envrefs)})"
                    if strict
                    else f"{ref.type} {ref.name!r} is not allowed (allowed: {_listing(policy.allowed_envrefs)})",
                )
            )
    if job.volume is not None and policy.protected(job.namespace, job.volume.pvc):
        problems.append(("job.volume.pvc", _own("claim", job.volume.pvc, job.namespace)))
    if job.service_account is not None and not policy.service_account_allowed(job.service_account):
        allowed = ("default", *policy.allowed_service_accounts)
        problems.append(
            (
                "job.serviceAccount",
                f"service account {job.service_account!r} is not allowed (allowed: {_listing(allowed)})",
            )
        )
    ttl = job.ttl_seconds_after_finished
    if ttl is not None and ttl >= settings.state.ttl_seconds:
        # The state record must outlive the Job, or a late duplicate could not be recognised.
        problems.append(
            (
                "job.ttlSecondsAfterFinished",
                f"must be less than KSR_STATE_TTL ({settings.state.ttl_seconds}), got {ttl}",
            )
        )
    if message.webhook_url is not None:
        try:
            check_url(message.webhook_url, policy.webhook_allow, resolver=resolver)
        except HostUnresolvable as e:
            if e.temporary:
                log.warning(
                    "message %s: webhook host not resolvable now, checked again at send time: %s", message.id, e.problem
                )
            else:
                problems.append(("webhook.url", e.problem))
        except WebhookRefused as e:
            problems.append(("webhook.url", e.problem))

    if problems:
        (field, problem), *rest = problems
        raise PolicyRefused(field, problem, more=rest)
