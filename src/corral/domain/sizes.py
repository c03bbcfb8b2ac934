"""PC size presets: the resource limits a PC gets from its size name. Pure data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from corral.errors import InvalidInputError

__all__ = ["SIZES", "PCSize", "parse_size"]

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True)
class PCSize:
    name: str
    cpus: float  # CPU time per period, in cores (cgroup cpu quota)
    memory_bytes: int  # hard memory limit; the upper layer (tmpfs) is charged to it too
    pids: int  # process and thread limit (stops fork bombs)
    # Size of the writable upper layer. It is a tmpfs (reset discards it in microseconds) whose
    # pages count against memory_bytes, so it is kept well below it: a full disk is ENOSPC, not
    # an out-of-memory kill.
    disk_bytes: int
    shm_bytes: int  # /dev/shm (browsers use it heavily)


SIZES: dict[str, PCSize] = {
    s.name: s
    for s in (
        PCSize(
            "small",
            cpus=1.0,
            memory_bytes=2 * GiB,
            pids=512,
            disk_bytes=1 * GiB,
            shm_bytes=256 * MiB,
        ),
        PCSize(
            "medium",
            cpus=2.0,
            memory_bytes=4 * GiB,
            pids=1024,
            disk_bytes=2 * GiB,
            shm_bytes=512 * MiB,
        ),
        PCSize(
            "large",
            cpus=4.0,
            memory_bytes=8 * GiB,
            pids=2048,
            disk_bytes=4 * GiB,
            shm_bytes=1 * GiB,
        ),
    )
}


def parse_size(name: str) -> PCSize:
    """Return the preset called `name`, or say which names exist."""
    try:
        return SIZES[name]
    except KeyError:
        raise InvalidInputError(
            f"unknown PC size {name!r}", hint=f"use one of: {', '.join(SIZES)}"
        ) from None
