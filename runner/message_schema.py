"""The message's field rules as data, and their JSON Schema (docs/message.schema.json).

runner.message validates by reading these rules; `json_schema()` renders the same rules as
JSON Schema draft 2020-12 for producers in other languages, so there is one copy of each rule.
`python -m runner.message_schema --write` regenerates the file (a unit test checks it).

Patterns are written once for both worlds: ASCII classes only (`[0-9]`, never `\\d`; the
whitespace Python's `str.isspace` knows spelt out as characters), no look-around, no flags,
so Python's `re`, ECMA-262 and Go's RE2 read them alike. The validator matches a pattern
against the whole value (`re.fullmatch`); the schema anchors it `^(?:...)$`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MESSAGE", "SCHEMA_ID", "Boolean", "Field", "Integer", "Items", "Number", "Obj", "Quantities"]
__all__ += ["Strings", "Text", "json_schema", "render"]

SCHEMA_ID = "urn:kube-stream-runner:message:v1"
INT32_MAX = 2**31 - 1  # Kubernetes' int32 fields (ttlSecondsAfterFinished, backoffLimit)

# What Python's str.isspace() calls whitespace, as characters (not `\s`, which differs per engine).
WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
CONTROLS = "\x00-\x1f"

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL = _LABEL
DNS1123_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
# A label key: an optional DNS subdomain prefix and "/", then a name of at most 63.
LABEL_KEY = rf"({DNS1123_SUBDOMAIN}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?"
# Ids go into Redis keys, an annotation and the webhook-id header: no spaces, slashes or controls.
MESSAGE_ID = r"[A-Za-z0-9][A-Za-z0-9._:@+=~-]*"
ENV_NAME = r"[-._a-zA-Z][-._a-zA-Z0-9]*"
QUANTITY = r"([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?"
RESOURCE_NAME = rf"({DNS1123_SUBDOMAIN}/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
IMAGE = rf"[^{WHITESPACE}{CONTROLS}]+"
# http(s)://host..., case-insensitive scheme, no whitespace anywhere.
WEBHOOK_URL = rf"[Hh][Tt][Tt][Pp][Ss]?://[^/?#{WHITESPACE}][^{WHITESPACE}]*"
# An absolute path without ':', controls or a '..' segment.
_SEG = f"[^/:{CONTROLS}]"
_NOT_DOTDOT = rf"([^/:.{CONTROLS}]{_SEG}*|\.|\.[^/:.{CONTROLS}]{_SEG}*|\.\.{_SEG}+)?"
MOUNT_PATH = rf"(/{_NOT_DOTDOT})+"
# RFC 3339 date-time with an offset, the calendar included (days per month, leap years).
_YEAR = r"(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
_LEAP_YEAR = r"([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
_DATE = rf"({_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?"
_OFFSET = r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
DATE_TIME = rf"{_DATE}[Tt ]{_TIME}{_OFFSET}"
DATE_TIME_NO_OFFSET = rf"{_DATE}[Tt ]{_TIME}"  # for the error message only: "must carry a UTC offset"


# -- the kinds of rule ---------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """A string of 1..max_len characters (0.. when `empty`), matching `pattern` if given, or
    one of `choices` (`ignore_case`: in any case)."""

    max_len: int | None  # None: only the payload's size bounds it
    pattern: str | None = None
    what: str = ""  # "must be <what>, got ..."
    empty: bool = False
    choices: tuple[str, ...] = ()
    ignore_case: bool = False


@dataclass(frozen=True)
class Integer:
    low: int
    high: int
    rule: str  # "must be <rule>, got ..."
    over: str = ""  # the rule shown above `high`, when `rule` does not say it


@dataclass(frozen=True)
class Number:
    low: float
    below: float  # exclusive


@dataclass(frozen=True)
class Boolean:
    pass


@dataclass(frozen=True)
class Strings:
    """An array of strings."""


@dataclass(frozen=True)
class Quantities:
    """An object: resource name -> quantity string (or a non-negative integer)."""

    name: Text
    quantity: Text


@dataclass(frozen=True)
class DateTime:
    """An RFC 3339 date-time string with an offset."""

    pattern: str = DATE_TIME


@dataclass(frozen=True)
class Field:
    rule: Rule
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Obj:
    """An object; unknown members are ignored. `exclusive`: pairs of members that must not
    both be given (the first of the pair is the one blamed)."""

    fields: dict[str, Field]
    exclusive: tuple[tuple[str, str], ...] = field(default=())

    def __getitem__(self, key: str) -> Field:
        return self.fields[key]

    def obj(self, key: str) -> Obj:
        rule = self.fields[key].rule
        assert isinstance(rule, Obj), key
        return rule

    def items(self, key: str) -> Obj:
        rule = self.fields[key].rule
        assert isinstance(rule, Items), key
        return rule.item


@dataclass(frozen=True)
class Items:
    """An array of objects."""

    item: Obj


Rule = Text | Integer | Number | Boolean | Strings | Quantities | DateTime | Obj | Items


# -- the message ----------------------------------------------------------------------------

_LABEL_WHAT = "a DNS-1123 label (lowercase letters, digits and '-', at most 63)"
_SUBDOMAIN_WHAT = "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')"
_QUANTITY = Text(256, QUANTITY, "a quantity such as '500m' or '1Gi'")
_RESOURCE = Text(253, RESOURCE_NAME, "a resource name such as cpu, memory or example.com/device")

JOB = Obj(
    {
        "prefixName": Field(Text(63, DNS1123_LABEL, _LABEL_WHAT), required=True),
        "namespace": Field(Text(63, DNS1123_LABEL, _LABEL_WHAT), required=True),
        "image": Field(Text(1024, IMAGE, "an image reference without spaces"), required=True),
        "command": Field(Strings()),
        "args": Field(Strings()),
        "serviceAccount": Field(Text(253, DNS1123_SUBDOMAIN, _SUBDOMAIN_WHAT)),
        "ttlSecondsAfterFinished": Field(Integer(31, INT32_MAX, "> 30", over=f"at most {INT32_MAX}")),
        "backoffLimit": Field(Integer(0, INT32_MAX, ">= 0", over=f"at most {INT32_MAX}")),
        "activeDeadlineSeconds": Field(Integer(60, 86400, "60..86400")),
        "gpuEnable": Field(Boolean()),
        "gpuNumber": Field(Integer(1, 4, "1..4")),
        "env": Field(
            Items(
                Obj(
                    {
                        "name": Field(
                            Text(
                                253,
                                ENV_NAME,
                                "an environment variable name (letters, digits, - . _; not starting with a digit)",
                            ),
                            required=True,
                        ),
                        "value": Field(Text(None, empty=True), description='absent or null: ""'),
                    }
                )
            )
        ),
        "envRef": Field(
            Items(
                Obj(
                    {
                        "name": Field(Text(253, DNS1123_SUBDOMAIN, _SUBDOMAIN_WHAT), required=True),
                        "type": Field(
                            Text(16, what="configmap or secret", choices=("configmap", "secret"), ignore_case=True),
                            required=True,
                        ),
                    }
                )
            )
        ),
        "resources": Field(
            Obj(
                {"limits": Field(Quantities(_RESOURCE, _QUANTITY)), "requests": Field(Quantities(_RESOURCE, _QUANTITY))}
            )
        ),
        "nodeSelector": Field(
            Obj(
                {
                    "matchKey": Field(
                        Text(317, LABEL_KEY, "a label key such as kubernetes.io/hostname"), required=True
                    ),
                    "matchValue": Field(
                        Text(63, LABEL_VALUE, "a label value (at most 63 letters, digits, - _ .)", empty=True)
                    ),
                }
            )
        ),
        "toleration": Field(
            Obj(
                {
                    "key": Field(Text(317, LABEL_KEY, "a taint key"), required=True),
                    "value": Field(Text(63, LABEL_VALUE, "a taint value", empty=True), description="empty: Exists"),
                    "effect": Field(
                        Text(
                            32,
                            what="one of NoSchedule, PreferNoSchedule, NoExecute",
                            choices=("NoSchedule", "PreferNoSchedule", "NoExecute"),
                        )
                    ),
                }
            )
        ),
        "volume": Field(
            Obj(
                {
                    "mountPath": Field(
                        Text(1024, MOUNT_PATH, "an absolute path without ':' or a '..' segment"), required=True
                    ),
                    "pvc": Field(
                        Text(253, DNS1123_SUBDOMAIN, "a PersistentVolumeClaim name (DNS-1123 subdomain)"),
                        required=True,
                    ),
                }
            )
        ),
    }
)

MESSAGE = Obj(
    {
        "id": Field(
            Text(253, MESSAGE_ID, "letters, digits and . _ : @ + = ~ - (starting with a letter or digit)"),
            required=True,
        ),
        "service": Field(
            Text(
                63,
                LABEL_VALUE,
                "a Kubernetes label value (letters, digits, - _ . ; starting and ending alphanumeric)",
            ),
            required=True,
        ),
        "job": Field(JOB, required=True),
        "webhook": Field(Obj({"url": Field(Text(2048, WEBHOOK_URL, "an http:// or https:// URL with a host"))})),
        "runAt": Field(DateTime(), description="run no earlier than this; not with delaySeconds"),
        "delaySeconds": Field(Number(0, 1e9), description="run this long after the XADD; not with runAt"),
    },
    exclusive=(("runAt", "delaySeconds"),),
)


# -- JSON Schema ----------------------------------------------------------------------------


def _nullable(kind: str) -> list[str]:
    return [kind, "null"]  # null is "not given" everywhere; a required member must not be null


def _case_insensitive(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


def _text(rule: Text, kind: list[str] | str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind}
    if not rule.empty:
        out["minLength"] = 1
    if rule.max_len is not None:
        out["maxLength"] = rule.max_len
    if rule.choices and not rule.ignore_case:
        out["enum"] = [*rule.choices, *([None] if isinstance(kind, list) else [])]
    elif rule.choices:
        out["pattern"] = "^(?:" + "|".join(_case_insensitive(c) for c in rule.choices) + ")$"
    elif rule.pattern:
        out["pattern"] = f"^(?:{rule.pattern})$"
    return out


def _rule(rule: Rule, *, required: bool) -> dict[str, Any]:
    def kind(name: str) -> list[str] | str:
        return name if required else _nullable(name)

    if isinstance(rule, Text):
        return _text(rule, kind("string"))
    if isinstance(rule, Integer):
        return {"type": kind("integer"), "minimum": rule.low, "maximum": rule.high}
    if isinstance(rule, Number):
        return {"type": kind("number"), "minimum": rule.low, "exclusiveMaximum": rule.below}
    if isinstance(rule, Boolean):
        return {"type": kind("boolean")}
    if isinstance(rule, Strings):
        return {"type": kind("array"), "items": {"type": "string"}}
    if isinstance(rule, DateTime):
        return {"type": kind("string"), "format": "date-time", "pattern": f"^(?:{rule.pattern})$"}
    if isinstance(rule, Quantities):
        return {
            "type": kind("object"),
            "propertyNames": _text(rule.name, "string"),
            "additionalProperties": {"anyOf": [_text(rule.quantity, "string"), {"type": "integer", "minimum": 0}]},
        }
    if isinstance(rule, Items):
        return {"type": kind("array"), "items": _object(rule.item, "object")}
    return _object(rule, kind("object"))


def _object(obj: Obj, kind: list[str] | str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind}
    properties: dict[str, Any] = {}
    for name, f in obj.fields.items():
        prop = _rule(f.rule, required=f.required)
        if f.description:
            prop = {"description": f.description, **prop}
        properties[name] = prop
    out["properties"] = properties
    required = [name for name, f in obj.fields.items() if f.required]
    if required:
        out["required"] = required
    for first, second in obj.exclusive:
        # Both given (not null): the first is blamed, as runner.message does.
        out.setdefault("allOf", []).append(
            {
                "if": {"required": [second], "properties": {second: {"not": {"type": "null"}}}},
                "then": {
                    "properties": {first: {"description": f"give either {first} or {second}, not both", "type": "null"}}
                },
            }
        )
    return out


def json_schema() -> dict[str, Any]:
    doc = _object(MESSAGE, "object")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "kube-stream-runner job message",
        "description": (
            "The JSON in a stream entry's `payload` field (docs/messages.md). Generated from "
            "runner/message_schema.py by `python -m runner.message_schema --write`; do not edit. "
            "null means not given; unknown members are ignored. Not expressed here: the payload's "
            "size (KSR_MAX_MESSAGE_BYTES) and nesting depth, and the policy settings (KSR_ALLOWED_*)."
        ),
        **doc,
    }


def render() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=True) + "\n"


DEFAULT_PATH = Path(__file__).resolve().parent.parent / "docs" / "message.schema.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.message_schema", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {DEFAULT_PATH.name} instead of printing it")
    args = parser.parse_args(argv)
    if args.write:
        DEFAULT_PATH.write_text(render(), encoding="utf-8")
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
