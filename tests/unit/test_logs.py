"""runner.logs: JSON lines off a terminal, text on one, message context on every line."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator

import pytest

from runner.logs import dict_config, log_context, setup_logging


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_root() -> Iterator[None]:
    saved = {
        name: (list(lg.handlers), lg.level, lg.propagate)
        for name in ("", "gunicorn.error", "gunicorn.access")
        for lg in [logging.getLogger(name)]
    }
    yield
    for name, (handlers, level, propagate) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


def lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line]


def test_auto_is_json_off_a_terminal_with_context_fields():
    out = io.StringIO()
    setup_logging("auto", "DEBUG", stream=out)
    log = logging.getLogger("runner.pipeline.loop")
    with log_context(message_id="1700000000000-0", job_name="my-job-abc123"):
        log.info("created %s", "the Job")
        logging.getLogger("election.elector").debug("unrelated module, same context")
    log.warning("outside")
    docs = [json.loads(line) for line in lines(out)]
    assert docs[0]["message"] == "created the Job"
    assert docs[0]["level"] == "INFO" and docs[0]["logger"] == "runner.pipeline.loop"
    assert docs[0]["message_id"] == "1700000000000-0" and docs[0]["job_name"] == "my-job-abc123"
    assert docs[0]["time"].endswith("+00:00")
    assert docs[1]["message_id"] == "1700000000000-0"
    assert "message_id" not in docs[2]


def test_auto_is_text_on_a_terminal():
    out = Tty()
    setup_logging("auto", stream=out)
    with log_context(message_id="1-0", job_name=None):
        logging.getLogger("runner.x").info("hello %d", 5)
    (line,) = lines(out)
    assert "INFO  runner.x: hello 5  message_id=1-0" in line
    assert "job_name" not in line  # None values are dropped


def test_nested_context_and_extra():
    out = io.StringIO()
    setup_logging("json", stream=out)
    with log_context(message_id="1-0"):
        with log_context(job_name="j"):
            logging.getLogger("x").info("in", extra={"stream": "ksr:jobs:default"})
        logging.getLogger("x").info("out")
    first, second = (json.loads(line) for line in lines(out))
    assert (first["message_id"], first["job_name"], first["stream"]) == ("1-0", "j", "ksr:jobs:default")
    assert second["message_id"] == "1-0" and "job_name" not in second


def test_exceptions_are_one_json_line():
    out = io.StringIO()
    setup_logging("json", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("failed")
    (line,) = lines(out)
    doc = json.loads(line)
    assert "RuntimeError: boom" in doc["exc"]


def test_setup_twice_keeps_one_handler():
    out = io.StringIO()
    setup_logging("json", stream=out)
    setup_logging("json", stream=out)
    logging.getLogger("x").warning("once")
    assert len(lines(out)) == 1


def test_bad_format_is_refused():
    with pytest.raises(ValueError, match="auto, json or text"):
        setup_logging("yaml")


def test_dict_config_is_valid_and_routes_gunicorn(capsys):
    config = dict_config("json", "INFO")
    logging.config.dictConfig(config)
    logging.getLogger("gunicorn.error").info("Booting worker")
    err = capsys.readouterr().err.strip().splitlines()
    assert json.loads(err[-1])["logger"] == "gunicorn.error"
