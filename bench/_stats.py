"""Small helpers to time things and print one table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    name: str
    unit: str
    median: float
    p95: float
    runs: int
    floor: float | None = None
    target: str = ""
    verdict: str = ""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def time_ms(
    func: Callable[[], object], runs: int, between: Callable[[], object] | None = None
) -> list[float]:
    """Wall time of `func` in ms over `runs` calls; `between` runs untimed after each call."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1000)
        if between is not None:
            between()
    return samples


def summarize(
    name: str,
    samples: list[float],
    unit: str = "ms",
    floor: list[float] | None = None,
    target: str = "",
    ok: Callable[[float, float, float | None], bool] | None = None,
) -> Row:
    med = statistics.median(samples)
    p95 = percentile(samples, 0.95)
    floor_med = statistics.median(floor) if floor else None
    verdict = ""
    if ok is not None:
        verdict = "PASS" if ok(med, p95, floor_med) else "MISS"
    return Row(name, unit, med, p95, len(samples), floor_med, target, verdict)


def render(rows: list[Row]) -> str:
    header = ("measure", "median", "p95", "runs", "floor (median)", "target", "verdict")
    lines = [header]
    for r in rows:
        fmt = "{:.1f} " + r.unit
        lines.append(
            (
                r.name,
                fmt.format(r.median),
                fmt.format(r.p95),
                str(r.runs),
                fmt.format(r.floor) if r.floor is not None else "-",
                r.target,
                r.verdict,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for i, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(line)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
