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
    import importlib
    import pkgutil

    import corral
    from corral.errors import errors_markdown

    # Every module that may define an error class, so the table never depends on which ones
    # happen to be imported (the in-PC daemon and the migrations define none).
    for mod in pkgutil.walk_packages(corral.__path__, "corral."):
        if not mod.name.startswith(("corral.pcd", "corral.store.migrations")) and not (
            mod.name.endswith("__main__")
        ):
            importlib.import_module(mod.name)

    head, _, rest = page.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}{errors_markdown()}{END}{tail}"


if __name__ == "__main__":
    DOC.write_text(render(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    sys.exit(0)
