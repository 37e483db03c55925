"""What every `ksr` command shares: settings and Redis loading, errors to exit codes, output.

Exit codes: 0 ok, 1 failure (including Redis or Kubernetes unavailable, invalid messages,
refused replays), 2 usage or configuration error (click's usage errors, ConfigError). Every
error is one line on stderr that names its cause; a KsrError is translated here, at the
boundary, and nowhere else.
"""

from __future__ import annotations

import errno
import getpass
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, NoReturn

import click
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runner.errors import ConfigError, KsrError, RedisUnavailable
from runner.settings import Settings
from runner.store.connection import connect, describe, preflight
from runner.store.stream_inspection import StreamInspection

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
REDIS_TIMEOUT = 5.0  # seconds for connect and for each reply: an operator is waiting
# The consumer name the CLI would use in the group. The CLI only inspects and acks; it never
# reads with XREADGROUP, so this name never shows up in the group's consumer list.


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
        """Settings.from_env(), with --redis-url winning over REDIS_URL; ConfigError -> exit 2.
        With neither, a running `ksr dev` found through its runtime file (_devfile.py)."""
        if self._settings is None:
            self._settings = Settings.from_env(None, **self._redis_overrides())
        return self._settings

    def _redis_overrides(self) -> dict[str, str | None]:
        if self.redis_url is not None or "REDIS_URL" in os.environ:
            return {"REDIS_URL": self.redis_url}
        from runner.cli._devfile import discover

        found = discover()
        if found is None:
            return {"REDIS_URL": None}
        dev, path = found
        click.echo(
            f"REDIS_URL is not set: using the ksr dev running here (pid {dev.pid}, status page {dev.status_url}; "
            f"found in {path})",
            err=True,
        )
        overrides: dict[str, str | None] = {"REDIS_URL": dev.redis_url}
        if "HTTP_SERVER_PORT" not in os.environ:
            overrides["HTTP_SERVER_PORT"] = str(dev.http_port)  # ksr health asks its probes
        return overrides

    def masked_url(self) -> str:
        if self._settings is not None:
            return describe(self._settings.redis)
        try:
            return describe(self.settings().redis)
        except KsrError:
            return "?"

    def redis(self) -> redis.Redis:
        """A client (bytes replies, short timeouts, no retries) that answered PING."""
        if self._redis is None:
            settings = self.settings()
            try:
                client = connect(settings.redis, socket_timeout=REDIS_TIMEOUT, connect_timeout=REDIS_TIMEOUT)
            except ValueError as e:
                raise ConfigError("REDIS_URL", str(e)) from None
            try:
                answered = preflight(client, settings.redis)  # a TLS or credential mistake names its variable
                if not answered:
                    client.ping()  # raises the outage's own error for the line below
            except (RedisConnectionError, RedisTimeoutError) as e:
                raise CliFailure(f"redis unavailable at {describe(settings.redis)}: {_redis_cause(e)}") from e
            self._redis = client
        return self._redis

    def inspection(self) -> StreamInspection:
        """The group's pending entries and the streams' stats; never a read with the group."""
        settings = self.settings()
        return StreamInspection(self.redis(), streams=settings.streams.streams, group=settings.streams.group)

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


def login() -> str:
    """Who runs the command, for the `by` of a pause ("" when the system cannot tell)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def chosen_streams(settings: Settings, stream: str | None) -> list[str]:
    """--stream (one of KSR_STREAMS; anything else is a usage error), or every stream."""
    if stream is None:
        return list(settings.streams.streams)
    if stream not in settings.streams.streams:
        raise click.BadParameter(
            f"{stream!r} is not one of KSR_STREAMS ({', '.join(settings.streams.streams)})", param_hint="'--stream'"
        )
    return [stream]


def stream_option(help_text: str = "Only this stream (one of KSR_STREAMS); default: every stream.") -> Any:
    return click.option("--stream", "-s", metavar="STREAM", default=None, help=help_text)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
yes_option = click.option("--yes", "-y", is_flag=True, help="Act; without it, only print what would be done.")
