"""A rich table that fits the width it is rendered at: long names fold (after a ``.`` or ``/``), numbers are
never cut, and the least important columns go first on a narrow console (80 columns, a pipe)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions
from rich.table import Table
from rich.text import Text

__all__ = ["Column", "FittedTable"]


@dataclass(frozen=True)
class Column:
    """One column of a :class:`FittedTable`. ``drop`` says when it goes on a narrow console: 0 as soon as the
    table does not fit at its natural width, 1, 2, ... (in that order) only when the flexible column would get
    narrower than the table's ``flex_min``; None never."""

    header: str
    justify: Literal["left", "right"] = "left"
    drop: int | None = None
    flexible: bool = False


@dataclass
class FittedTable:
    """A table that fits itself to the width it is rendered at. The flexible column (module names, reasons)
    wraps, folding a long name over lines and never cutting it; every other column keeps its natural width, so
    numbers are never cut; columns whose ``drop`` allows it go first when the console is narrow."""

    columns: list[Column]
    rows: list[list[Text]] = field(default_factory=list)
    row_styles: list[str] = field(default_factory=list)
    flex_min: int = 20

    def add_row(self, *cells: Text | str, style: str = "") -> None:
        self.rows.append([c if isinstance(c, Text) else Text(c) for c in cells])
        self.row_styles.append(style)

    def natural_widths(self) -> list[int]:
        return [max([cell_len(col.header), *(_widest_line(r[i]) for r in self.rows)])
                for i, col in enumerate(self.columns)]

    def shown(self, width: int) -> list[int]:
        """The indices of the columns kept at ``width``."""
        natural = self.natural_widths()
        kept = list(range(len(self.columns)))
        flex = next((i for i, c in enumerate(self.columns) if c.flexible), None)

        def room() -> int:  # what the flexible column gets (or the slack, without one)
            fixed = sum(natural[i] for i in kept if i != flex) + 3 * (len(kept) - 1)
            return width - fixed

        want = natural[flex] if flex is not None else 0
        floor = min(want, self.flex_min)
        droppable = sorted((c.drop, i) for i, c in enumerate(self.columns) if c.drop is not None)
        for drop, i in droppable:
            if room() >= want or (drop > 0 and room() >= floor):
                break
            kept.remove(i)
        return kept

    def table(self, width: int) -> Table:
        natural = self.natural_widths()
        kept = self.shown(width)
        fixed = sum(natural[i] for i in kept if not self.columns[i].flexible) + 3 * (len(kept) - 1)
        table = Table(show_edge=False, header_style="bold", pad_edge=False)
        for i in kept:
            col = self.columns[i]
            size = max(4, min(natural[i], width - fixed)) if col.flexible else natural[i]
            table.add_column(col.header, justify=col.justify, width=size, no_wrap=not col.flexible,
                             overflow="fold")
        flex = next((i for i in kept if self.columns[i].flexible), None)
        room = max(4, width - fixed)
        for row, style in zip(self.rows, self.row_styles):
            cells = [_break_names(row[i], room) if i == flex else row[i] for i in kept]
            table.add_row(*cells, style=style)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Table]:
        yield self.table(options.max_width)


def _widest_line(text: Text) -> int:
    return max(cell_len(line) for line in text.plain.split("\n"))


def _break_names(text: Text, width: int) -> Text:
    """Break each line of ``text`` that is one long name (no spaces, e.g. ``sasrec.blocks.0.attn.out_proj``)
    after a ``.`` or ``/`` so that it wraps where it reads well; a part longer than ``width`` still folds."""
    if _widest_line(text) <= width:
        return text
    lines: list[Text] = []
    for line in text.split("\n"):
        plain = line.plain
        if cell_len(plain) <= width or " " in plain:
            lines.append(line)
            continue
        offsets: list[int] = []
        start, previous = 0, None
        for cut in [i + 1 for i, ch in enumerate(plain[:-1]) if ch in "./"] + [len(plain)]:
            if cut - start > width and previous is not None and previous > start:
                offsets.append(previous)
                start = previous
            previous = cut
        lines.extend(line.divide(offsets))
    return Text("\n").join(lines)
