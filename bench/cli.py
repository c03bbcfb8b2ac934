"""How fast `corral` starts: `--help` and a few commands, each a fresh process.

Every run starts a new interpreter, as a person or a script typing the command would. The floor
is `python -c pass` with the same interpreter, measured in the same rounds. Runs alternate
between the commands (and the `before` tree, if given), so a busy machine slows them alike.

    python -m bench cli
    CORRAL_BENCH_CLI_BEFORE=/path/to/old/src python -m bench cli   # also time another tree

`CORRAL_BENCH_CLI_BEFORE` names the `src` folder of another checkout (e.g. a `git worktree` of
the commit before a change); its rows run with that folder first on PYTHONPATH. Besides wall
time, the CPU time (user + system) each process used is shown: on a shared machine it moves
less with the other load than the wall time does.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench._stats import Row, render, summarize

RUNS = int(os.environ.get("CORRAL_BENCH_RUNS", "20"))
TARGET_MS = 300.0

#: what a person types first, and the help of commands whose modules were the heaviest
COMMANDS: list[tuple[str, list[str]]] = [
    ("corral --help", ["--help"]),
    ("corral pool list --help", ["pool", "list", "--help"]),
    ("corral user list --help", ["user", "list", "--help"]),
    ("corral version", ["version"]),
    ("corral pool --help", ["pool", "--help"]),
    ("corral up --help", ["up", "--help"]),
    ("corral connect --help", ["connect", "--help"]),
]
#: the `before` tree is timed on the first ones only (each of its starts costs over a second)
BEFORE_COMMANDS = 3


def _env(src: Path | None) -> dict[str, str]:
    env = dict(os.environ, COLUMNS="100", NO_COLOR="1")
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def _once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU milliseconds of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    wall = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return wall, cpu


def rows(runs: int = RUNS, before: Path | None = None) -> list[Row]:
    floor_argv = [sys.executable, "-c", "pass"]
    trees: list[tuple[str, Path | None]] = [("", None)]
    if before is not None:
        trees.insert(0, ("before: ", before))
    cases = [
        (prefix + label, [sys.executable, "-m", "corral", *args], _env(src))
        for prefix, src in trees
        for label, args in (COMMANDS[:BEFORE_COMMANDS] if src is not None else COMMANDS)
    ]
    for _, argv, env in cases:  # warm the file cache and bytecode of both trees first
        _once(argv, env)
    floor_wall: list[float] = []
    floor_cpu: list[float] = []
    wall: dict[str, list[float]] = {label: [] for label, _, _ in cases}
    cpu: dict[str, list[float]] = {label: [] for label, _, _ in cases}
    for _ in range(runs):
        w, c = _once(floor_argv, _env(None))
        floor_wall.append(w)
        floor_cpu.append(c)
        for label, argv, env in cases:
            w, c = _once(argv, env)
            wall[label].append(w)
            cpu[label].append(c)

    def within(median: float, p95: float, floor: float | None) -> bool:
        return median <= TARGET_MS

    out = []
    for label, _, _ in cases:
        out.append(
            summarize(
                label,
                wall[label],
                floor=floor_wall,
                target=f"<={TARGET_MS:.0f} ms",
                ok=None if label.startswith("before") else within,
            )
        )
    for label, _, _ in cases:
        out.append(summarize(f"{label} (CPU)", cpu[label], floor=floor_cpu))
    return out


def main() -> int:
    before = os.environ.get("CORRAL_BENCH_CLI_BEFORE")
    measured = rows(RUNS, Path(before) if before else None)
    print(render(measured))
    print("floor: `python -c pass` with the same interpreter; (CPU) rows: user + system time")
    return 0 if all(r.verdict != "MISS" for r in measured) else 1


if __name__ == "__main__":
    sys.exit(main())
