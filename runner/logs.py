"""Log formatting for `ksr`: JSON lines in a container, readable text on a terminal.

Library code only calls `logging.getLogger(__name__)`; `setup_logging` is for entry points
(the CLI, the gunicorn config). Context about the message being handled travels in a
contextvar, so every line logged inside

    with log_context(message_id=entry_id, job_name=name):
        ...

carries `message_id` and `job_name`, whichever module logs it (threads started inside do
not inherit it; contextvars follow the thread that set them).
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, TextIO

__all__ = [
    "ContextFilter",
    "JsonFormatter",
    "TextFormatter",
    "dict_config",
    "log_context",
    "setup_logging",
]

LogFormat = Literal["auto", "json", "text"]

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("ksr_log_context", default={})  # noqa: B039 (never mutated: log_context sets a new dict)

# Attributes every LogRecord has; anything else on a record came from `extra=` or the context.
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` (e.g. message_id, job_name) to every log line inside the block.
    None values are dropped; nested blocks add to (and may override) the outer ones."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the log context onto each record (on the handler, so every logger gets it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, context, exc."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(_extra_fields(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`12:00:00.123 INFO  runner.pipeline.loop: message  message_id=... job_name=...`"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = _extra_fields(record)
        if extra:
            tail = " ".join(f"{k}={v}" for k, v in extra.items())
            first, nl, rest = text.partition("\n")  # keep a traceback below the fields
            text = f"{first}  {tail}{nl}{rest}"
        return text


def _resolve(fmt: str, stream: TextIO) -> str:
    if fmt not in ("auto", "json", "text"):
        raise ValueError(f"log format must be auto, json or text, got {fmt!r}")
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return "text" if isatty is not None and isatty() else "json"
    return fmt


def dict_config(
    fmt: LogFormat | str = "auto", level: int | str = "INFO", *, stream: TextIO | None = None
) -> dict[str, Any]:
    """A logging.config.dictConfig dict for the same setup (gunicorn's `logconfig_dict`),
    with gunicorn's own loggers sent through our handler."""
    chosen = _resolve(fmt, stream or sys.stderr)
    handler = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "formatter": chosen,
        "filters": ["context"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"json": {"()": JsonFormatter}, "text": {"()": TextFormatter}},
        "handlers": {"ksr": handler},
        "root": {"level": level if isinstance(level, int) else level.upper(), "handlers": ["ksr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["ksr"], "propagate": False},
            # access lines off: kubelet probes every few seconds would drown the runner's lines
            "gunicorn.access": {"level": "WARNING", "handlers": ["ksr"], "propagate": False},
        },
    }


def setup_logging(
    fmt: LogFormat | str = "auto", level: int | str = "INFO", *, stream: TextIO | None = None
) -> logging.Handler:
    """Send the root logger to `stream` (stderr) as JSON lines or text. "auto": text on a
    terminal, JSON otherwise. Replaces the handlers of an earlier call. For entry points only."""
    out = stream or sys.stderr
    chosen = _resolve(fmt, out)
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.set_name("ksr")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "ksr"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    return handler
