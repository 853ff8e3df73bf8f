"""Several processes: who is who, and how their results meet.

    accelerate launch --num_processes 2 -m uld unlearn ...     (or torchrun -m uld ...)

Every process runs the whole command. Training is data-parallel through the Trainer (each
process takes its share of every batch, gradients are averaged); `uld eval` gives each process a
contiguous share of every split's rows and gathers the per-item results on the main process.
Only the main process (rank 0) prints, writes files and holds the output's lock. One process (no
launcher) is the ordinary case: every function here is then a no-op.

The launcher's environment says where a process stands (WORLD_SIZE, RANK, LOCAL_RANK); the
process group is made on first use by accelerate (gloo on CPUs, nccl on GPUs). Under DeepSpeed
ZeRO-3 (`zero3`) no process holds the trained model's weights whole: they are gathered for
saving (`uld.trainer.whole_weights`), and what needs them whole in one process is refused
(`refuse_zero3`).
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


def zero3() -> bool:
    """Whether this launch trains under DeepSpeed ZeRO stage 3, read from the environment as the
    Trainer reads it: `accelerate launch` with a DeepSpeed config sets ACCELERATE_USE_DEEPSPEED
    and names the config file (or the stage), which accelerate's `DeepSpeedPlugin` reads."""
    from accelerate.utils import DeepSpeedPlugin, parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_DEEPSPEED") and DeepSpeedPlugin().zero_stage == 3


def refuse_zero3(needs: dict[str, str]) -> None:
    """Under ZeRO-3 (`zero3`), refuse the settings in `needs` (setting -> why, and what to do
    instead): ZeRO-3 gives each process a shard of every trained weight, gathered only for a
    forward pass that all processes run together, and these need the weights whole in one
    process, or different forward passes on each."""
    if needs and zero3():
        raise ValueError(
            "DeepSpeed ZeRO-3 gives each process a shard of every trained weight, gathered only "
            "for forward passes that all processes run together; refused: "
            + "; ".join(f"{what} ({why})" for what, why in needs.items())
        )
