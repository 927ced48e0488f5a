"""The reward interface: ``score(prompts, responses) -> torch.Tensor`` (one float per response).

Rules (response length), learned reward models (any HF sequence-classification folder or hub id,
decoder or encoder, inputs truncated to ``max_length`` tokens) and shipped scorers (VADER sentiment,
alt-profanity-check's offensive-language SVM) answer the same call, so constraints and evaluation
take any of them. Reward models and scorers are z-scored with the mean/std stored in their folder's
``reward_norm.json`` (the DAG writes it from the human replies of the task val split).
"""
from __future__ import annotations

import functools
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


HH_FORMAT = "\n\nHuman: {prompt}\n\nAssistant: {response}"


def rm_encode(tok, prompt: str, response: str, max_length: int) -> list[int]:
    """Token ids a reward model scores, built one way for training (TRL RewardTrainer gets these ids)
    and scoring. With a chat template: the chat-formatted (prompt, response) pair; without one
    (e.g. GPT-2 HH reward models from the hub): Anthropic's "Human:/Assistant:" transcript.
    Truncation rule: the most recent ``max_length`` tokens are kept (the response end survives,
    the oldest context goes); without a chat template the tokenizer's own special tokens (an
    encoder's [CLS] ... [SEP], a BOS) frame the kept text, so an encoder's head always reads [CLS]."""
    from .models import encode_pair

    if getattr(tok, "chat_template", None):
        return list(encode_pair(tok, prompt, response)[0])[-max_length:]
    text = list(tok(HH_FORMAT.format(prompt=prompt, response=response), add_special_tokens=False)["input_ids"])
    head, tail = _special_frame(tok)
    keep = max(max_length - len(head) - len(tail), 0)
    return head + (text[-keep:] if keep else []) + tail


def reference_norm(raw: torch.Tensor, name: str, reference) -> dict:
    """Mean and std of a reward's raw scores on the reference replies (its z-scoring); a std that is
    not finite and positive would make every later score NaN or leave it in raw units, so it stops here."""
    std = raw.double().std().item() if raw.numel() > 1 else float("nan")
    if not torch.isfinite(raw).all() or not math.isfinite(std) or std <= 0:
        raise FloatingPointError(f"reward {name!r}: cannot z-score on {reference}: {raw.numel()} reference scores, "
                                 f"std {std} (non-finite scores, fewer than two replies, or all equal); use a larger "
                                 f"reference set or set rewards.{name}.normalize: false")
    return {"mean": raw.double().mean().item(), "std": std, "n": raw.numel(), "reference": f"human replies of {reference}"}


