"""The KSR_SCHEDULES file: recurring schedules, read and checked once at start.

    schedules:
      - name: nightly-report             # letters, digits, - _ . ; part of each tick's id
        cron: "30 2 * * *"               # standard 5 fields (cronsim)
        timezone: Europe/Berlin          # IANA name; default UTC
        stream: ksr:jobs:low             # one of KSR_STREAMS; default: the "default" stream
        catchUp: latest                  # skip (default) | latest
        catchUpWindow: 3600              # seconds; with latest: how late a missed tick may still run
        message: {service: ..., job: {...}, webhook: {...}}   # a message without `id`

Every problem is a ConfigError naming KSR_SCHEDULES and the field, e.g.
`schedules[2].cron: Bad minute`; the message template is checked with the runner's own
validator (`schedules[0].message.job.image: required`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from runner.errors import ConfigError, InvalidMessage
from runner.message import parse_message
from runner.schedules.cron import Cron, CronSimError

__all__ = ["CATCH_UP", "Schedule", "load_schedules", "parse_schedules"]

VARIABLE = "KSR_SCHEDULES"
CATCH_UP = ("skip", "latest")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
DEFAULT_WINDOW = 3600.0


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: Cron
    timezone: str
    stream: str
    catch_up: str  # skip | latest
    catch_up_window: float  # seconds (latest)
    template: Mapping[str, Any]  # the message without id

    def payload(self, message_id: str) -> str:
        return json.dumps({**self.template, "id": message_id}, separators=(",", ":"), sort_keys=True)


def load_schedules(path: Path | None, *, streams: Sequence[str], default_stream: str) -> tuple[Schedule, ...]:
    if path is None:
        return ()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(VARIABLE, f"cannot read {path}: {e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(VARIABLE, f"{path} is not valid YAML: {e}") from None
    return parse_schedules(doc, streams=streams, default_stream=default_stream)


def _fail(path: str, problem: str) -> ConfigError:
    return ConfigError(VARIABLE, f"{path}: {problem}")


def parse_schedules(doc: Any, *, streams: Sequence[str], default_stream: str) -> tuple[Schedule, ...]:
    if doc is None:
        return ()
    if not isinstance(doc, dict) or not isinstance(doc.get("schedules", []), list):
        raise _fail("schedules", "the file must be a mapping with a list `schedules`")
    out: list[Schedule] = []
    seen: set[str] = set()
    for i, raw in enumerate(doc.get("schedules") or []):
        entry = _entry(raw, f"schedules[{i}]", streams=streams, default_stream=default_stream)
        if entry.name in seen:
            raise _fail(f"schedules[{i}].name", f"{entry.name!r} is used by an earlier entry")
        seen.add(entry.name)
        out.append(entry)
    return tuple(out)


def _entry(raw: Any, at: str, *, streams: Sequence[str], default_stream: str) -> Schedule:
    if not isinstance(raw, dict):
        raise _fail(at, "must be a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise _fail(f"{at}.name", f"must be letters, digits, '-', '_' or '.' (at most 100), got {name!r}")
    tz = raw.get("timezone", "UTC")
    try:
        if not isinstance(tz, str):
            raise ValueError(tz)
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise _fail(f"{at}.timezone", f"unknown IANA time zone {tz!r}") from None
    expr = raw.get("cron")
    if not isinstance(expr, str):
        raise _fail(f"{at}.cron", f"must be a 5-field cron expression, got {expr!r}")
    try:
        cron = Cron(expr, tz)
    except CronSimError as e:
        raise _fail(f"{at}.cron", f"{e} in {expr!r}") from None
    stream = raw.get("stream", default_stream)
    if stream not in streams:
        raise _fail(f"{at}.stream", f"must be one of KSR_STREAMS ({', '.join(streams)}), got {stream!r}")
    catch_up = raw.get("catchUp", "skip")
    if catch_up not in CATCH_UP:
        raise _fail(f"{at}.catchUp", f"must be skip or latest, got {catch_up!r}")
    window = raw.get("catchUpWindow", DEFAULT_WINDOW)
    if isinstance(window, bool) or not isinstance(window, (int, float)) or window <= 0:
        raise _fail(f"{at}.catchUpWindow", f"must be a number of seconds > 0, got {window!r}")
    template = raw.get("message")
    if not isinstance(template, dict):
        raise _fail(f"{at}.message", "must be a message (a mapping) without `id`")
    if "id" in template:
        raise _fail(f"{at}.message.id", "must not be given: each tick's id is <name>-<tick time in UTC>")
    if "runAt" in template or "delaySeconds" in template:
        raise _fail(f"{at}.message.runAt", "a schedule's message runs at its tick: no runAt / delaySeconds")
    try:
        parse_message(json.dumps({**template, "id": f"{name}-19700101T000000Z"}))
    except InvalidMessage as e:
        raise ConfigError(VARIABLE, "; ".join(f"{at}.message.{f}: {p}" for f, p in e.problems)) from None
    return Schedule(
        name=name,
        cron=cron,
        timezone=tz,
        stream=stream,
        catch_up=catch_up,
        catch_up_window=float(window),
        template=template,
    )
