"""Per-token log-probabilities of target tokens without materialising full-vocabulary logits for
every position: the decoder runs once, and the LM head + log-softmax run only on the positions
whose next token is a target, in chunks."""
from __future__ import annotations

import torch


def target_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_mask: torch.Tensor,
                    chunk: int = 1024) -> torch.Tensor:
    """log p(input_ids[t] | input_ids[<t]) for every t with target_mask[t] = 1 (0 elsewhere).

    Inputs are right-padded (batch, T). Returns (batch, T) float32; position 0 is never a target.
    A sharded (FSDP) model computes it inside its own forward (methods/core/fsdp.py)."""
    from methods.core.fsdp import is_fsdp

    if is_fsdp(model):
        return model(input_ids=input_ids, attention_mask=attention_mask, target_mask=target_mask,
                     l3m_target_logprobs=chunk)
    return gather_target_logprobs(model, input_ids, attention_mask, target_mask, chunk)


def gather_target_logprobs(model, input_ids, attention_mask, target_mask, chunk: int) -> torch.Tensor:
    backbone = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    head = model.get_output_embeddings()
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    tm = target_mask.bool().clone()
    tm[:, 0] = False
    b_idx, t_idx = tm.nonzero(as_tuple=True)
    for i in range(0, len(b_idx), chunk):
        b, t = b_idx[i:i + chunk], t_idx[i:i + chunk]
        logits = head(hidden[b, t - 1]).float()
        lp = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[b, t].unsqueeze(-1)).squeeze(-1)
        out = out.index_put((b, t), lp)
    return out


def pad_right(seqs: list[list[int]], pad_id: int, masks: list[list[int]] | None = None):
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), T), dtype=torch.long)
    tgt = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        att[i, :len(s)] = 1
        if masks is not None:
            tgt[i, :len(s)] = torch.tensor(masks[i])
    return ids, att, tgt
