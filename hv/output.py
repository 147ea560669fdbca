"""How `hv` shows things: Rich tables for people, the API's JSON for programs. Colour only on a terminal
(Rich's own detection; NO_COLOR is honoured)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

STATUS_STYLES = {
    "queued": "yellow",
    "running": "green",
    "completed": "blue",
    "failed": "red",
    "cancelled": "magenta",
}
OUTCOME_STYLES = {"start": "green", "preempt": "yellow", "wait": "yellow", "reject": "red"}
# Off a terminal Rich would wrap everything at 80 columns; a pipe or a file is better served by long lines.
PIPE_WIDTH = 200


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


out = _console()
err = _console(stderr=True)


def print_json(data: Any) -> None:
    """The API's JSON as is, indented, with no colour: for jq and scripts."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def number(value: Any) -> str:
    """8.0 -> 8, 0.5 -> 0.5; None -> empty."""
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def status_text(status: str | None) -> Text:
    return Text(status or "", style=STATUS_STYLES.get(status or "", ""))


def when(timestamp: str | None) -> str:
    """An ISO 8601 timestamp, to the second and without its zone (the API speaks UTC)."""
    if not timestamp:
        return ""
    return timestamp.replace("T", " ")[:19]


def resources(value: dict | None) -> str:
    if not value:
        return ""
    return f"{number(value.get('cpu'))} cpu, {number(value.get('ram_gb'))} GB, {number(value.get('gpu'))} gpu"


def table(*columns: str, title: str | None = None) -> Table:
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title=title, title_justify="left")
    for column in columns:
        # Ids are copied into the next command: never broken across lines, whatever the width.
        grid.add_column(column, overflow="fold", no_wrap=column == "ID", min_width=36 if column == "ID" else None)
    return grid


def key_values(rows: list[tuple[str, Any]]) -> Table:
    """A two-column table: one field per line."""
    grid = Table(box=None, show_header=False, pad_edge=False)
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, value if isinstance(value, Text) else Text("" if value is None else str(value)))
    return grid
