"""Shared by the benchmark scripts: peak resident memory of this process."""

from __future__ import annotations

import resource


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
