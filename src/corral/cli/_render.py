"""What the CLI draws with Rich: its consoles and its plain-text table. Imported on first use
(`corral.cli._common` hands out lazy stand-ins): Rich costs about 0.2 s to import, and `--help`
and most of a command's start need none of it."""

from __future__ import annotations

from typing import Any

from rich import table as rich_table
from rich.console import Console, ConsoleDimensions, RenderableType
from rich.style import StyleType
from rich.text import Text

from corral.cli._common import UNBOUNDED_WIDTH
from corral.domain.text import visible

__all__ = ["TextTable", "WideConsole"]


class WideConsole(Console):
    """A console that sizes itself to the terminal only when it writes to one; piped or
    redirected, lines are never wrapped (Rich would otherwise use the width of whatever
    terminal stdin or $COLUMNS names, and fold long cells onto more lines)."""

    @property
    def size(self) -> ConsoleDimensions:
        if not self.is_terminal:
            return ConsoleDimensions(UNBOUNDED_WIDTH, 25)
        return super().size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


class TextTable(rich_table.Table):
    """A table whose string cells are plain text: never Rich markup, every control, bidi and
    invisible character made visible, and long values folded onto more lines rather than cut
    with an ellipsis, so a cell shows all of what it holds and nothing else."""

    def __init__(self, *headers: str, **kwargs: Any) -> None:
        super().__init__(*headers, **kwargs)
        for column in self.columns:
            column.overflow = "fold"

    def add_row(
        self,
        *renderables: RenderableType | None,
        style: StyleType | None = None,
        end_section: bool = False,
    ) -> None:
        cells = [Text(visible(r)) if isinstance(r, str) else r for r in renderables]
        super().add_row(*cells, style=style, end_section=end_section)
