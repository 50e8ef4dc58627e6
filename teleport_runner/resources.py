"""What a run will allocate, estimated before it allocates anything, against the memory the device has.

A size that cannot fit (``problem.hidden=[1000000]``, ``teleport.batch_size=1000000000``) is refused in well
under a second with the estimate and the memory available, instead of a MemoryError (or the kernel's OOM killer)
minutes later. The estimate is deliberately rough and on the generous side of what the runner keeps at once:

- parameters x 8 copies of their size: the parameters, their gradients, up to two optimizer state tensors
  (Adam), and a teleport's point before, candidate, ascent coordinates and direction;
- activations: the widest batch (training or teleport) x the sum of the layer widths x 4 (forward values,
  the backward, and the teleport objective's double backward).

Only network problems (``problem.sizes``) are estimated; the 2-D test functions need nothing worth checking.
"""
from __future__ import annotations

import torch

from .errors import ConfigError

PARAM_COPIES = 8
ACTIVATION_COPIES = 4
#: Refuse only what clearly cannot fit: the estimate may be high, and the OS gives back page cache.
HEADROOM = 1.0


def estimate_bytes(problem, teleporter, dtype: torch.dtype) -> dict[str, int] | None:
    """{'parameters': bytes, 'activations': bytes, 'n_params': count} for network problems, else None."""
    sizes = getattr(problem, "sizes", None)
    if not sizes:
        return None
    item = torch.finfo(dtype).bits // 8
    bias = bool(getattr(problem, "bias", False))
    n_params = sum(a * b + (b if bias else 0) for a, b in zip(sizes[:-1], sizes[1:]))
    train_batch = int(getattr(problem, "batch_size", 0) or getattr(problem, "n_samples", 1))
    teleport_batch = int(getattr(teleporter, "batch_size", None) or 0) if getattr(teleporter, "enabled", False) else 0
    batch = max(train_batch, teleport_batch)
    return {"parameters": n_params * item * PARAM_COPIES, "activations": batch * sum(sizes) * item * ACTIVATION_COPIES,
            "n_params": n_params, "batch": batch}


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device``: CUDA's free memory, or the host's MemAvailable (None when unknown)."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:
            return None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_memory(problem, teleporter, dtype: torch.dtype, device: torch.device) -> None:
    """Refuse a run whose estimated memory exceeds what ``device`` has free (see the module docstring)."""
    estimate = estimate_bytes(problem, teleporter, dtype)
    free = available_bytes(device)
    if estimate is None or free is None:
        return
    need = estimate["parameters"] + estimate["activations"]
    if need <= free * HEADROOM:
        return
    raise ConfigError(
        f"This run needs about {gib(need)} of memory on {device.type} and {gib(free)} is available: "
        f"{estimate['n_params']:,} parameters (layer sizes {list(problem.sizes)}) take about "
        f"{gib(estimate['parameters'])} with their gradients, optimizer state and teleport copies, and batches of "
        f"{estimate['batch']:,} samples take about {gib(estimate['activations'])} of activations. Use smaller "
        "problem.hidden / problem.dims, problem.batch_size or teleport.batch_size.")
