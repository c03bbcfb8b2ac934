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
    """Nor pydantic (Typer would build an adapter for options left out: corral.cli.
    _fast_options), nor Rich (the consoles and tables are made when first drawn)."""
    heavy = (*HEAVY, "rich", "corral.domain.models")
    assert _loaded_by(_PROBE, heavy) == []


#: a Typer app whose options cover what the coercion shortcut skips and what it does not;
#: run once as Typer ships and once with corral.cli's shortcut installed
_COERCION_PROBE = """
from __future__ import annotations
import json, sys
from typing import Annotated
import typer
from typer.testing import CliRunner
if sys.argv[1] == "patched":
    import corral.cli
    from typer import core
    assert core._TyperParameter.process_value._corral_fast

def _shout(value: str | None) -> str | None:
    return value.upper() if value is not None else None

probe = typer.Typer()

@probe.command()
def run(
    name: Annotated[str, typer.Argument()],
    count: Annotated[int, typer.Option()] = 1,
    tag: Annotated[list[str] | None, typer.Option()] = None,
    note: Annotated[str | None, typer.Option(callback=_shout)] = None,
    need: Annotated[str, typer.Option()] = ...,
    flag: Annotated[bool, typer.Option()] = False,
    shout: Annotated[str | None, typer.Option(parser=str.upper)] = None,
) -> None:
    print(json.dumps([name, count, tag, note, need, flag, shout]))

for argv in json.loads(sys.argv[2]):
    done = CliRunner().invoke(probe, argv, env={"TYPER_USE_RICH": "0", "COLUMNS": "200"})
    print(json.dumps([argv, done.exit_code, done.output]))
"""

_ARGV = [
    ["n", "--count", "3", "--note", "hi", "--need", "x"],
    ["n", "--need", "x"],
    ["n", "--tag", "a", "--tag", "b", "--need", "", "--flag"],
    ["n", "--need", "x", "--shout", "quiet"],
    ["n", "--count", "many", "--need", "x"],
    ["n", "--count", "", "--need", "x"],
    ["n"],
    ["--need", "x"],
]


def test_option_values_are_coerced_exactly_as_typer_would() -> None:
    """The shortcut around Typer's coercion (corral.cli._fast_options) changes no answer:
    the same values, exit codes and messages as Typer's own coercion, for text, numbers,
    bad numbers, lists left out or given, callbacks, flags and missing required values."""
    answers = {}
    for mode in ("plain", "patched"):
        done = subprocess.run(
            [sys.executable, "-c", _COERCION_PROBE, mode, json.dumps(_ARGV)],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        answers[mode] = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers["plain"]) == len(_ARGV)
    assert answers["patched"] == answers["plain"]
    codes = [exit_code for _, exit_code, _ in answers["plain"]]
    assert codes == [0, 0, 0, 0, 2, 2, 2, 2]  # the probe itself tells success from refusal
    assert '"QUIET"' in answers["patched"][3][2]  # a custom parser still runs


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
