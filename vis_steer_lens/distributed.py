"""Running one command on several processes: ``torchrun`` or ``accelerate launch``.

No scheduler of our own: the launcher starts the processes and sets ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK`` (both do), ``torch.distributed`` gives the barrier, and each command splits its work
into disjoint shards by rank. Each rank writes its own shard file; rank 0 merges them into the one
results file, so the merged result equals a one-process run's, and a crashed rank's rows are kept
and its remaining work redone on the next launch.

>>> world = current_world()            # World(rank=0, size=1) outside a launcher
>>> mine = shard(list(range(10)), world)  # every size-th item, starting at the rank
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

T = TypeVar("T")

#: How long a rank waits at a barrier for the others (a slow rank's whole shard can come first).
BARRIER_TIMEOUT = timedelta(hours=12)


@dataclass(frozen=True)
class World:
    """This process's place among the launched ones.

    Attributes:
        rank: 0 .. size - 1.
        size: Number of processes (1 without a launcher).
        local_rank: The rank on this machine (picks the GPU).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that merges and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def current_world() -> World:
    """The launcher's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (one process when unset).

    Raises:
        ValueError: If the variables are malformed (a rank outside ``0 .. WORLD_SIZE - 1``).
    """
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ValueError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun / accelerate launch); got "
            f"RANK={os.environ.get('RANK')!r}, WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}."
        ) from None
    if size < 1 or not 0 <= rank < size:
        raise ValueError(
            f"RANK={rank} does not fit WORLD_SIZE={size}; launch with torchrun or accelerate launch."
        )
    return World(rank=rank, size=size, local_rank=local_rank)


def shard(items: Sequence[T], world: World) -> list[T]:
    """This rank's share of ``items``: every ``world.size``-th item from ``world.rank`` on.

    Striding (rather than cutting into blocks) balances ranks when items get harder along the list.
    """
    return list(items[world.rank :: world.size])


def contiguous_shard(n: int, world: World) -> range:
    """This rank's block of ``range(n)``: consecutive ids, blocks in rank order, sizes within one.

    Mining uses blocks so that merging the ranks' top-k lists in rank order sees images in id
    order, exactly as one process does (ties go to the lower image id either way).
    """
    base, extra = divmod(n, world.size)
    start = world.rank * base + min(world.rank, extra)
    return range(start, start + base + (world.rank < extra))


def _ensure_process_group() -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        # gloo works with or without GPUs; the barrier and the gathers carry a few bytes, not tensors.
        dist.init_process_group(backend="gloo", timeout=BARRIER_TIMEOUT)


def barrier(world: World) -> None:
    """Wait until every rank gets here (no-op for one process)."""
    if world.distributed:
        import torch.distributed as dist

        _ensure_process_group()
        dist.barrier()


def gather_objects(value: Any, world: World) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order, on every rank."""
    if not world.distributed:
        return [value]
    import torch.distributed as dist

    _ensure_process_group()
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, value)
    return out


def device_for(world: World, device: str | None) -> str | None:
    """The device a rank runs on: ``cuda`` becomes ``cuda:<local_rank>`` under a launcher."""
    if device is not None and device == "cuda" and world.distributed and torch.cuda.is_available():
        return f"cuda:{world.local_rank}"
    return device


__all__ = [
    "World",
    "barrier",
    "contiguous_shard",
    "current_world",
    "device_for",
    "gather_objects",
    "shard",
]
