"""How much memory the bound engine may use, and the error when it can't fit.

The budget bounds the coefficient tensors of one back-substitution: batches
of samples and chunks of specification rows are sized to fit it. By default
it follows the device the bounds run on: half the free memory of the current
CUDA device, or a quarter of the available RAM. ``VERINET_BOUND_MEMORY_MB``
or ``memory_limit`` override it.
"""

from __future__ import annotations

import contextlib
import os

import keras

from verinet.errors import InvalidInputError, MemoryBudgetError

_OVERRIDE: list[int] = []


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _free_cuda() -> int | None:
    if keras.backend.backend() != "torch":
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info()
    return int(free)


def memory_budget() -> int:
    """Bytes the coefficient tensors of one bound computation may take.

    Returns:
        The innermost ``memory_limit``, else ``VERINET_BOUND_MEMORY_MB``, else
        half the free CUDA memory (torch backend with a GPU), else a quarter
        of the available RAM.
    """
    if _OVERRIDE:
        return _OVERRIDE[-1]
    env = os.environ.get("VERINET_BOUND_MEMORY_MB")
    if env:
        try:
            value = float(env)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise InvalidInputError(
                f"VERINET_BOUND_MEMORY_MB must be a positive number, got {env!r}."
            )
        return int(value * 2**20)
    cuda = _free_cuda()
    if cuda is not None:
        return cuda // 2
    return _available_ram() // 4


@contextlib.contextmanager
def memory_limit(megabytes: float):
    """Bound computations inside the block use at most ``megabytes``.

    Args:
        megabytes: the budget for coefficient tensors, in MiB (> 0).

    Example:
        >>> with vn.bounds.memory_limit(512):
        ...     lower, upper = vn.compute_bounds(model, x, 0.01, method="crown")
    """
    if isinstance(megabytes, bool) or not isinstance(megabytes, (int, float)):
        raise InvalidInputError(
            f"memory_limit needs a number of MiB, got {megabytes!r}."
        )
    if not megabytes > 0 or megabytes == float("inf"):
        raise InvalidInputError(
            f"memory_limit needs a positive, finite MiB, got {megabytes}."
        )
    _OVERRIDE.append(int(megabytes * 2**20))
    try:
        yield
    finally:
        _OVERRIDE.pop()


def no_grad():
    """A context without autograd on the torch backend (a no-op elsewhere).

    Keras variables require gradients, so bounds computed from them would
    otherwise keep every intermediate tensor alive for a backward pass that
    certification never runs.
    """
    if keras.backend.backend() != "torch":
        return contextlib.nullcontext()
    import torch

    return torch.no_grad()


# On a CPU, chunks past a few hundred MiB only lose cache locality: on the
# Fashion-MNIST CNN, CROWN at a 200-300 MiB chunk ran in 0.7x the time of one
# 1 GiB chunk. GPUs take the whole budget.
CPU_CHUNK_BYTES = 256 * 2**20


def rows_in_budget(bytes_per_row: int, rows: int, what: str, cpu: bool = True) -> int:
    """How many specification rows to bound at once (at least 1).

    Args:
        bytes_per_row: peak bytes one row takes.
        rows: rows still to bound.
        what: the layer, for the error message.
        cpu: cap chunks at ``CPU_CHUNK_BYTES`` (the tensors live on a CPU).

    Raises:
        MemoryBudgetError: when one row alone is over the budget.
    """
    budget = memory_budget()
    if bytes_per_row > budget:
        raise MemoryBudgetError(
            f"Bounding {what} needs {bytes_per_row / 2**20:.1f} MiB for a single "
            f"specification row, over the memory budget of {budget / 2**20:.1f} "
            "MiB. Use a smaller batch_size, or raise the budget with "
            "vn.bounds.memory_limit(megabytes) or VERINET_BOUND_MEMORY_MB."
        )
    room = min(budget, CPU_CHUNK_BYTES) if cpu else budget
    return max(1, min(rows, room // max(bytes_per_row, 1)))
