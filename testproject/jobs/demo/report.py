"""The demo's output: the table, the notes under it, and how to run it again."""

from __future__ import annotations

import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

from testproject.jobs.demo.blocks import Block
from testproject.jobs.demo.database import Database
from testproject.jobs.demo.pools import COLUMNS

#: Width of the printed text.
WIDTH = 79


def interpreter_command() -> str:
    """This interpreter, as a command to copy: README's ``.venv/bin/python``.

    Relative to the current directory when it lives under it, as the
    README's first command creates it; absolute otherwise.
    """
    if not sys.executable:
        return "python"
    executable = Path(sys.executable)
    try:
        return shlex.quote(str(executable.relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(str(executable))


class Report:
    """Writes the demo's text to a command's ``stdout``."""

    def __init__(self, stdout: Any) -> None:
        self.stdout = stdout

    def write_intro(self, db: Database) -> None:
        if db.is_postgresql:
            where = f"PostgreSQL, database {db.settings['NAME']}"
        elif db.vendor == "sqlite":
            path = Path(db.settings["NAME"]).resolve()
            if path.is_relative_to(Path.cwd()):
                path = path.relative_to(Path.cwd())
            where = f"SQLite, {path}"
        else:
            where = f"{db.vendor}, database {db.settings['NAME']}"
        self.stdout.write(f"The same jobs, run three ways, on {where}:\n")
        width = max(len(c.key) for c in COLUMNS)
        for column in COLUMNS:
            self.stdout.write(
                textwrap.fill(
                    f"{column.key.ljust(width)}  {column.description}",
                    width=WIDTH,
                    initial_indent="  ",
                    subsequent_indent=" " * (width + 4),
                )
            )
        self.stdout.write("")
        self.write_wrapped(
            "Every number below is counted while the demo runs: real jobs on real "
            "threads, rows read back from the database. Each block starts fresh "
            "pools, with the settings its rows name (CONN_MAX_AGE=0 where none "
            "is named)."
        )
        self.stdout.write("")

    def write_table(self, blocks: list[Block]) -> None:
        keys = [c.key for c in COLUMNS]
        labels = [f"   {row.label}" for block in blocks for row in block.rows]
        width = max(len(label) for label in labels)
        self.stdout.write(" " * width + "".join(f"  {key}" for key in keys))
        for block in blocks:
            self.stdout.write(block.title)
            for row in block.rows:
                cells = "".join(
                    f"  {str(row.cells[key].value).rjust(len(key))}" for key in keys
                )
                self.stdout.write(f"   {row.label}".ljust(width) + cells)

    def write_notes(self, blocks: list[Block]) -> None:
        self.stdout.write("\nWhy:")
        for block in blocks:
            number = block.title.split(".")[0]
            self.write_wrapped(f"{number}. {block.note}", hanging="   ")
            # The first error of each column, columns with the same one together.
            first: dict[str, str] = {}
            for row in block.rows:
                for key, cell in row.cells.items():
                    if cell.errors and key not in first:
                        first[key] = cell.errors[0]
            columns_by_error: dict[str, list[str]] = {}
            for key, error in first.items():
                columns_by_error.setdefault(error, []).append(key)
            for error, keys in columns_by_error.items():
                names = " and ".join(
                    [", ".join(keys[:-1]), keys[-1]] if keys[:-1] else keys
                )
                self.write_wrapped(f"First error in {names}: {error}", "   ", "   ")
            for line in block.log:
                self.write_wrapped(f"django_thread logged {line}", "   ", "   ")
        self.stdout.write("")
        self.write_wrapped(
            "django_thread logs to the 'django_thread' logger; the demo prints "
            "those lines under the block that caused them."
        )

    def write_wrapped(self, text: str, indent: str = "", hanging: str = "") -> None:
        self.stdout.write(
            textwrap.fill(
                text,
                width=WIDTH,
                initial_indent=indent,
                subsequent_indent=indent + hanging,
                break_on_hyphens=False,
                break_long_words=False,
            )
        )

    def write_outro(self, db: Database) -> None:
        if db.is_postgresql:
            return
        # pip install -e . installs no PostgreSQL driver.
        python = interpreter_command()
        self.stdout.write(
            "To run it on PostgreSQL (the database must exist), with a driver:\n"
            f'  {python} -m pip install "psycopg[binary]"\n'
            "  TESTPROJECT_DATABASE_URL=postgresql://USER@HOST:PORT/DATABASE "
            f"{python} testproject/manage.py demo"
        )
