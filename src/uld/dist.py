"""Several processes: who is who, and how their results meet.

    accelerate launch --num_processes 2 -m uld unlearn ...     (or torchrun -m uld ...)

Every process runs the whole command. Training is data-parallel through the Trainer (each
process takes its share of every batch, gradients are averaged); `uld eval` gives each process a
contiguous share of every split's rows and gathers the per-item results on the main process.
Only the main process (rank 0) prints, writes files and holds the output's lock. One process (no
launcher) is the ordinary case: every function here is then a no-op.

The launcher's environment says where a process stands (WORLD_SIZE, RANK, LOCAL_RANK); the
process group is made on first use by accelerate (gloo on CPUs, nccl on GPUs).
"""

from __future__ import annotations

import os

import torch


def world_size() -> int:
    """How many processes run this command (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's number, 0 .. world_size() - 1 (0 is the main process)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's number on its machine: the GPU it uses."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init() -> None:
    """Make the process group, if there are several processes and it is not made yet."""
    if world_size() > 1 and not torch.distributed.is_initialized():
        from accelerate import PartialState

        PartialState()


def barrier() -> None:
    """Wait until every process gets here."""
    if world_size() > 1:
        init()
        torch.distributed.barrier()


def gather(obj) -> list:
    """[obj of process 0, obj of process 1, ...] on every process (`obj`: anything picklable)."""
    if world_size() == 1:
        return [obj]
    init()
    out: list = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def broadcast(obj):
    """The main process's `obj` on every process (`obj`: anything picklable; the others' `obj`
    is ignored): what the main process decided, so that all do the same."""
    if world_size() == 1:
        return obj
    init()
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(n: int | float, device: torch.device | str = "cpu") -> torch.Tensor:
    """The sum of `n` over the processes, as a float64 tensor on `device`."""
    t = torch.tensor(float(n), dtype=torch.float64, device=device)
    if world_size() > 1:
        init()
        torch.distributed.all_reduce(t)
    return t


def share(n: int, world: int | None = None, at: int | None = None) -> range:
    """The contiguous share of `n` rows of process `at` (default: this one) among `world`
    processes: the first n % world processes get one row more. Shares are in rank order, so
    concatenating them gives range(n)."""
    world = world_size() if world is None else world
    at = rank() if at is None else at
    base, extra = divmod(n, world)
    start = at * base + min(at, extra)
    return range(start, start + base + (at < extra))


def check_rows(counts: dict[str, int], what: str = "evaluate") -> None:
    """Refuse to `what` with more processes than the rows of some split: a process would
    have no rows to score and the split's aggregates would be computed on nothing."""
    world = world_size()
    short = {k: n for k, n in counts.items() if n < world}
    if world > 1 and short:
        raise ValueError(
            f"{world} processes but only {', '.join(f'{n} {k} rows' for k, n in short.items())} "
            f"to {what}: each process needs at least one row of every split; launch at most "
            f"{min(counts.values())} processes (--num_processes) or drop that split"
        )
