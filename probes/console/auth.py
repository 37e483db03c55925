"""Who may read the console and who may act on it.

- Reading: free unless KSR_CONSOLE_READ_AUTH; then the operator's token is needed.
- Acting: only with KSR_CONSOLE_ACTIONS and the token, and for a browser a CSRF token.

The token (KSR_CONSOLE_TOKEN, from a Secret) is given once in the login form, which sets a
signed session cookie (Flask's, HttpOnly, SameSite=Strict), or on every request as
`Authorization: Bearer <token>` (scripts; no cookie, so no CSRF check). Compared with
hmac.compare_digest. The session's signing key is derived from the token, so every
gunicorn worker of every replica accepts the same cookie, and changing the token ends every
session. "Who did it" is the name given at login (or the `X-Operator` header with a bearer
token), with the client's address: one shared token cannot tell people apart by itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from flask import Request, session

__all__ = ["Gate", "Operator"]

SESSION_KEY_SALT = b"ksr-console-session-v1"
CSRF_FIELD = "csrf"


@dataclass(frozen=True)
class Operator:
    name: str
    address: str

    def __str__(self) -> str:
        return f"{self.name}@{self.address}"


class Gate:
    def __init__(self, *, token: str | None, actions: bool, read_auth: bool) -> None:
        self._token = token.encode() if token else None
        self.actions_enabled = bool(actions and token)
        self.read_auth = bool(read_auth and token)

    @property
    def login_possible(self) -> bool:
        return self._token is not None

    def secret_key(self) -> bytes:
        """The session cookie's signing key: from the token, or random when there is none
        (then no session ever carries a login)."""
        if self._token is None:
            return secrets.token_bytes(32)
        return hmac.new(self._token, SESSION_KEY_SALT, hashlib.sha256).digest()

    def token_matches(self, given: str | None) -> bool:
        if self._token is None or not given:
            return False
        return hmac.compare_digest(given.encode(), self._token)

    def bearer(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(value.strip())

    def authenticated(self, request: Request) -> bool:
        return self.bearer(request) or bool(self._token is not None and session.get("auth"))

    def may_read(self, request: Request) -> bool:
        return not self.read_auth or self.authenticated(request)

    def operator(self, request: Request) -> Operator:
        address = request.remote_addr or "?"
        if self.bearer(request):
            return Operator(request.headers.get("X-Operator", "").strip()[:64] or "bearer", address)
        return Operator(str(session.get("who") or "operator")[:64], address)

    def log_in(self, who: str) -> None:
        session.clear()
        session["auth"] = True
        session["who"] = who.strip()[:64] or "operator"
        session[CSRF_FIELD] = secrets.token_urlsafe(24)

    def csrf_token(self) -> str:
        token = session.get(CSRF_FIELD)
        if not token:
            token = secrets.token_urlsafe(24)
            session[CSRF_FIELD] = token
        return str(token)

    def csrf_ok(self, request: Request) -> bool:
        """A bearer request carries no cookie a third-party page could ride on; a form must
        echo the session's token."""
        if self.bearer(request):
            return True
        expected = session.get(CSRF_FIELD)
        given = request.form.get(CSRF_FIELD, "")
        return bool(expected) and hmac.compare_digest(str(expected).encode(), given.encode())

    def action_refusal(self, request: Request) -> tuple[int, str] | None:
        """(HTTP status, why) when `request` may not act; None when it may."""
        if not self.actions_enabled:
            return 403, "actions are disabled (KSR_CONSOLE_ACTIONS=false or no KSR_CONSOLE_TOKEN)"
        if not self.authenticated(request):
            return 401, "log in with the operators' token first"
        if not self.csrf_ok(request):
            return 403, "the form's CSRF token is missing or stale: reload the page"
        return None
