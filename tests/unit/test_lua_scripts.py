"""The Lua files of runner/store/lua/: each documents its keys, arguments and reply."""

from __future__ import annotations

from importlib import resources

import pytest

from runner.store import scripts

LUA = resources.files("runner.store").joinpath("lua")
NAMES = sorted(p.name.removesuffix(".lua") for p in LUA.iterdir() if p.name.endswith(".lua"))


def test_every_script_the_code_loads_is_there() -> None:
    assert NAMES == [
        "advance_term",
        "cancel",
        "cb_pass",
        "cb_redeliver",
        "cb_release",
        "cb_renew",
        "cb_take",
        "claim",
        "dead_letter",
        "defer_create",
        "fence",
        "fire_tick",
        "lib_mark",
        "lib_owner",
        "mark_callback",
        "move_due",
        "record_job",
        "release",
        "replay_dead",
        "replay_pending",
        "schedule",
        "take_over",
        "update",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_each_file_opens_with_a_comment_naming_keys_args_and_reply(name: str) -> None:
    text = scripts.source(name)
    header = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        header.append(line)
    comment = "\n".join(header)
    assert header, f"{name}.lua does not start with a comment"
    assert "KEYS[1]" in comment and "ARGV" in comment and "Returns" in comment, comment


def test_fenced_scripts_run_the_term_check_first() -> None:
    fenced = scripts.source("claim", fenced=True)
    assert fenced.startswith(scripts.source("fence")) and fenced.endswith(scripts.source("claim"))
    assert scripts.source("claim") is scripts.source("claim")  # read once


def test_a_library_goes_between_the_fence_and_the_script() -> None:
    text = scripts.source("record_job", fenced=True, uses=("lib_mark",))
    assert text == scripts.source("fence") + scripts.source("lib_mark") + scripts.source("record_job")
