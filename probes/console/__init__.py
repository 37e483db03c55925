"""The operator console under /ui/ (docs/console.md): server-rendered pages over Redis, so
every replica shows the whole deployment; actions behind the token (auth.py)."""

from __future__ import annotations

from probes.console.views import register_console

__all__ = ["register_console"]
