"""What every `ksr` command shares: settings and Redis loading, errors to exit codes, output.

Exit codes: 0 ok, 1 failure (including Redis or Kubernetes unavailable, invalid messages,
refused replays), 2 usage or configuration error (click's usage errors, ConfigError). Every
error is one line on stderr that names its cause; a KsrError is translated here, at the
boundary, and nowhere else.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import click
import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from runner.errors import ConfigError, KsrError, RedisUnavailable
from runner.settings import Settings
from runner.streams import StreamReader

__all__ = [
    "CLI_CONSUMER",
    "DURATION",
    "CliContext",
    "KsrGroup",
    "emit_json",
    "fail",
    "format_age",
    "format_ms_time",
    "message_id_of",
    "parse_duration",
    "print_table",
    "stream_option",
]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
REDIS_TIMEOUT = 5.0  # seconds for connect and for each reply: an operator is waiting
# The consumer name the CLI would use in the group. The CLI only inspects and acks; it never
# reads with XREADGROUP, so this name never shows up in the group's consumer list.
CLI_CONSUMER = "ksr-cli"


# -- errors ---------------------------------------------------------------------------------


class CliFailure(click.ClickException):
    """A one-line error, exit 1 (click prints "Error: <message>" to stderr)."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # one line, whatever the cause said


class CliConfigFailure(CliFailure):
    """A one-line configuration error, exit 2."""

    exit_code = EXIT_USAGE


def cli_error(message: str, exit_code: int = EXIT_FAILURE) -> CliFailure:
    return CliConfigFailure(message) if exit_code == EXIT_USAGE else CliFailure(message)


def fail(message: str, exit_code: int = EXIT_FAILURE) -> NoReturn:
    raise cli_error(message, exit_code)


def exit_code_for(error: KsrError) -> int:
    """ConfigError (exit_code 2) stays 2; every other error of ours is a failure, 1."""
    return EXIT_USAGE if error.exit_code == EXIT_USAGE else EXIT_FAILURE


