"""The `corral` command line (`corral.cli.main`).

Typer's Rich help renderer costs about 0.6 s of imports (markdown, syntax highlighting) on
every start, twice the whole start-up budget, so help is plain text unless the user asks for
Rich with `TYPER_USE_RICH=1`. Typer reads the variable when it is first imported: here, before
any command module imports it.
"""

import os

os.environ.setdefault("TYPER_USE_RICH", "0")
