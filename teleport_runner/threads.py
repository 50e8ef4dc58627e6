"""How many CPU threads torch uses in a run: ``threads=auto`` (the default) or an integer.

``auto`` takes the CPUs the run may use (the process's CPU affinity; under SLURM the allocation's
``SLURM_CPUS_PER_TASK``; under Hydra's joblib launcher the CPUs divided by ``n_jobs``) and then uses one thread
unless one descent step is large enough for threads to pay: at least ``THREADED_WORK`` multiply-adds
(parameters x batch). Measured on the 2-core machine this project is developed on, with other processes
loading it: two threads were slower than one at every size tried, from the 5-6-7-8 regression net to
784-512-512-10 with batches of 1024 (2 threads took 2x to 200x longer; BLAS threads spin against each other),
so every preset here runs on one thread. An integer forces the count. The count is set before any torch work
and recorded in ``summary.json`` (``threads``, ``threads_reason``).
"""
from __future__ import annotations

import os

from .errors import ConfigError

#: Multiply-adds per descent step (parameters x batch) from which ``auto`` uses more than one thread.
THREADED_WORK = 2e9


def available_cpus() -> tuple[int, str]:
    """(CPUs this run may use, where that number comes from)."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit() and int(slurm) > 0:
        return int(slurm), "SLURM_CPUS_PER_TASK"
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    jobs = _joblib_jobs()
    if jobs:
        return max(1, cpus // jobs), f"{cpus} CPUs / {jobs} joblib jobs"
    return cpus, f"{cpus} CPUs"


def _joblib_jobs() -> int | None:
    """``n_jobs`` of Hydra's joblib launcher when this job runs under it (-1: one job per CPU)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        launcher = HydraConfig.get().launcher
        if "joblib" not in str(launcher.get("_target_", "")).lower():
            return None
        n = int(launcher.get("n_jobs", -1))
        return (os.cpu_count() or 1) if n < 1 else n
    except Exception:  # not under Hydra, or another launcher
        return None


def work_per_step(problem) -> float:
    """Multiply-adds of one forward pass on a training batch (0 for the 2-D test functions)."""
    sizes = getattr(problem, "sizes", None)
    if not sizes:
        return 0.0
    batch = int(getattr(problem, "batch_size", 0) or getattr(problem, "n_samples", 1))
    return float(sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) * batch)


def choose_threads(setting, problem) -> tuple[int, str]:
    """(thread count, why) for ``threads=<setting>`` on ``problem``."""
    if isinstance(setting, int) and not isinstance(setting, bool):
        if setting < 1:
            raise ConfigError(f"Invalid threads: {setting!r}; it must be auto or a positive integer.")
        return setting, "set by threads"
    if setting != "auto":
        raise ConfigError(f"Invalid threads: {setting!r}; it must be auto or a positive integer (threads=1).")
    cpus, source = available_cpus()
    if work_per_step(problem) < THREADED_WORK:
        return 1, f"auto: one descent step is too small for threads to pay ({source})"
    return cpus, f"auto: {source}"


def apply_threads(setting, problem) -> tuple[int, str]:
    """Set torch's intra-op thread count for this process; returns (count, why)."""
    import torch

    count, reason = choose_threads(setting, problem)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count, reason
