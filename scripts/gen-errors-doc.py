"""Write the error table of docs/errors.md from the error classes (`corral.errors`).

Run after adding or changing an error class: `.venv/bin/python scripts/gen-errors-doc.py`;
tests/unit/test_error_table.py fails while the page and the classes disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
START, END = "<!-- errors-table:start -->\n", "<!-- errors-table:end -->"


def render(page: str) -> str:
    """`page` with the text between the markers replaced by the generated table."""
    import corral.api.app
    import corral.cli.main  # noqa: F401
    from corral.errors import errors_markdown

    head, _, rest = page.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}{errors_markdown()}{END}{tail}"


if __name__ == "__main__":
    DOC.write_text(render(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    sys.exit(0)
