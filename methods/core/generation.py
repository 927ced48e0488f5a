"""One batched, seeded, KV-cached sampling path for training (L3M, minimax) and evaluation.

Prompts are chat-formatted (methods.core.models.encode_pair), left-padded, and left-truncated by
``fit_to_context`` so that prompt + max_new_tokens fits the context (the most recent tokens are
kept); each sample carries the prompt ids it was drawn from, which is what its log-probability
is scored behind (methods/core/onpolicy.py ``sequences``). Batch b is sampled after ``torch.manual_seed(seed + b)``, so a run is
reproducible whatever ran before it.

Decoding is a plain loop over the model's forward with a KV cache (``decode``) rather than
``model.generate``: the prompt pass computes logits for the last position only, finished rows
are padded, and a token is drawn by inverse CDF: one uniform per row searched in the cumulative
probabilities, computed in float64 (a float32 cumulative sum over a 49k-128k vocabulary drifts by
up to ~1e-3 in total variation; float64 sums and float64 uniforms keep the drawn distribution within ~1e-12 of softmax;
float32 uniforms alone would quantise every probability to multiples of 2^-24). ``torch.multinomial``, or a Gumbel/exponential
race, draws a random number per vocabulary entry, which was 28% of sampling time on CPU.
Every sampled token is kept, the pad token included when it is not EOS: a response is exactly
the tokens drawn up to (not including) EOS. ``cache: static`` preallocates the cache
(transformers' StaticCache) so that every decode step has the same shapes.

``backend: hf`` hands decoding to transformers' ``generate`` instead (``hf_decode``: the same
prompts, padding, cache and sampling settings; with ``cache: static`` on a GPU its forward is
compiled through ``CompileConfig``). It draws from the same distribution (tests/test_generation.py
checks it with a chi-squared test against the loop) but not the same tokens: ``generate`` draws a
random number per vocabulary entry (``torch.multinomial``), so its samples depend on the batch and on
how it is split over processes, while the loop's do not.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .distributed import all_processes_done, is_fsdp
from .models import encode_pair


def model_context(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 2048) or 2048)


def pick_tokens(logits: torch.Tensor, do_sample: bool = True, temperature: float = 1.0, top_p: float = 1.0,
                top_k: int | None = 0, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """Next token per row of (B, V) logits: argmax when not sampling, else a sample from
    softmax(logits / temperature) restricted to the top_k tokens and the top_p nucleus.

    ``rows = (offset, total)``: these B rows are rows offset..offset+B of a batch of ``total`` split
    across processes; the uniforms are drawn for the whole batch and sliced, so each row gets the
    number it would get unsplit (a 2-rank run samples what a 1-process run samples)."""
    if not do_sample or temperature == 0:
        return logits.argmax(-1)
    logits = logits.double() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        p_sorted, idx = probs.sort(dim=-1, descending=True)
        drop = (p_sorted.cumsum(-1) - p_sorted) >= top_p  # keep the smallest prefix with mass >= top_p
        probs = probs.scatter(-1, idx, p_sorted.masked_fill(drop, 0.0))
    # inverse CDF: one uniform per row (torch.multinomial and the Gumbel race draw one per token), float64 sums
    cdf = probs.cumsum(-1)
    off, total = rows or (0, cdf.shape[0])
    u = torch.rand((total, 1), device=cdf.device, dtype=torch.float64)[off:off + cdf.shape[0]] * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=cdf.shape[-1] - 1)


@torch.no_grad()
def decode(model, ids: torch.Tensor, att: torch.Tensor, max_new_tokens: int, *, eos_id: int, pad_id: int,
           do_sample: bool = True, temperature: float = 1.0, top_p: float = 1.0, top_k: int | None = 0,
           cache: str = "dynamic", rows: tuple[int, int] | None = None) -> torch.Tensor:
    """Continue left-padded prompts ``ids`` (B, T) by up to ``max_new_tokens`` tokens. Returns (B, N)
    new tokens; after a row's EOS its remaining positions hold ``pad_id``. Stops early once every
    row has ended."""
    from transformers.cache_utils import DynamicCache, StaticCache

    B, T = ids.shape
    dev = ids.device
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    if cache == "static":
        kv = StaticCache(config=model.config, max_cache_len=T + max_new_tokens)
        mask = torch.zeros((B, T + max_new_tokens), dtype=att.dtype, device=dev)
        mask[:, :T] = att
    elif cache == "dynamic":
        kv, mask = DynamicCache(), att
    else:
        raise ValueError(f"generation.cache: '{cache}' is not one of dynamic, static")
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=kv, use_cache=True,
                cache_position=torch.arange(T, device=dev), logits_to_keep=1)
    step_pos = pos[:, -1:] + 1
    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    lockstep = collective_forward(model)  # sharded forwards are collectives: stop when every process's rows have ended
    for t in range(max_new_tokens):
        nxt = pick_tokens(out.logits[:, -1], do_sample, temperature, top_p, top_k, rows)
        nxt = nxt.masked_fill(done, pad_id)
        tokens[:, t] = nxt
        done |= nxt == eos_id
        if t + 1 == max_new_tokens or (all_processes_done(bool(done.all())) if lockstep else bool(done.all())):
            break
        if cache == "static":
            mask[:, T + t] = 1
        else:
            mask = torch.cat([mask, mask.new_ones((B, 1))], dim=1)
        out = model(input_ids=nxt.unsqueeze(-1), attention_mask=mask, position_ids=step_pos, past_key_values=kv,
                    use_cache=True, cache_position=torch.tensor([T + t], device=dev))
        step_pos = step_pos + 1
    return tokens


def collective_forward(model) -> bool:
    """Whether a forward pass of ``model`` is a collective: an FSDP-sharded model whose layers are not
    held gathered (methods/core/fsdp.py ``gathered``). Then every process must run as many forwards
    as the others."""
    return is_fsdp(model) and not getattr(model, "_l3m_gathered", False)


@torch.no_grad()
def hf_decode(model, ids: torch.Tensor, att: torch.Tensor, max_new_tokens: int, *, eos_id: int, pad_id: int,
              do_sample: bool = True, temperature: float = 1.0, top_p: float = 1.0, top_k: int | None = 0,
              cache: str = "dynamic") -> torch.Tensor:
    """``decode`` through transformers' ``generate``: the same (B, N) layout (after a row's EOS its
    positions hold ``pad_id``). Every generation setting is given explicitly, so the model's own
    generation_config (repetition penalties, default top_k 50, ...) does not change what is drawn.
    With ``cache: static`` on CUDA the forward is compiled (``CompileConfig``); a sharded model whose
    forward is a collective decodes with ``synced_gpus``."""
    from transformers import CompileConfig, GenerationConfig

    if cache not in ("dynamic", "static"):
        raise ValueError(f"generation.cache: '{cache}' is not one of dynamic, static")
    sampling = bool(do_sample) and temperature != 0
    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens, min_new_tokens=0, do_sample=sampling,
        temperature=float(temperature) if sampling else 1.0, top_k=(top_k or 0) if sampling else None,
        top_p=float(top_p) if sampling else 1.0, repetition_penalty=1.0, num_beams=1,
        eos_token_id=eos_id, pad_token_id=pad_id, use_cache=True,
        cache_implementation="static" if cache == "static" else None,
        compile_config=CompileConfig() if cache == "static" and ids.device.type == "cuda" else None)
    out = model.generate(input_ids=ids, attention_mask=att, generation_config=cfg,
                         synced_gpus=collective_forward(model))
    new = out[:, ids.shape[1]:]
    tokens = torch.full((ids.shape[0], max_new_tokens), pad_id, dtype=torch.long, device=ids.device)
    tokens[:, :new.shape[1]] = new
    ended = (tokens == eos_id).long().cumsum(-1)  # positions after a row's first EOS hold the pad token
    return tokens.masked_fill((ended - (tokens == eos_id).long()) > 0, pad_id)


@torch.no_grad()
def sample(model, tok, prompts: list[str], gen: dict, seed: int, progress: bool = True,
           rows: tuple[int, int] | None = None, context: int | None = None) -> list[dict]:
    """Sample one response per prompt. Returns dicts with response text, token ids, token length,
    whether the model ended the turn itself (``finished``), whether the prompt was truncated, and
    the prompt ids the response was sampled from (``prompt_ids``). ``rows``: see ``pick_tokens``
    (one sampling batch only). ``context``: the sequence length prompt + response must fit
    (default: the model's context)."""
    from .models import fit_to_context

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    context = context or model_context(model)
    limit = context - gen["max_new_tokens"]
    if limit < 1:
        raise ValueError(f"max_new_tokens {gen['max_new_tokens']} leaves no room for a prompt in a context of "
                         f"{context} tokens; lower max_new_tokens")
    out = []
    bs = gen["batch_size"]
    batches = range(0, len(prompts), bs)
    for b, start in enumerate(tqdm(batches, desc="sampling", disable=not progress, mininterval=5)):
        enc = [encode_pair(tok, p)[0] for p in prompts[start:start + bs]]
        truncated = [len(e) > limit for e in enc]
        enc = [fit_to_context(e, len(e), limit)[0] for e in enc]
        T = max(len(e) for e in enc)
        ids = torch.full((len(enc), T), tok.pad_token_id, dtype=torch.long)
        att = torch.zeros((len(enc), T), dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, T - len(e):] = torch.tensor(e)
            att[i, T - len(e):] = 1
        torch.manual_seed(seed + b)
        backend = gen.get("backend", "loop")
        if backend not in BACKENDS:
            raise ValueError(f"generation.backend: '{backend}' is not one of {', '.join(BACKENDS)}")
        new = BACKENDS[backend](model, ids.to(device), att.to(device), gen["max_new_tokens"], eos_id=tok.eos_token_id,
                     pad_id=tok.pad_token_id, do_sample=gen["do_sample"], temperature=gen["temperature"],
                     top_p=gen["top_p"], top_k=gen["top_k"], cache=gen.get("cache", "dynamic"),
                     **({"rows": rows} if backend == "loop" else {}))
        for i, row in enumerate(new.tolist()):
            finished = tok.eos_token_id in row
            # unfinished: decoding ran all max_new_tokens steps, so every position is a drawn token
            toks = row[: row.index(tok.eos_token_id)] if finished else row
            out.append({"response": tok.decode(toks, skip_special_tokens=True).strip(), "response_ids": toks,
                        "n_tokens": len(toks), "finished": finished, "prompt_truncated": truncated[i],
                        "prompt_ids": enc[i]})
    model.train(was_training)
    return out


BACKENDS = {"loop": decode, "hf": hf_decode}  # generation.backend
