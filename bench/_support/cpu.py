"""CPU seconds used by processes, for the benchmarks' CPU-per-request figures."""
from __future__ import annotations


def cpu_seconds(processes) -> float:
    """User + system CPU seconds of `processes` (psutil.Process objects); vanished ones count 0."""
    import psutil

    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def tree_seconds(pid: int, *, children: bool = True) -> float:
    """CPU seconds of process `pid` and (unless `children` is False) all its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        return cpu_seconds([root, *root.children(recursive=True)] if children else [root])
    except psutil.Error:
        return 0.0


def postgres_seconds() -> float:
    """CPU seconds of every PostgreSQL process on the machine (on a quiet machine: the benchmark's)."""
    import psutil

    return cpu_seconds(p for p in psutil.process_iter(["name"]) if p.info["name"] in ("postgres", "postgresql"))
