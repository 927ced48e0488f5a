"""Per-token log-probabilities of target tokens without materialising full-vocabulary logits for
every position: the decoder runs once, and the LM head + log-softmax run only on the positions
whose next token is a target, in chunks.

``sequence_logprob`` and ``response_nll`` are the only ways the harness scores sequences: the
on-policy trainers' samples and task NLL, CPO's margins, the held-out NLL during training and
task perplexity in evaluation. Sequences come from ``methods.core.models.fit_to_context`` (one
truncation rule), so position 0 is never a target and every count of targets is the same count.
"""
from __future__ import annotations

import torch


def target_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_mask: torch.Tensor,
                    chunk: int = 1024, temperature: float = 1.0) -> torch.Tensor:
    """log p_T(input_ids[t] | input_ids[<t]) for every t with target_mask[t] = 1 (0 elsewhere), where
    p_T = softmax(logits / temperature): the distribution a sampler at that temperature draws from.

    Inputs are right-padded (batch, T). Returns (batch, T) float32; position 0 is never a target.
    A sharded (FSDP) model computes it inside its own forward (methods/core/fsdp.py)."""
    from methods.core.distributed import is_fsdp

    if is_fsdp(model):
        return model(input_ids=input_ids, attention_mask=attention_mask, target_mask=target_mask,
                     l3m_target_logprobs=chunk, l3m_temperature=temperature)
    return gather_target_logprobs(model, input_ids, attention_mask, target_mask, chunk, temperature)


def gather_target_logprobs(model, input_ids, attention_mask, target_mask, chunk: int,
                           temperature: float = 1.0) -> torch.Tensor:
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
        if temperature != 1.0:
            logits = logits / temperature
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


def sequence_logprob(model, seqs: list[list[int]], starts: list[int], pad_id: int, device=None, *,
                     mean: bool = False, temperature: float = 1.0) -> torch.Tensor:
    """Per sequence, the sum (``mean``: the mean) of log p_T of its targets ``seq[start:]``.

    ``starts`` must be >= 1 (``fit_to_context`` guarantees it): position 0 has no context."""
    if any(s < 1 for s in starts):
        raise ValueError("sequence_logprob: a target at position 0 has no context; cut sequences with fit_to_context")
    device = device if device is not None else next(model.parameters()).device
    masks = [[0] * st + [1] * (len(s) - st) for s, st in zip(seqs, starts)]
    ids, att, tgt = (t.to(device) for t in pad_right(seqs, pad_id, masks))
    lp = target_logprobs(model, ids, att, tgt, temperature=temperature)
    total = (lp * tgt).sum(-1)
    return total / tgt.sum(-1).clamp(min=1) if mean else total


@torch.no_grad()
def response_nll(model, tok, rows: list[dict], ctx: int | None = None, batch_size: int = 16,
                 progress: bool = True) -> list[float]:
    """Per (prompt, response) row, the mean NLL (nats/token) of the response (and its end-of-turn
    token) given the chat-formatted prompt, cut to ``ctx`` tokens (default: the model's context)
    by ``fit_to_context``."""
    from tqdm.auto import tqdm

    from methods.core.generation import model_context
    from methods.core.models import encode_target

    model.eval()
    ctx = ctx or model_context(model)
    out = []
    for i in tqdm(range(0, len(rows), batch_size), desc="perplexity", disable=not progress, mininterval=5):
        seqs, starts = encode_target(tok, rows[i:i + batch_size], "response", ctx)
        lp = sequence_logprob(model, seqs, starts, tok.pad_token_id, mean=True)
        out += (-lp.float()).tolist()
    return out
