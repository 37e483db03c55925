"""What an action refuses before it touches anything."""

from __future__ import annotations

from runner.errors import KsrError

__all__ = ["UnknownTarget"]


class UnknownTarget(KsrError):
    """The stream, schedule or message named is not one the deployment has. `param` names
    what was given (the CLI's argument, the console's form field)."""

    exit_code = 2

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param
