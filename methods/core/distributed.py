"""Several processes for one training job (torchrun, or `accelerate launch` as the rules use it when
``hardware.processes`` > 1): the process group, this process's rank, and a barrier. On one process
every helper is a no-op, so single-process code paths stay as they are."""
from __future__ import annotations

import os


def init_distributed(device: str) -> tuple[int, int, int]:
    """(world size, rank, local rank). Under torchrun/accelerate (WORLD_SIZE > 1 in the environment)
    the process group is started here if it is not yet (gloo on CPU, nccl on CUDA)."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        return dist.get_world_size(), dist.get_rank(), local
    return 1, 0, 0


def split_errors(section: dict, world: int, field: str, what: str) -> list[str]:
    """The on-policy trainers split the task batch and the sampled prompts over the processes: one
    message per setting of ``section`` that does not split over ``world`` (``what`` names it)."""
    return [f"{field}.{key}: {section[key]} does not split over {what}; use a multiple of {world}"
            for key in ("batch_size", "sample_prompts") if section[key] % world]


def rank() -> int:
    """This process's rank (0 without a process group: the only process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    """Destroy the process group before the process exits (also after a pre-emption): exiting with
    a live group can abort a process during teardown (SIGABRT instead of the intended exit code)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_fsdp(model) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        return False
    return isinstance(model, FSDPModule)


def all_processes_done(done: bool) -> bool:
    """Whether ``done`` holds on every process (one all-reduce)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([0.0 if done else 1.0], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.item() == 0
