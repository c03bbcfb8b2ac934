"""The `corral` command line (`corral.cli.main`).

Typer's Rich help renderer costs about 0.6 s of imports (markdown, syntax highlighting) on
every start, twice the whole start-up budget, so help is plain text unless the user asks for
Rich with `TYPER_USE_RICH=1`. Typer reads the variable when it is first imported: here, before
any command module imports it. Typer's option coercion imports pydantic for values that need
no coercion: `_fast_options` skips it there (its docstring says why that is safe).
"""

import os

os.environ.setdefault("TYPER_USE_RICH", "0")

from corral.cli._fast_options import install as _skip_needless_coercion

_skip_needless_coercion()
