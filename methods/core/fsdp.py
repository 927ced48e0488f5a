"""FSDP (PyTorch's fully_shard, "FSDP2") for the hand-written on-policy trainers (L3M, MM) when
``hardware.fsdp`` is on and the job runs on more than one process: parameters, gradients and
optimiser state are sharded over the processes, each decoder layer all-gathered only while it runs
(7B-class models, whose fp32 weights and AdamW state do not fit one GPU). TRL's trainers get FSDP
from transformers' own ``fsdp`` training arguments instead (methods/core/models.trainer_hardware).

Every sharded forward is a collective: all processes must run the same number of forward passes
(the sampler therefore stops only when every process's rows have ended). Checkpoints and the final
model hold full (unsharded) state dicts, so a model trained with FSDP loads like any other.
"""
from __future__ import annotations

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
    for layer in layers:
        fully_shard(layer, **kw)
    fully_shard(model, **kw)
    _route_logprobs(model)


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


def load_optimizer(model, opt, state: dict) -> None:
    """Load a full optimiser state dict (from ``full_state``) into a sharded model's optimiser."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, opt, optim_state_dict=state, options=_options())
