"""One batched, seeded, KV-cached sampling path for training (L3M, minimax) and evaluation.

Prompts are chat-formatted (methods.core.models.encode_pair), left-padded, and left-truncated so
that prompt + max_new_tokens fits the model's context (the documented truncation rule: the most
recent context is kept). Batch b is sampled after ``torch.manual_seed(seed + b)``, so a run is
reproducible whatever ran before it.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .models import encode_pair


def model_context(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 2048) or 2048)


def generation_kwargs(gen: dict, tok) -> dict:
    kw = {"max_new_tokens": gen["max_new_tokens"], "do_sample": gen["do_sample"],
          "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
    if gen["do_sample"]:
        kw.update(temperature=gen["temperature"], top_p=gen["top_p"], top_k=gen["top_k"] or None)
    return kw


@torch.no_grad()
def sample(model, tok, prompts: list[str], gen: dict, seed: int, progress: bool = True) -> list[dict]:
    """Sample one response per prompt. Returns dicts with response text, token ids, token length,
    whether the model ended the turn itself (``finished``), whether the prompt was truncated, and
    the prompt ids the response was sampled from (``prompt_ids``)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    limit = max(1, model_context(model) - gen["max_new_tokens"])
    out = []
    bs = gen["batch_size"]
    batches = range(0, len(prompts), bs)
    for b, start in enumerate(tqdm(batches, desc="sampling", disable=not progress, mininterval=5)):
        enc = [encode_pair(tok, p)[0] for p in prompts[start:start + bs]]
        truncated = [len(e) > limit for e in enc]
        enc = [e[-limit:] for e in enc]
        T = max(len(e) for e in enc)
        ids = torch.full((len(enc), T), tok.pad_token_id, dtype=torch.long)
        att = torch.zeros((len(enc), T), dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, T - len(e):] = torch.tensor(e)
            att[i, T - len(e):] = 1
        torch.manual_seed(seed + b)
        seqs = model.generate(input_ids=ids.to(device), attention_mask=att.to(device),
                              **generation_kwargs(gen, tok))
        for i, row in enumerate(seqs[:, T:].tolist()):
            finished = tok.eos_token_id in row
            toks = row[: row.index(tok.eos_token_id)] if finished else [t for t in row if t != tok.pad_token_id]
            out.append({"response": tok.decode(toks, skip_special_tokens=True).strip(), "response_ids": toks,
                        "n_tokens": len(toks), "finished": finished, "prompt_truncated": truncated[i],
                        "prompt_ids": enc[i]})
    model.train(was_training)
    return out
