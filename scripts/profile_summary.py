#!/usr/bin/env python3
"""Where a py-spy profile's time went: collapsed stacks (`py-spy record --format raw`, as
`bench_dispatch.py --profile` writes them) summed by process, by thread and by function.

    scripts/profile_summary.py /tmp/prof/ours-1.txt            # top 25 of each
    scripts/profile_summary.py /tmp/prof/ours-*.txt --top 40 --match kube.py

A function's "self" share is the samples where it was the innermost frame; "total" is the
samples where it was anywhere on the stack (counted once per stack, however often it
recurs). Shares are of all the samples in the files given.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_LINE_NO = re.compile(r":\d+\)$")


def frames_of(stack: str) -> list[str]:
    return [f for f in stack.split(";") if f]


def function_of(frame: str) -> str:
    """`name (path/file.py:123)` -> `name (file.py)`: lines of one function add up."""
    name, _, where = frame.partition(" (")
    if not where:
        return frame
    return f"{name} ({Path(_LINE_NO.sub(')', '(' + where)[1:-1]).name})"


def summarise(paths: list[Path], *, top: int, match: str | None) -> str:
    processes: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            m = _LINE.match(line)
            if m is None:
                continue
            count = int(m["count"])
            frames = frames_of(m["stack"])
            samples += count
            code = [f for f in frames if not f.startswith(("process ", "thread "))]
            for f in frames:
                if f.startswith("process "):
                    processes[f[:90]] += count
                elif f.startswith("thread "):
                    threads[f] += count
            if code:
                own[function_of(code[-1])] += count
                for fn in {function_of(f) for f in code}:
                    total[fn] += count
    if not samples:
        return "no samples"
    out = [f"{samples} samples in {len(paths)} file(s)"]

    def table(title: str, counter: Counter[str]) -> None:
        out.append(f"\n{title}")
        rows = [(k, v) for k, v in counter.most_common() if match is None or match in k]
        for key, value in rows[:top]:
            out.append(f"  {100 * value / samples:5.1f}%  {value:7d}  {key}")

    table("by process", processes)
    table("by thread", threads)
    table("self, by function", own)
    table("total, by function", total)
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", help="only functions whose name or file contains this")
    args = parser.parse_args()
    print(summarise(args.paths, top=args.top, match=args.match))
    return 0


if __name__ == "__main__":
    sys.exit(main())
