"""`corral --help` and every command start fast (issue 10): the CLI imports no heavy library
(store, HTTP, MCP, crypto, pydantic models) until a command needs it. Guarded by what gets
imported, not by timing (the numbers are in `python -m bench cli`)."""

from __future__ import annotations

import json
import subprocess
import sys

import typer
from typer.testing import CliRunner

from corral.cli import pc
from corral.cli.main import CorralGroup, app

#: libraries and Corral layers no `--help` may load
HEAVY = (
    "alembic",
    "anyio",
    "argon2",
    "cedarpy",
    "cryptography",
    "fastapi",
    "httpx",
    "joserfc",
    "mcp",
    "mcp_types",
    "pydantic",
    "sqlalchemy",
    "starlette",
    "uvicorn",
    "corral.api",
    "corral.identity",
    "corral.mcp",
    "corral.runtime",
    "corral.service",
    "corral.store",
)

#: run in a fresh interpreter: the help of the root, of every command and every subcommand,
#: then the heavy modules found in sys.modules
_PROBE = """
import contextlib, io, json, sys
from corral.cli.main import CorralGroup, app
import typer

def run(argv):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            app(argv, prog_name="corral")
        except SystemExit:
            pass

heavy = json.loads(sys.argv[1])
run(["--help"])
root = typer.main.get_command(app)
for name in CorralGroup.lazy:
    run([name, "--help"])
    command = root.get_command(None, name)
    for sub in getattr(command, "commands", {}):
        run([name, sub, "--help"])
print(json.dumps(sorted(m for m in sys.modules
      if any(m == h or m.startswith(h + ".") for h in heavy))))
"""


def _loaded_by(code: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(heavy)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    found: list[str] = json.loads(done.stdout.splitlines()[-1])
    return found


def test_importing_the_cli_loads_no_heavy_library() -> None:
    probe = (
        "import json, sys\nimport corral.cli.main\nheavy = json.loads(sys.argv[1])\n"
        "print(json.dumps(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.')"
        " for h in heavy))))"
    )
    assert _loaded_by(probe) == []


def test_the_help_of_every_command_loads_no_heavy_library() -> None:
    # Typer itself parses some option values with pydantic (typer._adapters), so pydantic
    # may load here; Corral's pydantic models (corral.domain.models, the API) may not.
    heavy = (*(h for h in HEAVY if h != "pydantic"), "corral.domain.models")
    assert _loaded_by(_PROBE, heavy) == []


def test_root_help_lists_every_command_with_its_own_summary() -> None:
    """The summaries written in main.py are the ones each command shows for itself."""
    root = typer.main.get_command(app)
    assert isinstance(root, CorralGroup)
    shown = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    for name, entry in CorralGroup.lazy.items():
        command = root.get_command(None, name)
        assert command is not None and command.name == name
        assert " ".join((command.help or "").split()) == " ".join(entry.help.split()), name
        assert f" {name} " in shown.output


def test_commands_still_run_and_unknown_ones_are_refused() -> None:
    from corral import __version__

    done = CliRunner().invoke(app, ["version"])
    assert done.exit_code == 0 and done.output.strip() == __version__
    unknown = CliRunner().invoke(app, ["no-such-command"])
    assert unknown.exit_code == 2 and "No such command" in unknown.output
    typo = CliRunner().invoke(app, ["polcy"])  # suggestions include commands not loaded yet
    assert typo.exit_code == 2 and "Did you mean 'policy'" in typo.output


def test_pc_default_screen_is_the_runtimes() -> None:
    from corral.runtime.pcs import DEFAULT_SCREEN

    assert pc.DEFAULT_SCREEN == DEFAULT_SCREEN
