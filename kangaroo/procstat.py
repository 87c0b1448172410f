"""Process memory from /proc (Linux), for the benchmarks' peak-memory figures."""

from __future__ import annotations


def status_mb(field: str = "VmRSS") -> float:
    """A /proc/self/status field in MB (VmRSS: now, VmHWM: peak); NaN where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_peak() -> None:
    """Reset VmHWM to the current RSS, so a later peak excludes what came before."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
