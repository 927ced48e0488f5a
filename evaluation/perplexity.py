"""Task perplexity as l3m-method.md defines it: per test example, the token-length-normalised NLL
of the reference response given its prompt (chat-formatted exactly as SFT trains on it); reported
as mean +- std over the test set, and exp(mean) as a plain perplexity.

The scoring itself (``response_nll``) lives in methods/core/logprobs.py: the trainers' held-out NLL
is the same function, cut by the same truncation rule (``fit_to_context``)."""
from __future__ import annotations

import math

import torch

from methods.core.logprobs import response_nll  # noqa: F401  (the evaluation's scoring function)


def summarize_nll(nll: list[float]) -> dict:
    x = torch.tensor(nll, dtype=torch.float64)
    mean = x.mean().item()
    std = x.std(unbiased=True).item() if len(nll) > 1 else 0.0
    return {"n": len(nll), "nll_mean": mean, "nll_std": std, "nll_se": std / math.sqrt(len(nll)),
            "perplexity": math.exp(mean), "nll_median": x.median().item()}