def _special_frame(tok) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single text ([CLS] / [SEP], a BOS)."""
    bare = list(tok("a", add_special_tokens=False)["input_ids"])
    full = list(tok("a")["input_ids"])
    for i in range(len(full) - len(bare) + 1):
        if full[i:i + len(bare)] == bare:
            return full[:i], full[i + len(bare):]
    return [], []


def score_batches(lengths: list[int], batch_size: int, bucket: int) -> list[list[int]]:
    """The index batches ``score_ids`` scores: length-sorted batches of ``min(batch_size, bucket)``
    when ``bucket`` > 0, else batches of ``batch_size`` in input order."""
    n = min(batch_size, bucket) if bucket > 0 else batch_size
    order = sorted(range(len(lengths)), key=lengths.__getitem__) if bucket > 0 else list(range(len(lengths)))
    return [order[i:i + n] for i in range(0, len(order), n)]


@torch.no_grad()
def score_ids(model, seqs: list[list[int]], pad_id: int, batch_size: int = 64,
              bucket: int | None = None) -> torch.Tensor:
    """Raw reward-model scores (logit 0 at the last real token) of id sequences, right-padded, in
    input order. ``bucket`` > 0: the sequences are scored in length-sorted batches of at most
    ``min(batch_size, bucket)``, so a batch pads to its own longest sequence (on the default's
    samples, padding a batch of 32 to its longest doubles the tokens scored, and buckets of 4 score a
    training step's 32 samples in 0.56x the time on CPU: results/benchmarks/cpu_rm_score/).
    ``bucket`` None: 4 on CPU, where tokens cost time; ``batch_size`` (whole sorted batches) on an
    accelerator, where a call's fixed cost dominates. ``bucket`` 0: batches of ``batch_size`` in input
    order. The scores agree to float rounding."""
    from .logprobs import pad_right

    device = next(model.parameters()).device
    if bucket is None:
        bucket = 4 if device.type == "cpu" else batch_size
    was = model.training
    model.eval()
    scores = torch.zeros(len(seqs))
    for idx in score_batches([len(q) for q in seqs], batch_size, bucket):
        ids, att, _ = pad_right([seqs[j] for j in idx], pad_id)
        # HF's sequence-classification heads read the last non-pad token (config.pad_token_id must be set)
        scores[idx] = model(input_ids=ids.to(device), attention_mask=att.to(device)).logits[:, 0].float().cpu()
    model.train(was)
    return scores


def read_norm(path: Path) -> tuple[float, float]:
    """The (mean, std) a reward is z-scored with, from its folder's ``reward_norm.json``."""
    stats = json.loads(Path(path).read_text())
    return float(stats["mean"]), float(stats["std"]) or 1.0


class HFClassifierReward(Reward):
    """A sequence-classification reward model (trained here by TRL's RewardTrainer, or a hub id);
    logit 0 is the score, inputs built by ``rm_encode`` and truncated to the model's context."""

    unit = "reward-model units"

    def __init__(self, name: str, path: str, max_length: int = 512, normalize: bool = True,
                 device: str = "cpu", batch_size: int = 64):
        from transformers import AutoModelForSequenceClassification

        from .models import load_tokenizer

        self.name, self.path, self.batch_size, self.device = name, path, batch_size, device
        p = Path(str(path))
        if (str(path).startswith((".", "/", "resources")) or p.exists()) and not (p / "config.json").exists():
            raise FileNotFoundError(f"reward {name!r}: model folder {path} is missing or incomplete (no config.json); "
                                    f"rerun the rule that builds it")
        self.tok = load_tokenizer(path, chat_template=False)
        self.model = AutoModelForSequenceClassification.from_pretrained(str(path)).to(device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tok.pad_token_id
        ctx = getattr(self.model.config, "max_position_embeddings", None) or max_length
        self.max_length = min(max_length, ctx)
        self.mean, self.std = 0.0, 1.0
        norm = p / "reward_norm.json"
        self.normalized = bool(normalize and norm.exists())
        if self.normalized:
            self.mean, self.std = read_norm(norm)
            self.unit = "std units of the reference set"

    def score(self, prompts, responses, response_ids=None):
        seqs = [rm_encode(self.tok, p, r, self.max_length) for p, r in zip(prompts, responses)]
        s = score_ids(self.model, seqs, self.tok.pad_token_id, self.batch_size)
        return (s - self.mean) / self.std


class ScorerReward(Reward):
    """A shipped scorer of the response text (the prompt is not read), optionally z-scored with the
    ``reward_norm.json`` of its folder:
    - ``sentiment``: VADER's compound score (vaderSentiment), in [-1, 1];
    - ``harmless``: 1 - P(offensive) of alt-profanity-check's linear SVM, in [0, 1] (higher is more
      harmless, like every reward here, so "offensiveness <= b" is "harmless >= 1 - b")."""

    def __init__(self, name: str, kind: str, folder: str | None = None, normalize: bool = True):
        self.name, self.kind = name, kind
        self.unit = SCORER_UNITS[kind]
        self.mean, self.std = 0.0, 1.0
        self.normalized = bool(normalize and folder)
        if self.normalized:
            norm = Path(folder) / "reward_norm.json"
            if not norm.exists():
                raise FileNotFoundError(f"reward {name!r}: {norm} is missing; rerun the rule that builds it "
                                        f"(reward_scorer), or set rewards.{name}.normalize: false")
            self.mean, self.std = read_norm(norm)
            self.unit = "std units of the reference set"

    def raw(self, responses: list[str]) -> torch.Tensor:
        return torch.tensor(SCORERS[self.kind](list(responses)), dtype=torch.float64)

    def score(self, prompts, responses, response_ids=None):
        return ((self.raw(responses) - self.mean) / self.std).float()


@functools.lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()  # reads its lexicon once per process


def vader_compound(texts: list[str]) -> list[float]:
    return [_vader().polarity_scores(t)["compound"] for t in texts]


def harmlessness(texts: list[str]) -> list[float]:
    from profanity_check import predict_prob

    return [1.0 - float(p) for p in predict_prob(texts)] if texts else []


SCORERS = {"sentiment": vader_compound, "harmless": harmlessness}
SCORER_UNITS = {"sentiment": "VADER compound", "harmless": "1 - P(offensive)"}
SCORER_SOURCES = {"sentiment": "vaderSentiment (VADER lexicon), compound score of the response",
                  "harmless": "alt-profanity-check (linear SVM on offensive language), 1 - predict_prob(response)"}
# reward types whose folder resources/<run>/models/rm_<name> the DAG builds (a trained model, or a
# scorer's normalisation)
FOLDER_TYPES = ("reward_model", *SCORERS)


def reward_model_dir(cfg: dict, name: str) -> str:
    """Where a reward the DAG builds lives: resources/<run>/models/rm_<name> (a trained reward model, or
    a shipped scorer's normalisation)."""
    return f"resources/{cfg['name']}/models/rm_{name}"


def build_reward(name: str, spec: dict, tokenizer=None, device: str = "cpu", cfg: dict | None = None) -> Reward:
    """A reward from its config entry; ``cfg`` (the whole config) locates the folders the DAG builds."""
    if spec["type"] == "length":
        return LengthReward(name, spec.get("unit", "tokens"), tokenizer)
    if spec["type"] in FOLDER_TYPES and not spec.get("path") and cfg is None:
        raise ValueError(f"reward {name!r}: a {spec['type']} reward needs the run config to find its folder")
    if spec["type"] in SCORERS:
        normalize = spec.get("normalize", True)
        return ScorerReward(name, spec["type"], reward_model_dir(cfg, name) if normalize else None, normalize)
    if spec["type"] in ("hf_classifier", "reward_model"):
        path = spec.get("path") or reward_model_dir(cfg, name)
        return HFClassifierReward(name, path, spec.get("max_length", 512), spec.get("normalize", True), device)
    raise ValueError(f"rewards.{name}.type: unknown reward type {spec['type']!r}")


def summarize(scores: torch.Tensor) -> dict:
    x = scores.double()
    n = x.numel()
    std = x.std(unbiased=True).item() if n > 1 else 0.0
    return {"n": n, "mean": x.mean().item(), "std": std, "se": std / math.sqrt(n) if n else float("nan"),
            "min": x.min().item(), "max": x.max().item()}


def pair_accuracy_of(chosen: torch.Tensor, rejected: torch.Tensor, resamples: int = 10_000, seed: int = 0) -> dict:
    """Share of pairs whose chosen response scores above the rejected one (ties count half), with a
    95% percentile-bootstrap interval over the pairs (``resamples`` draws, fixed seed)."""
    n = len(chosen)
    if n == 0:
        return {"n": 0, "accuracy": float("nan"), "ci95": [float("nan")] * 2, "mean_margin": float("nan")}
    win = (chosen > rejected).double() + 0.5 * (chosen == rejected).double()
    g = torch.Generator().manual_seed(seed)
    boot = win[torch.randint(0, n, (resamples, n), generator=g)].mean(1)
    lo, hi = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"n": n, "accuracy": win.mean().item(), "ci95": [lo, hi], "ties": int((chosen == rejected).sum()),
            "mean_margin": (chosen.double() - rejected.double()).mean().item(), "interval": "percentile bootstrap "
            f"over pairs, {resamples} resamples, seed {seed}"}


def agreement(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """How two signals agree on the same pairs, each given as (chosen scores, rejected scores): the
    share of pairs both order strictly whose order they share, and the Spearman rank correlation of
    their scores over all responses (chosen and rejected)."""
    from scipy.stats import spearmanr

    da, db = (x[0].double() - x[1].double() for x in (a, b))
    both = (da != 0) & (db != 0)
    same = ((da > 0) == (db > 0)) & both
    rho = spearmanr(torch.cat(a).numpy(), torch.cat(b).numpy()).statistic
    n = int(both.sum())  # no pair ordered strictly by both: no agreement to report (None, not 0)
    return {"pairs_both_strict": n, "same_order": same.sum().item() / n if n else None,
            "spearman": float(rho) if rho == rho else None}
