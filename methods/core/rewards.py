"""The reward interface: ``score(prompts, responses) -> torch.Tensor`` (one float per response).

Rules (response length) and learned reward models (any HF sequence-classification folder or hub
id, inputs truncated to ``max_length`` tokens, optionally z-scored with the mean/std stored beside
the model in ``reward_norm.json``) answer the same call, so constraints and evaluation take either.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch


class Reward:
    name: str = "reward"
    unit: str = ""

    def score(self, prompts: list[str], responses: list[str], response_ids=None) -> torch.Tensor:
        """One score per response. ``response_ids`` (the policy's token ids, when known) lets
        token-level rules count without re-tokenising; learned models ignore it."""
        raise NotImplementedError  # pragma: no cover

    def __call__(self, prompts, responses, response_ids=None):
        s = self.score(list(prompts), list(responses), response_ids)
        bad = (~torch.isfinite(s)).nonzero().flatten().tolist()
        if bad:
            i = bad[0]
            raise FloatingPointError(f"reward {self.name!r} returned {s[i].item()} for sample {i} "
                                     f"(prompt {prompts[i][:60]!r}, response {responses[i][:60]!r})")
        return s


class LengthReward(Reward):
    """Length of the response in tokens (the sampled ids when given, else the text re-tokenised with the
    policy's tokenizer, no special tokens), words or chars."""

    def __init__(self, name: str = "length", unit: str = "tokens", tokenizer=None):
        if unit == "tokens" and tokenizer is None:
            raise ValueError(f"reward {name!r}: counting tokens needs the policy's tokenizer")
        self.name, self.unit, self.tok = name, unit, tokenizer

    def score(self, prompts, responses, response_ids=None):
        if self.unit == "tokens" and response_ids is not None:
            n = [len(ids) for ids in response_ids]
        elif self.unit == "tokens":
            n = [len(self.tok(r, add_special_tokens=False)["input_ids"]) for r in responses]
        elif self.unit == "words":
            n = [len(r.split()) for r in responses]
        else:
            n = [len(r) for r in responses]
        return torch.tensor(n, dtype=torch.float32)


class HFClassifierReward(Reward):
    """A sequence-classification reward model (e.g. trained by TRL's RewardTrainer); logit 0 is the score."""

    unit = "reward-model units"

    def __init__(self, name: str, path: str, max_length: int = 512, normalize: bool = True,
                 device: str = "cpu", batch_size: int = 32):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.name, self.path, self.batch_size, self.device = name, path, batch_size, device
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
        ctx = getattr(self.model.config, "max_position_embeddings", None) or max_length
        self.max_length = min(max_length, ctx)
        self.mean, self.std = 0.0, 1.0
        norm = Path(path) / "reward_norm.json"
        self.normalized = bool(normalize and norm.exists())
        if self.normalized:
            stats = json.loads(norm.read_text())
            self.mean, self.std = float(stats["mean"]), float(stats["std"]) or 1.0
            self.unit = "std units of the reference set"

    @torch.no_grad()
    def score(self, prompts, responses, response_ids=None):
        out = []
        for i in range(0, len(prompts), self.batch_size):
            enc = self.tok(prompts[i:i + self.batch_size], responses[i:i + self.batch_size], truncation="longest_first",
                           max_length=self.max_length, padding=True, return_tensors="pt").to(self.device)
            out.append(self.model(**enc).logits[:, 0].float().cpu())
        s = torch.cat(out) if out else torch.zeros(0)
        return (s - self.mean) / self.std


def build_reward(name: str, spec: dict, tokenizer=None, device: str = "cpu") -> Reward:
    if spec["type"] == "length":
        return LengthReward(name, spec.get("unit", "tokens"), tokenizer)
    if spec["type"] == "hf_classifier":
        return HFClassifierReward(name, spec["path"], spec.get("max_length", 512), spec.get("normalize", True), device)
    raise ValueError(f"rewards.{name}.type: unknown reward type {spec['type']!r}")


def summarize(scores: torch.Tensor) -> dict:
    x = scores.double()
    n = x.numel()
    std = x.std(unbiased=True).item() if n > 1 else 0.0
    return {"n": n, "mean": x.mean().item(), "std": std, "se": std / math.sqrt(n) if n else float("nan"),
            "min": x.min().item(), "max": x.max().item()}
