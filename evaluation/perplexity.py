"""Task perplexity as l3m-method.md defines it: per test example, the token-length-normalised NLL
of the reference response given its prompt (chat-formatted exactly as SFT trains on it); reported
as mean +- std over the test set, and exp(mean) as a plain perplexity."""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from methods.core.generation import model_context
from methods.core.logprobs import pad_right, target_logprobs
from methods.core.models import encode_pair


@torch.no_grad()
def response_nll(model, tok, rows: list[dict], batch_size: int = 16, progress: bool = True) -> list[float]:
    """Per-example mean NLL (nats/token) of ``row['response']`` given ``row['prompt']``.

    Over-long pairs keep the whole response and the most recent prompt tokens (left truncation).
    """
    model.eval()
    device = next(model.parameters()).device
    ctx = model_context(model)
    out = []
    for i in tqdm(range(0, len(rows), batch_size), desc="perplexity", disable=not progress, mininterval=5):
        seqs, masks = [], []
        for r in rows[i:i + batch_size]:
            ids, start = encode_pair(tok, r["prompt"], r["response"])
            if len(ids) > ctx:
                cut = min(len(ids) - ctx, start - 1)
                ids, start = ids[cut:][-ctx:], start - cut
            seqs.append(ids)
            masks.append([0] * start + [1] * (len(ids) - start))
        ids, att, tgt = pad_right(seqs, tok.pad_token_id, masks)
        ids, att, tgt = ids.to(device), att.to(device), tgt.to(device)
        lp = target_logprobs(model, ids, att, tgt)
        n = tgt[:, 1:].sum(1).clamp(min=1)
        out += (-(lp * tgt).sum(1) / n).tolist()
    return out


def summarize_nll(nll: list[float]) -> dict:
    x = torch.tensor(nll, dtype=torch.float64)
    mean = x.mean().item()
    std = x.std(unbiased=True).item() if len(nll) > 1 else 0.0
    return {"n": len(nll), "nll_mean": mean, "nll_std": std, "nll_se": std / math.sqrt(len(nll)),
            "perplexity": math.exp(mean), "nll_median": x.median().item()}
