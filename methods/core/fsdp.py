"""FSDP (PyTorch's fully_shard, "FSDP2") for the hand-written on-policy trainers (L3M, MM) when
``hardware.fsdp`` is on and the job runs on more than one process: parameters, gradients and
optimiser state are sharded over the processes, each decoder layer all-gathered only while it runs
(7B-class models, whose fp32 weights and AdamW state do not fit one GPU). TRL's trainers get FSDP
from transformers' own ``fsdp`` training arguments instead (methods/core/models.trainer_hardware).

Every sharded forward is a collective: all processes must run the same number of forward passes.
Sampling therefore gathers each layer once per sampling phase (``gathered``, ``hardware.fsdp_sampling:
gather``) and keeps the full parameters through the decode loop: no collective per decoded token, and
each process stops when its own rows have ended. ``per_layer`` keeps FSDP's gather-per-forward (one
all-gather per layer per token; every process decodes until all rows everywhere have ended) for
models whose full parameters do not fit beside the shards.

Checkpoints (``hardware.checkpoint: sharded``) are written with torch.distributed.checkpoint: each
process writes its own shards of the parameters and AdamW state (``save_sharded``/``load_sharded``);
``full`` gathers them on rank 0 instead (a resume may then change the number of processes). The final
model is a full HF folder (``full_state``), so a model trained with FSDP loads like any other.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


def shard(model, hardware: dict) -> None:
    """fully_shard each decoder layer, then the whole model (embeddings, final norm and LM head,
    tied or not, in the root group). bf16 on CUDA: bf16 compute and parameters in the forward, fp32
    gradient reduction and fp32 master weights."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kw = {}
    if hardware.get("bf16") and hardware.get("device") == "cuda":
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    layers = getattr(model.get_decoder(), "layers", None)
    if layers is None:
        raise ValueError(f"hardware.fsdp: {type(model).__name__} has no decoder .layers to shard; "
                         f"set hardware.fsdp: false")
    for layer in layers:  # resharded after each forward, gathered again for backward
        fully_shard(layer, reshard_after_forward=True, **kw)
    # the root group (embeddings, norm, head) stays gathered after forward: backward needs it at once
    fully_shard(model, reshard_after_forward=False, **kw)
    _route_logprobs(model)


def _layer_groups(model) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule) and m is not model]


@contextmanager
def gathered(model):
    """Keep every layer's parameters gathered from its first forward inside the block to its end: a
    sampling phase all-gathers each layer group once (the root group is gathered already or once),
    instead of once per decoded token. Costs one full copy of the parameters per process (in FSDP's
    parameter dtype: bf16 on CUDA) while the block runs. A no-op on a model that is not sharded."""
    from methods.core.distributed import is_fsdp

    layers = _layer_groups(model) if is_fsdp(model) else []
    for m in layers:
        m.set_reshard_after_forward(False, recurse=False)
    model._l3m_gathered = bool(layers)  # forwards are no longer collectives: no lockstep decoding
    try:
        yield
    finally:
        model._l3m_gathered = False
        for m in layers:
            m.reshard()
            m.set_reshard_after_forward(True, recurse=False)



def _route_logprobs(model) -> None:
    """Let the model's own forward compute target log-probabilities (``l3m_target_logprobs=chunk``).

    The sharded root group (embeddings, final norm, LM head) is gathered only inside the model's
    forward, and gathered again for backward when the gradient reaches the forward's output. The
    chunked log-probabilities apply the LM head outside HF's forward, so they must run inside this
    module's forward too; otherwise a second backward in the same step (L3M's separately clipped
    task and barrier gradients) would meet the head's already freed weights."""
    plain = model.forward

    def forward(*args, l3m_target_logprobs=None, l3m_temperature=1.0, **kw):
        if l3m_target_logprobs is None:
            return plain(*args, **kw)
        from methods.core.logprobs import gather_target_logprobs

        return gather_target_logprobs(model, kw["input_ids"], kw["attention_mask"], kw["target_mask"],
                                      l3m_target_logprobs, l3m_temperature)

    model.forward = forward


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_state(model, opt=None) -> tuple[dict, dict | None]:
    """Full model (and optimiser) state dicts on CPU. A collective: every process calls it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if opt is None:
        return get_model_state_dict(model, options=_options(cpu_offload=True)), None
    return get_state_dict(model, opt, options=_options(cpu_offload=True))


def save_sharded(model, opt, path) -> None:
    """Write this process's shards of the model and optimiser state into the folder ``path``
    (torch.distributed.checkpoint; a collective: every process calls it). Peak memory per process:
    its shards, not the whole state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, opt_sd = get_state_dict(model, opt)
    dcp.save({"model": model_sd, "optim": opt_sd}, checkpoint_id=str(path))


def load_sharded(model, opt, path) -> None:
    """Load a checkpoint of ``save_sharded`` into the sharded model and its optimiser (each process
    reads its own shards)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, opt_sd = get_state_dict(model, opt)
    state = {"model": model_sd, "optim": opt_sd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])


def load_optimizer(model, opt, state: dict) -> None:
    """Load a full optimiser state dict (from ``full_state``) into a sharded model's optimiser."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, opt, optim_state_dict=state, options=_options())
