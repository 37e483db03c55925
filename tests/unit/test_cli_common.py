"""The CLI's shared pieces and its error boundary, without servers."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from runner import __version__
from runner.cli import main
from runner.cli._output import message_id_of, parse_duration
from runner.durations import format_age
from tests.support.ports import free_port


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("2d", 172800),
        ("250ms", 0.25),
        ("90", 90),
        ("1.5m", 90),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "-1s", "m", "1 h 2"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    "seconds, text",
    [
        (None, "-"),
        (0, "0s"),
        (59.9, "59s"),
        (61, "1m01s"),
        (3600 + 300, "1h05m"),
        (86400 * 3 + 3600 * 4, "3d04h"),
    ],
)
def test_format_age(seconds: float | None, text: str) -> None:
    assert format_age(seconds) == text


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b'{"id": "m-1"}', "m-1"),
        (b"not json", None),
        (b'["x"]', None),
        (b'{"id": 5}', None),
        (None, None),
        (b"\xff", None),
    ],
)
def test_message_id_of(payload: bytes | None, expected: str | None) -> None:
    assert message_id_of(payload) == expected


def test_version_and_help() -> None:
    assert CliRunner().invoke(main, ["--version"]).stdout.strip() == f"ksr, version {__version__}"
    result = CliRunner().invoke(main, ["-h"])
    assert result.exit_code == 0
    for command in ("submit", "validate", "pending", "dead", "jobs", "status", "health", "config"):
        assert command in result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["nope"])
    assert result.exit_code == 2 and "No such command 'nope'" in result.stderr


def test_bad_env_var_exits_2_naming_it() -> None:
    result = CliRunner().invoke(main, ["status"], env={"KSR_MAX_DELIVERIES": "zero"})
    assert result.exit_code == 2
    assert result.stderr == "Error: KSR_MAX_DELIVERIES: must be an integer >= 1, got 'zero'\n"


def test_bad_redis_url_exits_2() -> None:
    result = CliRunner().invoke(main, ["--redis-url", "http://127.0.0.1:6379", "pending", "list"])
    assert result.exit_code == 2
    assert result.stderr == "Error: REDIS_URL: scheme must be redis, rediss or unix, got 'http'\n"


@pytest.mark.parametrize("args", [["status"], ["pending", "list"], ["dead", "list"], ["jobs", "list"]])
def test_unreachable_redis_is_one_line_exit_1(args: list[str]) -> None:
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(main, args, env={"REDIS_URL": url})
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"Error: redis unavailable at redis://:***@127.0.0.1:{url.rsplit(':', 1)[1]}: connection refused\n"
    )


def test_shell_completion_script() -> None:
    result = CliRunner().invoke(main, [], prog_name="ksr", env={"_KSR_COMPLETE": "bash_source"})
    assert result.exit_code == 0
    assert "_ksr_completion" in result.stdout
