"""Shared by the benchmark scripts: peak memory, device names, interleaved best-of timing, target marks."""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Callable, Mapping

REPEATS = 3  # best of, interleaved: every side sees the same machine state


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB: ``VmHWM``, which, unlike ``ru_maxrss``, starts afresh at exec
    (a child started from a large parent does not inherit the parent's peak)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``) and the number of cores this process may use."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            name = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {len(os.sched_getaffinity(0))} cores"


def device_name(device) -> str:
    """What a torch device is, in words: the GPU's name for CUDA devices, else :func:`cpu_name`."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return cpu_name()


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def best_of(sides: Mapping[str, Callable[[], object]], repeats: int = REPEATS) -> dict[str, float]:
    """Best-of-``repeats`` wall times (s) of callables run in turn, after one warm-up call of each.

    Interleaving gives every side the same share of a noisy, shared machine, and each round starts one side later
    (a, b, c; then b, c, a; ...), so that no side always runs right after the same other one (a side that follows a
    heavy, multi-threaded one runs slower for a while). GPU work is waited for.
    """
    for fn in sides.values():
        fn()
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            _synchronize()
            start = time.perf_counter()
            sides[name]()
            _synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def cpu_seconds(fn: Callable[[], object], repeats: int = 2) -> float:
    """Least CPU time (s, user + system, every thread of this process) that one call of ``fn`` took."""
    spent = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_SELF)
        fn()
        after = resource.getrusage(resource.RUSAGE_SELF)
        spent.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return min(spent)


def meets(ratio: float, target: str) -> bool:
    """Whether ``ratio`` meets a target written ``"<= 1.15"``, ``">= 0.9"``, ``"< 1.2"`` or ``"> 1"``."""
    op, value = target.split()
    return {"<=": ratio <= float(value), ">=": ratio >= float(value), "<": ratio < float(value),
            ">": ratio > float(value)}[op]
