"""What the console shows of a payload: producers' data, with the values that are likely
secrets masked. Masked: every `job.env[].value` (env is where credentials go), the password
and query of `webhook.url` (tokens ride there), and the value of any key, at any depth,
whose name says secret (SECRET_WORDS). The structure and every name stay visible."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "masked_payload"]

MASK = "***"
SECRET_WORDS = ("secret", "password", "passwd", "token", "apikey", "api_key", "credential", "authorization")


def _secret_name(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    return any(word in lowered for word in SECRET_WORDS)


def _mask_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{MASK}@{host}"
    query = MASK if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _walk(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and _secret_name(k) and v not in (None, "") else _walk(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_walk(v) for v in value]
    return value


def masked_payload(raw: bytes | str) -> tuple[Any, bool]:
    """(the payload with secrets masked, parsed): the parsed JSON when it is JSON, else the
    text itself (shown escaped, as any string)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else raw
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return text, False
    if not isinstance(doc, dict):
        return doc, True
    doc = _walk(doc)
    job = doc.get("job")
    if isinstance(job, dict) and isinstance(job.get("env"), list):
        job["env"] = [{**e, "value": MASK} if isinstance(e, dict) and "value" in e else e for e in job["env"]]
    hook = doc.get("webhook")
    if isinstance(hook, dict) and isinstance(hook.get("url"), str):
        hook["url"] = _mask_url(hook["url"])
    return doc, True
