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


# -- what the step is doing (the distributed benchmark attributes collectives to it) ------------------
_PHASE = ["other"]


class phase:
    """``with phase("sampling"):`` names the part of a step that runs inside (sampling, task,
    barrier, optimiser, checkpoint); ``current_phase()`` reads it and the torch profiler sees it as
    ``l3m:<name>``. Costs nothing when nobody reads it."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        import torch

        self.prev = _PHASE[0]
        _PHASE[0] = self.name
        self.rf = torch.profiler.record_function(f"l3m:{self.name}")
        self.rf.__enter__()
        return self

    def __exit__(self, *exc):
        self.rf.__exit__(*exc)
        _PHASE[0] = self.prev
        return False


def current_phase() -> str:
    return _PHASE[0]


class GradReducer:
    """Gradient averaging for replicated parameters (several processes, no FSDP), as DDP's reducer
    does it: the parameters are grouped into buckets of about ``bucket_mb`` MB (DDP's default: 25) in
    reverse registration order, roughly the order the backward pass produces their gradients; a
    bucket's gradients are flattened into one buffer and all-reduced asynchronously as soon as the
    backward pass has accumulated all of them (``register_post_accumulate_grad_hook``), so the
    communication overlaps the rest of the backward pass. ``wait()`` launches the buckets the backward
    did not complete (a parameter without a gradient contributes zeros and keeps no gradient), always in bucket order so that
    every process issues the same collectives in the same order, waits for all of them and writes the
    averages back into ``.grad``.

    DDP itself does not fit the L3M step: it expects each forward to be followed by its own backward,
    while an L3M step runs the task forward, samples, runs the barrier's forward and only then the two
    backward passes (clipped separately). ``bucket_mb: 0`` is the unbucketed path (one blocking
    all-reduce per tensor after the backward), kept for the benchmark's before/after."""

    def __init__(self, params: list, world: int, bucket_mb: float = 25.0):
        self.params, self.world = params, world
        self.buckets: list[list[int]] = []
        if bucket_mb > 0:
            cap, cur, size, key = bucket_mb * 2**20, [], 0, None
            for i in reversed(range(len(params))):
                k = (params[i].dtype, params[i].device)
                if cur and (size >= cap or k != key):
                    self.buckets.append(cur)
                    cur, size = [], 0
                cur.append(i)
                size += params[i].numel() * params[i].element_size()
                key = k
            if cur:
                self.buckets.append(cur)
            self.bucket_of = {i: b for b, idx in enumerate(self.buckets) for i in idx}
            for i, p in enumerate(params):
                p.register_post_accumulate_grad_hook(lambda p, i=i: self._ready(i))
        self._reset()

    def _reset(self) -> None:
        self.pending = [len(b) for b in self.buckets]
        self.works: list = [None] * len(self.buckets)
        self.next = 0

    def _ready(self, i: int) -> None:
        b = self.bucket_of[i]
        if b < self.next:
            raise RuntimeError(f"parameter {i}'s gradient was accumulated again after its bucket was all-reduced "
                               f"(two accumulations in one backward pass); set hardware.grad_bucket_mb: 0")
        self.pending[b] -= 1
        while self.next < len(self.buckets) and self.pending[self.next] == 0:
            self._launch(self.next)

    def _launch(self, b: int) -> None:
        import torch
        import torch.distributed as dist

        flat = torch.cat([(self.params[i].grad if self.params[i].grad is not None
                           else torch.zeros_like(self.params[i])).reshape(-1) for i in self.buckets[b]])
        self.works[b] = (flat, dist.all_reduce(flat, async_op=True))
        self.next = b + 1

    def wait(self) -> None:
        """Finish the averaging of this backward pass's gradients (every process calls it)."""
        import torch.distributed as dist

        if not self.buckets:  # per tensor, blocking
            for p in self.params:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world
            return
        while self.next < len(self.buckets):
            self._launch(self.next)
        for b, (flat, work) in enumerate(self.works):
            work.wait()
            flat /= self.world
            off = 0
            for i in self.buckets[b]:
                p, n = self.params[i], self.params[i].numel()
                if p.grad is not None:  # no gradient here stays None (as unreduced: the optimiser skips it)
                    p.grad.copy_(flat[off:off + n].view_as(p))
                off += n
        self._reset()
