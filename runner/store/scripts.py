"""The Lua scripts of `runner/store/lua/`: read from the package once, registered per client.

Each `.lua` file starts with a comment naming its KEYS, ARGV and reply. The scripts that
write the state store are fenced: `fence.lua` (the term check) is put in front of them, so
KEYS[1] and ARGV[1] are always the term key and the caller's term (or '').
A `lib_*.lua` file defines Lua functions that several scripts share (`uses`); it is put
after the fence and before the script. A script that reads or writes a record's `state`
is loaded with `states`: the prelude generated from runner.lifecycle's table for that
script (STATE, is_terminal, legal) goes after the fence, so no state is spelt in Lua and
the script can refuse a move the table does not give it.
`register_script` sends EVALSHA and loads the script on NOSCRIPT, so a Redis that lost its
script cache (a restart) is handled where the script is called.
"""

from __future__ import annotations

import functools
from importlib import resources

import redis
from redis.commands.core import Script

from runner.lifecycle import lua_prelude

__all__ = ["load", "source"]

FENCE = "fence"


@functools.cache
def source(name: str, *, fenced: bool = False, uses: tuple[str, ...] = (), states: bool = False) -> str:
    """The text of `lua/<name>.lua`, behind fence.lua when `fenced`, the generated state
    prelude when `states`, and the `uses` libraries."""
    text = resources.files(__package__).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    if not fenced and not uses and not states:
        return text
    return (
        (source(FENCE) if fenced else "")
        + (lua_prelude(name) if states else "")
        + "".join(source(lib) for lib in uses)
        + text
    )


def load(
    client: redis.Redis, name: str, *, fenced: bool = False, uses: tuple[str, ...] = (), states: bool = False
) -> Script:
    """The script `name` registered with `client`: call it with keys=[...], args=[...]."""
    return client.register_script(source(name, fenced=fenced, uses=uses, states=states))