def _redis_cause(error: BaseException) -> str:
    """The root cause of a Redis connection failure in a few words."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(cause, (TimeoutError, RedisTimeoutError)):
            return "timed out"
        cause = cause.__cause__ or cause.__context__
    text = str(error)
    if "refused" in text.lower():
        return "connection refused"
    if "timeout" in text.lower() or "timed out" in text.lower():
        return "timed out"
    text = re.sub(r"^Redis unavailable:\s*", "", text)
    return text or type(error).__name__


def translate(error: BaseException, ctx: click.Context) -> CliFailure:
    obj = ctx.find_object(CliContext)
    url = obj.masked_url() if obj is not None else "?"
    if isinstance(error, (RedisUnavailable, RedisConnectionError, RedisTimeoutError)):
        return CliFailure(f"redis unavailable at {url}: {_redis_cause(error)}")
    if isinstance(error, KsrError):
        return cli_error(str(error), exit_code_for(error))
    if isinstance(error, RedisError):
        return CliFailure(f"redis at {url} answered: {error}")
    return CliFailure(f"{type(error).__name__}: {error}")


class KsrGroup(click.Group):
    """A click group that turns our errors (and redis-py's) into one line and an exit code.

    Subgroups are invoked inside the top group's `invoke`, so one translation point covers
    every command, including those other modules register on `main`.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (KsrError, RedisError) as e:
            log.debug("command failed", exc_info=True)
            raise translate(e, ctx) from e


# -- settings and Redis -----------------------------------------------------------------------


@dataclass
class CliContext:
    """The group's `ctx.obj`: global options, with settings and the client made on first use."""

    redis_url: str | None = None
    _settings: Settings | None = field(default=None, repr=False)
    _redis: redis.Redis | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        """Settings.from_env(), with --redis-url winning over REDIS_URL; ConfigError -> exit 2."""
        if self._settings is None:
            self._settings = Settings.from_env(REDIS_URL=self.redis_url)
        return self._settings

    def masked_url(self) -> str:
        if self._settings is not None:
            return self._settings.redis.masked_url
        try:
            return self.settings().redis.masked_url
        except KsrError:
            return "?"

    def redis(self) -> redis.Redis:
        """A client (bytes replies, short timeouts, no retries) that answered PING."""
        if self._redis is None:
            settings = self.settings()
            try:
                client = redis.Redis.from_url(
                    settings.redis.url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT,
                    retry=Retry(NoBackoff(), 0), health_check_interval=0,
                )
            except ValueError as e:
                raise ConfigError("REDIS_URL", str(e)) from None
            try:
                client.ping()
            except (RedisConnectionError, RedisTimeoutError) as e:
                raise CliFailure(f"redis unavailable at {settings.redis.masked_url}: {_redis_cause(e)}") from e
            self._redis = client
        return self._redis

    def reader(self) -> StreamReader:
        """A StreamReader for inspection (pending, stats); it never reads with the group."""
        settings = self.settings()
        return StreamReader(self.redis(), streams=settings.streams.streams, group=settings.streams.group,
                            consumer=CLI_CONSUMER)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None


def cli_context() -> CliContext:
    ctx = click.get_current_context()
    obj = ctx.find_object(CliContext)
    if obj is None:  # a command invoked on its own (tests of one subcommand)
        obj = ctx.ensure_object(CliContext)
    return obj


def chosen_streams(settings: Settings, stream: str | None) -> list[str]:
    """--stream (one of KSR_STREAMS; anything else is a usage error), or every stream."""
    if stream is None:
        return list(settings.streams.streams)
    if stream not in settings.streams.streams:
        raise click.BadParameter(
            f"{stream!r} is not one of KSR_STREAMS ({', '.join(settings.streams.streams)})", param_hint="'--stream'")
    return [stream]


def stream_option(help_text: str = "Only this stream (one of KSR_STREAMS); default: every stream.") -> Any:
    return click.option("--stream", "-s", metavar="STREAM", default=None, help=help_text)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
yes_option = click.option("--yes", "-y", is_flag=True, help="Act; without it, only print what would be done.")


# -- durations and times ----------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    """'250ms', '30s', '5m', '1h', '2d' or plain seconds ('90') -> seconds; ValueError if not."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration (like 30s, 5m, 1h): {text!r}")
    number, unit = match.groups()
    return float(number) * _UNITS[unit or "s"]


class DurationType(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


DURATION = DurationType()


def format_age(seconds: float | None) -> str:
    """3s, 4m12s, 2h05m, 3d04h: short and sortable by eye."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def format_ms_time(ms: int | None) -> str:
    if not ms:
        return "-"
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).isoformat(timespec="seconds")


def age_of_ms(ms: int | str | None, *, now: float | None = None) -> float | None:
    if ms is None or ms == "":
        return None
    try:
        value = int(ms)
    except ValueError:
        return None
    if not value:
        return None
    return max(0.0, (time.time() if now is None else now) - value / 1000)


def entry_time_ms(entry_id: str) -> int | None:
    """The milliseconds part of a stream entry id, or None if it is not one."""
    head = entry_id.partition("-")[0]
    return int(head) if head.isdigit() else None


# -- payloads -----------------------------------------------------------------------------------


def message_id_of(payload: bytes | str | None) -> str | None:
    """The `id` field of a payload, without validating anything else; None if unreadable."""
    if payload is None:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    value = doc.get("id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) and value else None


# -- output -------------------------------------------------------------------------------------


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str | None = None) -> None:
    """Columns padded to their widest cell; the last column is not padded."""
    if not rows and empty is not None:
        click.echo(empty, err=True)
        return
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) if i < len(row) - 1 else c for i, (c, w) in enumerate(zip(row, widths))).rstrip())


def dry_run_footer(count: int, verb: str) -> None:
    click.echo(f"dry run: would {verb} {count} {'entry' if count == 1 else 'entries'}; pass --yes to act", err=True)

