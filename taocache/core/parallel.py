"""Several processes, one sequence: what the caches need under diffusers' context parallelism.

``transformer.enable_parallelism(config=ContextParallelConfig(...))`` splits the token sequence over the ranks
at the first block and gathers it again after the last. A cache that decides from a shard (TeaCache's
indicator) could decide differently on two ranks; then one rank runs the blocks and waits in their attention's
all-to-all while the other has skipped them: a hang or a corrupted video. The helpers here let a decision be
made from values every rank shares, let one rank write a file the others measured identically, and set
context parallelism up for the commands under ``torchrun``. Outside ``torch.distributed`` each is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import torch

from . import compat
from .denoisers import TRANSFORMER_COMPONENTS


def distributed() -> bool:
    """Whether this process is one of several in an initialised ``torch.distributed`` job."""
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def is_first_rank() -> bool:
    """Global rank 0, or a single process: the one that writes files and prints."""
    return not distributed() or torch.distributed.get_rank() == 0


def context_parallel_group(module: torch.nn.Module):
    """The process group ``module``'s sequence is split over, or None outside context parallelism.

    Looked up per call (cheap), since ``enable_parallelism`` may come after the caches are enabled.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    mesh = compat.context_parallel_mesh(module)
    if mesh is None or mesh.size() < 2:
        return None
    return mesh.get_group()


def sum_over(tensor: torch.Tensor, group) -> torch.Tensor:
    """``tensor`` added up over ``group`` in place (unchanged without a group); every rank gets the total."""
    if group is not None:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM, group=group)
    return tensor


def first_rank_value(value):
    """Rank 0's ``value`` on every rank (any picklable object); ``value`` itself in a single process."""
    if not distributed():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def check_same_on_every_rank(value, what: str) -> None:
    """Raise on every rank at once (not only on the odd one out, which would leave the others waiting)
    when the ranks hold different ``value``s (any picklable, comparable object)."""
    if not distributed():
        return
    everyone = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(everyone, value)
    differ = [rank for rank, theirs in enumerate(everyone) if theirs != everyone[0]]
    if differ:
        raise RuntimeError(
            f"the ranks measured different {what}: ranks {differ} differ from rank 0 (did every rank run the "
            "same prompts, seeds and call arguments?)"
        )


def on_first_rank(action: Callable[[], object], what: str):
    """Run ``action`` (a write) on rank 0 only; every rank returns once it is done, or raises if it failed.

    The outcome is broadcast, so a failed write raises everywhere instead of leaving the others waiting, and
    after a success every rank can read what was written (on a shared file system). Returns ``action``'s
    result on rank 0, None on the others; in a single process it just runs ``action``.
    """
    if not distributed():
        return action()
    result, failure = None, None
    if torch.distributed.get_rank() == 0:
        try:
            result = action()
        except Exception as err:  # noqa: BLE001 - sent to every rank below, then raised there
            failure = err
    message = first_rank_value(None if failure is None else f"{type(failure).__name__}: {failure}")
    if failure is not None:
        raise failure
    if message is not None:
        raise RuntimeError(f"rank 0 could not {what}: {message}")
    return result


@contextlib.contextmanager
def one_device_without_accelerator():
    """Let ``enable_parallelism`` run on a machine without an accelerator (tests, CPU runs).

    diffusers picks each rank's device as ``rank % torch.accelerator.device_count()``, a division by zero
    without an accelerator; on the CPU every rank uses the one CPU device, so it is told there is one. With
    an accelerator nothing changes.
    """
    if torch.accelerator.device_count() > 0:
        yield
        return
    from unittest import mock

    with mock.patch.object(torch.accelerator, "device_count", return_value=1):
        yield


def launched() -> bool:
    """Whether ``torchrun`` (or the like) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start_from_environment() -> str:
    """Join the ``torchrun`` job this process belongs to (``WORLD_SIZE`` > 1) and return its device.

    NCCL on ``cuda:LOCAL_RANK`` when CUDA is there, else gloo on the CPU; a single process gets its usual
    device ("cuda" or "cpu") and nothing is initialised.
    """
    cuda = torch.cuda.is_available()
    if not launched():
        return "cuda" if cuda else "cpu"
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return device


def leave() -> None:
    """Leave the ``torch.distributed`` job :func:`start_from_environment` joined, if any."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def check_degrees(ulysses_degree: int, ring_degree: int) -> None:
    """The degrees' product must be the number of processes (before anything loads, in the commands)."""
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if ulysses_degree < 1 or ring_degree < 1 or ulysses_degree * ring_degree != world:
        raise ValueError(
            f"Ulysses degree {ulysses_degree} x ring degree {ring_degree} must equal the number of processes "
            f"({world}); start them with torchrun --nproc_per_node {max(ulysses_degree * ring_degree, 1)}"
        )


def enable_context_parallel(pipe, ulysses_degree: int = 1, ring_degree: int = 1) -> None:
    """``enable_parallelism`` on each transformer of ``pipe`` (Wan2.2 has two), checked first.

    The degrees' product must be the number of processes, and the Ulysses degree must divide the attention
    heads (each rank takes a share of them); either mistake is refused with the reason.
    """
    from diffusers import ContextParallelConfig

    check_degrees(ulysses_degree, ring_degree)
    for name in TRANSFORMER_COMPONENTS:
        module = getattr(pipe, name, None)
        if module is None:
            continue
        heads = getattr(getattr(module, "config", None), "num_attention_heads", None)
        if heads is not None and heads % ulysses_degree:
            raise ValueError(
                f"{name} has {heads} attention heads, which Ulysses degree {ulysses_degree} does not divide; "
                "choose a divisor and put the rest into the ring degree"
            )
        with one_device_without_accelerator():
            module.enable_parallelism(
                config=ContextParallelConfig(ulysses_degree=ulysses_degree, ring_degree=ring_degree)
            )
