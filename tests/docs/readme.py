"""Reading README.md: its sections, tables and shell blocks, split into the commands a reader
types and the responses the README says they print (`# → …`, where `…` stands for anything)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SHELL_FENCE = re.compile(r"^( *)```(bash|sh|shell)\n(.*?)^\1```$", re.DOTALL | re.MULTILINE)
ARROW = "# →"


def section(text: str, title: str) -> str:
    """The body of `## title`, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The cells of every table row in `text`, header and separator rows left out."""
    lines = text.splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.startswith("|") or re.match(r"^\|[-:| ]+\|$", line):
            continue
        if i + 1 < len(lines) and re.match(r"^\|[-:| ]+\|$", lines[i + 1]):
            continue  # a header
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([cell.strip() for cell in cells])
    return rows


@dataclass(frozen=True)
class Command:
    """One complete shell command as printed, where it is, and the response printed after it."""

    text: str
    line: int
    expected: str | None

    def matches(self, output: str) -> bool:
        """Whether `output` is the printed response; `…` stands for any text, and whitespace is
        ignored (the README wraps long responses)."""
        assert self.expected is not None
        pattern = ".*?".join(re.escape(part) for part in _squeeze(self.expected).split("…"))
        return re.fullmatch(pattern, _squeeze(output), re.DOTALL) is not None


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _complete(source: str) -> bool:
    if source.rstrip().endswith("\\"):
        return False
    return subprocess.run(["bash", "-n", "-c", source], capture_output=True).returncode == 0


def commands(text: str) -> list[Command]:
    """Every command of every bash/sh/shell block, in order."""
    found: list[Command] = []
    for block in SHELL_FENCE.finditer(text):
        first_line = text.count("\n", 0, block.start(3)) + 1
        indent = len(block.group(1))  # a block inside a list item
        body = "\n".join(line[indent:] for line in block.group(3).splitlines())
        found += _split(body, first_line)
    return found


def _split(block: str, first_line: int) -> list[Command]:
    found: list[Command] = []
    pending: list[str] = []
    start = 0
    expecting = False  # inside a `# →` comment that may go on over `#   ` lines
    for offset, line in enumerate(block.splitlines()):
        stripped = line.strip()
        if not pending and stripped.startswith("#"):
            if stripped.startswith(ARROW):
                assert found, f"README line {first_line + offset}: a response with no command"
                found[-1] = _with_expected(found[-1], stripped[len(ARROW) :])
                expecting = True
            elif expecting and re.match(r"#\s{2,}\S", stripped):
                found[-1] = _with_expected(found[-1], (found[-1].expected or "") + stripped[1:])
            else:
                expecting = False
            continue
        if not pending and not stripped:
            expecting = False
            continue
        if not pending:
            start = first_line + offset
        pending.append(line)
        source = "\n".join(pending)
        if _complete(source):
            expected = None
            if ARROW in pending[-1]:  # `command   # → response` on one line
                expected = pending[-1].split(ARROW, 1)[1]
            found.append(Command(source, start, expected))
            pending, expecting = [], expected is not None
    assert not pending, f"README line {start}: an incomplete shell command"
    return found


def _with_expected(command: Command, expected: str) -> Command:
    return Command(command.text, command.line, expected.strip())
