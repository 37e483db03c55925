"""The commands of the docs, as a test runs them.

A fenced block opened with ```` ```sh runnable ```` in README.md or docs/*.md holds plain
commands (no `$ ` prompt: what a reader copies is what runs; output, if shown, is a
comment). The blocks of one file run in order in one `bash -Eeuo pipefail` session, so a
block sees the variables, files and working directory the blocks above it left. The first
command that fails stops the file; the failure names the file, the line, the command and
the output of its block.

Every other shell block (```` ```sh ````, ```` ```bash ````, ```` ```shell ````,
```` ```console ````) needs a runnable marker or an entry in the allow-list of
tests/e2e/test_docs_commands.py naming what executes it instead.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Block", "Failure", "blocks_of", "doc_files", "run_blocks", "SHELL_LANGUAGES"]

SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})
RUNNABLE = "runnable"
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_BLOCK_MARK = "__DOC_BLOCK__"
_FAIL_MARK = "__DOC_FAILED__"
_DONE_MARK = "__DOC_DONE__"


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository, e.g. "docs/cli.md"
    line: int  # line number (1-based) of the block's first line of content
    info: str  # the fence's info string: "sh runnable"
    lines: tuple[str, ...]

    @property
    def language(self) -> str:
        return self.info.split()[0] if self.info.split() else ""

    @property
    def is_shell(self) -> bool:
        return self.language in SHELL_LANGUAGES

    @property
    def runnable(self) -> bool:
        return self.language == "sh" and RUNNABLE in self.info.split()[1:]

    @property
    def first_line(self) -> str:
        """The allow-list's key: the first line that is not blank or a comment."""
        return next((ln.strip() for ln in self.lines if ln.strip() and not ln.lstrip().startswith("#")), "")


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def blocks_of(path: Path, root: Path) -> list[Block]:
    """Every fenced code block of a Markdown file (CommonMark fences, up to 3 spaces in)."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    rel = str(path.relative_to(root))
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if (
                closing
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j].lstrip())
            j += 1
        found.append(Block(rel, i + 2, opening["info"].strip(), tuple(body)))
        i = j + 1
    return found


@dataclass(frozen=True)
class Failure:
    block: Block
    line: int  # in the doc file
    command: str
    output: str
    status: str  # the exit status, or "timed out"

    def __str__(self) -> str:
        shown = "\n".join(
            f"{'>' if self.block.line + k == self.line else ' '} {self.block.line + k:4d}  {text}"
            for k, text in enumerate(self.block.lines)
        )
        return (
            f"{self.block.path}:{self.line}: `{self.command}` failed ({self.status})\n"
            f"the block ({self.block.path}, from line {self.block.line}):\n{shown}\n"
            f"its output:\n{self.output.rstrip()[-4000:]}"
        )


def run_blocks(
    blocks: Sequence[Block],
    *,
    env: Mapping[str, str],
    cwd: Path,
    prelude: Sequence[str] = (),
    timeout: float = 180,
) -> Failure | None:
    """Run `blocks` (of one file) in one bash session after `prelude`; the first failure."""
    script, where = _script(blocks, prelude)
    try:
        done = subprocess.run(
            ["bash", "-Eeuo", "pipefail", "-c", script],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
        output, status = done.stdout.decode(errors="replace"), f"exit {done.returncode}"
    except subprocess.TimeoutExpired as e:
        output, status = (e.stdout or b"").decode(errors="replace"), f"timed out after {timeout:g}s"
        done = None
    if done is not None and done.returncode == 0 and _DONE_MARK in output:
        return None
    failed = re.search(rf"^{_FAIL_MARK} (\d+) (\d+)$", output, flags=re.M)
    if failed:
        index, line = where.get(int(failed[1]), (len(blocks) - 1, None))
        status = f"exit {failed[2]}"
    else:  # timed out, or bash itself refused the script: blame the block that was running
        started = re.findall(rf"^{_BLOCK_MARK} (\d+)$", output, flags=re.M)
        index, line = (int(started[-1]) if started else 0), None
    block = blocks[index]
    own = _output_of(output, index)
    line, command = _command_at(block, line if line is not None else block.line)
    return Failure(block, line, command, own, status)


def _script(blocks: Sequence[Block], prelude: Sequence[str]) -> tuple[str, dict[int, tuple[int, int]]]:
    """The bash script, and for each of its lines that came from a block: (block, doc line)."""
    out = [f'trap \'printf "\\n{_FAIL_MARK} %s %s\\n" "$LINENO" "$?"\' ERR', *prelude]
    where: dict[int, tuple[int, int]] = {}
    for index, block in enumerate(blocks):
        out.append(f"printf '\\n{_BLOCK_MARK} {index}\\n'")
        for k, text in enumerate(block.lines):
            out.append(text)
            where[len(out)] = (index, block.line + k)
    out.append(f"printf '\\n{_DONE_MARK}\\n'")
    return "\n".join(out) + "\n", where


def _output_of(output: str, index: int) -> str:
    parts = re.split(rf"^{_BLOCK_MARK} (\d+)$", output, flags=re.M)
    for k in range(1, len(parts) - 1, 2):
        if int(parts[k]) == index:
            return re.sub(rf"^{_FAIL_MARK} .*$", "", parts[k + 1], flags=re.M).strip("\n")
    return output


def _command_at(block: Block, line: int) -> tuple[int, str]:
    """The command that `line` is part of, and its first line (bash reports a line of a
    multi-line command: its first or its last, depending on the command)."""
    at = line - block.line
    if not 0 <= at < len(block.lines):
        return block.line, block.first_line
    continued = ("\\", "|", "&&", "||")
    start = end = at
    while start > 0 and block.lines[start - 1].rstrip().endswith(continued):
        start -= 1
    while end < len(block.lines) - 1 and block.lines[end].rstrip().endswith(continued):
        end += 1
    text = " ".join(t.strip().removesuffix("\\").strip() for t in block.lines[start : end + 1])
    return block.line + start, text
