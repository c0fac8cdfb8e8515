"""The literal blocks of README.rst and docs/, as the tests that run them read them.

A block is a ``.. code-block:: LANGUAGE`` directive or a bare ``::`` literal
block. One not meant to run is marked so in the source, right above it, by
an rst comment that says why (a comment renders as nothing)::

    .. not run: needs Celery, which is not a test dependency

    .. code-block:: python
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO_ROOT

README = REPO_ROOT / "README.rst"
DOCS = REPO_ROOT / "docs"
NOT_RUN = re.compile(r"\s*\.\. not run:\s*(?P<reason>.*)")


def doc_files() -> list[Path]:
    """README.rst, then every page of docs/ (not the build output)."""
    pages = sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts)
    return [README, *pages]


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the first line of code, 1-based
    language: str  # "" for a bare ``::`` literal block
    section: str
    code: str
    #: Why the block is not run, from its ``.. not run:`` comment; else "".
    not_run: str = ""

    @property
    def name(self) -> str:
        return str(self.path.relative_to(REPO_ROOT))

    def __str__(self) -> str:
        return f"{self.name}:{self.line} ({self.language or '::'}, {self.section})"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _is_underline(line: str, title: str) -> bool:
    stripped = line.strip()
    return (
        bool(title.strip())
        and len(set(stripped)) == 1
        and stripped[0] in "=-~^"
        and len(stripped) >= len(title.strip())
    )


def _not_run_reason(lines: list[str], directive: int) -> str:
    """The ``.. not run:`` comment right above a directive (continued lines too)."""
    i = directive - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    comment = []
    while i >= 0 and lines[i].strip():
        comment.insert(0, lines[i].strip())
        match = NOT_RUN.match(lines[i])
        if match:
            return " ".join([match["reason"], *comment[1:]]).strip()
        if _indent(lines[i]) <= _indent(lines[directive]):
            break
        i -= 1
    return ""


def literal_blocks(path: Path) -> list[Block]:
    """Every ``.. code-block::`` and ``::`` literal block of a file, in order."""
    lines = path.read_text().splitlines()
    blocks = []
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and not line.startswith(" "):
            if _is_underline(lines[i + 1], line):
                section = line.strip()
        directive = re.match(r"\s*\.\. code-block::\s*(\S*)", line)
        if directive:
            language = directive[1] or "?"
        elif line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
            language = ""
        else:
            i += 1
            continue
        start = i + 1
        body = []
        while start + len(body) < len(lines):
            candidate = lines[start + len(body)]
            if candidate.strip() and _indent(candidate) <= _indent(line):
                break
            body.append(candidate)
        first = start + next(n for n, text in enumerate(body) if text.strip())
        blocks.append(
            Block(
                path,
                first + 1,
                language,
                section,
                textwrap.dedent("\n".join(body)).strip("\n"),
                _not_run_reason(lines, i) if directive else "",
            )
        )
        i = start + len(body)
    return blocks


def all_blocks() -> list[Block]:
    return [block for path in doc_files() for block in literal_blocks(path)]


#: The first line of a quick-start block: the file it goes into, and whether
#: it is added at the end of the file ``startproject`` made.
QUICK_START_FILE = re.compile(
    r"# (?P<file>mysite/\w+\.py)(?P<append>: add at the end)?$"
)


def quick_start_blocks() -> list[tuple[Block, re.Match[str]]]:
    """README.rst's quick-start Python blocks, each with its file line."""
    found = []
    for block in literal_blocks(README):
        match = QUICK_START_FILE.match(block.code.splitlines()[0])
        if block.language == "python" and match:
            found.append((block, match))
    return found
