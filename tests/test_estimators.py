"""The on-policy estimators against exact ground truth on a Llama small enough to list every response.

The tiny model has 4 tokens (pad, EOS, a, b) and samples at most 3 new tokens, so its 40 possible
responses (k in 0..2 non-EOS tokens then EOS, or 3 non-EOS tokens unfinished; the pad token is an
ordinary drawable token) can be enumerated. The exact constraint value C = sum_y pi(y) g(y), its
gradient, the KL and every expectation below are computed from a plain full-logits forward in
float64 (not the scoring code under test); the estimators' exact expectations are sums over every
pair of samples of a 2-sample group, weighted by their probabilities, of the trainers' own code.
"""
import itertools
import math

import pytest
import torch

from methods.core.onpolicy import sample_logprob
from methods.core.constraints import pg_baseline, pg_surrogate
from methods.minimax import mm_surrogate

PAD, EOS, A, B = 0, 1, 2, 3
NEW = 3  # max_new_tokens


@pytest.fixture(scope="module")
def enum_tok():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.WordLevel({"<pad>": PAD, "<eos>": EOS, "a": A, "b": B}, unk_token="<pad>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="<eos>")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    return tok


def tiny_llama(seed: int, ctx: int = 12, scale: float = 1.0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    m = LlamaForCausalLM(LlamaConfig(vocab_size=4, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=ctx,
                                     pad_token_id=PAD, eos_token_id=EOS, bos_token_id=None))
    with torch.no_grad():  # a flexible policy: logits of a few nats
        m.lm_head.weight.mul_(scale * 40)
    return m.eval()


def responses():
    out = []
    for k in range(NEW):
        out += [(list(y), True) for y in itertools.product([PAD, A, B], repeat=k)]
    out += [(list(y), False) for y in itertools.product([PAD, A, B], repeat=NEW)]
    return out


PROMPT = [A, B, B, A]


def samples_of(rs, prompt=PROMPT):
    return [{"prompt_ids": list(prompt), "response_ids": y, "finished": f, "n_tokens": len(y)} for y, f in rs]


def exact_logprobs(model, rs, temperature=1.0, prompt=PROMPT):
    """log pi_T(y | prompt) per response by a full-logits forward, one sequence at a time, float64."""
    out = []
    for y, f in rs:
        seq = prompt + y + ([EOS] if f else [])
        logits = model(input_ids=torch.tensor([seq])).logits[0].double() / temperature
        lp = torch.log_softmax(logits, -1)
        out.append(sum(lp[t - 1, seq[t]] for t in range(len(prompt), len(seq))))
    return torch.stack(out)


def grad_of(model, scalar):
    return torch.cat([x.flatten() for x in torch.autograd.grad(scalar, list(model.parameters()), retain_graph=True)])


def expected_estimate(model, rs, g, probs, baseline="loo", mean=False, temperature=1.0, previous=None,
                      surrogate=None):
    """Exact expectation of the trainers' estimate over every (y1, y2) group of two samples of one
    prompt: sum_{y1,y2} p(y1) p(y2) grad surrogate(y1, y2), with the real scoring and baseline code."""
    logp = sample_logprob(model, _Tok, samples_of(rs), 64, "cpu", mean=mean, temperature=temperature)
    total = 0.0
    n = len(rs)
    for i, j in itertools.product(range(n), range(n)):
        idx = torch.tensor([i, j])
        w = probs[i] * probs[j]
        if surrogate is None:
            vals = g[:, idx]
            s = pg_surrogate(logp[idx], vals, pg_baseline(vals, baseline, 2, previous)).sum()
        else:
            s = surrogate(logp[idx], idx)
        total = total + w * s
    return grad_of(model, total)


class _Tok:
    eos_token_id, pad_token_id = EOS, PAD


def length_g(rs, hi=1.5):
    """g = (|y| - hi) / hi: the normalised upper-bound length constraint ('<= hi')."""
    return torch.tensor([[(len(y) - hi) / hi for y, _ in rs]], dtype=torch.float64)


def _cos(a, b):
    return (a @ b / (a.norm() * b.norm())).item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sequence_estimator_with_loo_baseline_is_exactly_grad_c(seed):
    model, rs = tiny_llama(seed), responses()
    g = length_g(rs)
    lp = exact_logprobs(model, rs)
    probs = lp.exp().detach()
    assert abs(probs.sum().item() - 1) < 1e-9  # the 40 responses are every possible outcome
    exact = grad_of(model, (lp.exp() * g[0]).sum())
    est = expected_estimate(model, rs, g, probs).double()
    assert (est - exact).norm() / exact.norm() < 1e-4, ((est - exact).norm() / exact.norm()).item()


def test_length_normalized_estimator_estimates_what_the_docs_say_not_grad_c():
    """Its expectation is grad E[g/|y|] - E[b] grad E[1/|y|] (g, |y| held fixed; E[b] = C for LOO)."""
    model, rs = tiny_llama(0), responses()
    g = length_g(rs)
    lp = exact_logprobs(model, rs)
    p = lp.exp()
    n_tgt = torch.tensor([len(y) + f for y, f in rs], dtype=torch.float64)  # response tokens + EOS
    C = (p * g[0]).sum().detach()
    derived = grad_of(model, (p * g[0] / n_tgt).sum() - C * (p / n_tgt).sum())
    exact = grad_of(model, (p * g[0]).sum())
    est = expected_estimate(model, rs, g, p.detach(), mean=True).double()
    assert (est - derived).norm() / derived.norm() < 1e-4
    assert (est - exact).norm() / exact.norm() > 0.05  # not an estimate of grad C


def test_without_baseline_a_constant_constraint_gives_no_expected_step_only_unnormalised():
    model, rs = tiny_llama(1), responses()
    g = torch.full((1, len(rs)), 0.7, dtype=torch.float64)  # C is constant: grad C = 0
    p = exact_logprobs(model, rs).exp()
    n_tgt = torch.tensor([len(y) + f for y, f in rs], dtype=torch.float64)
    per_sample = grad_of(model, sample_logprob(model, _Tok, samples_of(rs[-1:]), 64, "cpu").sum()).norm()
    seq = expected_estimate(model, rs, g, p.detach(), baseline="none")
    norm = expected_estimate(model, rs, g, p.detach(), baseline="none", mean=True).double()
    assert seq.norm() < 1e-5 * per_sample
    derived = grad_of(model, 0.7 * (p / n_tgt).sum())  # 0.7 * grad E[1/|y|]: a step with nothing to fix
    assert (norm - derived).norm() / derived.norm() < 1e-4 and derived.norm() > 1e3 * seq.norm()


def test_ema_baseline_uses_earlier_steps_only_and_keeps_the_expectation():
    model, rs = tiny_llama(2), responses()
    g = length_g(rs)
    lp = exact_logprobs(model, rs)
    exact = grad_of(model, (lp.exp() * g[0]).sum())
    for previous in (None, torch.tensor([0.4], dtype=torch.float64)):
        est = expected_estimate(model, rs, g, lp.exp().detach(), baseline="ema", previous=previous).double()
        assert (est - exact).norm() / exact.norm() < 1e-4


@pytest.mark.parametrize("temperature", [0.7, 1.5])
def test_samples_drawn_at_temperature_are_scored_at_it(temperature):
    model, rs = tiny_llama(0), responses()
    g = length_g(rs)
    lp_t = exact_logprobs(model, rs, temperature)
    exact = grad_of(model, (lp_t.exp() * g[0]).sum())  # grad C under the sampling distribution pi_T
    probs = lp_t.exp().detach()
    est = expected_estimate(model, rs, g, probs, temperature=temperature).double()
    assert (est - exact).norm() / exact.norm() < 1e-4
    at_one = expected_estimate(model, rs, g, probs, temperature=1.0).double()  # the old scoring
    assert (at_one - exact).norm() / exact.norm() > 0.05


def test_mm_estimate_is_exactly_lambda_grad_c_plus_beta_grad_sequence_kl():
    model, ref, rs = tiny_llama(0), tiny_llama(5), responses()
    g = torch.cat([length_g(rs), -length_g(rs, hi=0.5)])  # two constraints
    lam, beta = torch.tensor([0.8, 0.3]), 0.5
    lp, lp_ref = exact_logprobs(model, rs), exact_logprobs(ref, rs).detach()
    p = lp.exp()
    kl = (p * (lp - lp_ref)).sum()
    exact = grad_of(model, (lam.double().unsqueeze(-1) * p * g).sum() + beta * kl)
    ref_lp = sample_logprob(ref, _Tok, samples_of(rs), 64, "cpu").detach()

    def surr(logp, idx):
        return mm_surrogate(logp, ref_lp[idx], g[:, idx], lam, beta, "loo", 2, None)[0]

    est = expected_estimate(model, rs, g, p.detach(), surrogate=surr).double()
    assert (est - exact).norm() / exact.norm() < 1e-4
    assert kl.item() > 0.01  # the KL term is not vanishing here


# -- what is scored is what was sampled ------------------------------------------------------------


def test_sampled_pad_tokens_are_kept(enum_tok):
    """A uniform model draws the pad token (not EOS) a quarter of the time; every drawn token stays."""
    from methods.core.generation import sample

    model = tiny_llama(0)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # uniform over the 4 tokens
    gen = {"max_new_tokens": NEW, "do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "batch_size": 64}
    out = sample(model, enum_tok, ["a b"] * 256, gen, seed=3, progress=False)
    unfinished = [s for s in out if not s["finished"]]
    assert len(unfinished) > 50
    assert all(s["n_tokens"] == NEW for s in unfinished)
    assert sum(PAD in s["response_ids"] for s in out) > 50
    # the response-length distribution is the exact one of a uniform 4-token model: P(|y| = k) = (3/4)^k / 4, k < 3
    n = len(out)
    for k in range(NEW):
        frac = sum(s["finished"] and s["n_tokens"] == k for s in out) / n
        assert abs(frac - 0.75 ** k / 4) < 4 * math.sqrt(0.25 / n)


def test_scored_ids_are_the_sampled_ids_on_a_short_context(tmp_path, enum_tok, micro_cfg):
    """Context 12, max_new_tokens 3, onpolicy.max_length 8: the sampler keeps the last 9 prompt tokens and
    the trainer scores the response behind exactly those 9 (not the 5 that max_length would leave)."""
    import json

    import methods.core.onpolicy as op
    from methods.core.config import deep_merge, validate_config
    from methods.core.models import encode_pair

    model_dir = tmp_path / "tiny"
    tiny_llama(0).save_pretrained(model_dir)
    enum_tok.save_pretrained(model_dir)
    data = tmp_path / "data"
    data.mkdir()
    prompt = " ".join(["a", "b", "b"] * 5)  # 15 tokens + the template's
    with open(data / "train.jsonl", "w") as f:
        for i in range(4):
            f.write(json.dumps({"id": str(i), "prompt": prompt, "response": "a b"}) + "\n")
    cfg = validate_config(deep_merge(micro_cfg, {"onpolicy": {"max_new_tokens": NEW, "max_length": 8, "batch_size": 4,
                                                              "sample_prompts": 4, "samples_per_prompt": 1,
                                                              "baseline": "none"},
                                                 "experiments": {"length": {"enabled": False}}}))
    run = op.OnPolicyRun(cfg, "l3m", str(model_dir), str(tmp_path / "out"), str(data), steps=1, lr=1e-3, warmup=0,
                         reward_names=["length"], extra_state={})
    _, samples, _ = run.sample_and_score(run.batch(0), 0)
    full = encode_pair(enum_tok, prompt)[0]
    scored = []
    real = op.seq_logprob
    op.seq_logprob = lambda model, seqs, starts, *a, **k: (scored.append((seqs, starts)), real(model, seqs, starts, *a, **k))[1]
    try:
        run.sample_logprob(run.model, samples)
    finally:
        op.seq_logprob = real
    (seqs, starts), = scored
    for s, seq, st in zip(samples, seqs, starts):
        assert s["prompt_ids"] == full[-(12 - NEW):]
        assert seq[:st] == s["prompt_ids"]
        assert seq[st:] == s["response_ids"] + ([EOS] if s["finished"] else [])


def test_one_truncation_rule_for_task_nll_and_perplexity(micro_model, micro_tok):
    """A pair whose response fills the context: both scorers keep the most recent ctx tokens and never
    count position 0 as a target, against a hand computation over full logits."""
    from methods.core.logprobs import response_nll, sequence_logprob
    from methods.core.models import encode_pair, fit_to_context

    row = {"prompt": "hey how are you", "response": " ".join(["really good thanks"] * 12)}
    ids, start = encode_pair(micro_tok, row["prompt"], row["response"])
    ctx = 24
    assert len(ids) - start > ctx  # the response alone overflows
    cut, st = fit_to_context(ids, start, ctx)
    assert cut == ids[-ctx:] and st == 1
    with torch.no_grad():
        lp = torch.log_softmax(micro_model(input_ids=torch.tensor([cut])).logits[0].double(), -1)
        hand = -sum(lp[t - 1, cut[t]].item() for t in range(1, ctx)) / (ctx - 1)
        ppl = response_nll(micro_model, micro_tok, [row], ctx=ctx, progress=False)[0]
        task = -sequence_logprob(micro_model, [cut], [st], micro_tok.pad_token_id, mean=True)[0].item()
    assert abs(ppl - hand) < 1e-4 and abs(task - hand) < 1e-4


# -- the sampler's inverse CDF -----------------------------------------------------------------------


def test_inverse_cdf_sampler_matches_float64_on_a_large_vocabulary(monkeypatch):
    """For uniforms at the midpoint of each token's float64 interval, the token drawn is that token.
    A float32 cumulative sum over 49,152 entries drifts by more than the smallest intervals."""
    from methods.core.generation import pick_tokens

    torch.manual_seed(0)
    V = 49152
    logits = torch.randn(1, V) * 2
    p64 = torch.softmax(logits.double(), -1)[0]
    c64 = p64.cumsum(0)
    lo = torch.cat([torch.zeros(1, dtype=torch.float64), c64[:-1]])
    picks = torch.arange(V - 4000, V, 10)  # late in the vocabulary, where a float32 sum has drifted most
    u = ((lo + c64) / 2)[picks] / c64[-1]
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: u.reshape(shape).to(kw.get("dtype", torch.float32)))
    got = pick_tokens(logits.expand(len(picks), V).contiguous())
    assert torch.equal(got, picks), f"{(got != picks).sum().item()} of {len(picks)} tokens differ"


# -- CPO's loss scale is TRL DPO's ------------------------------------------------------------------------


def test_cpo_without_its_constraint_is_trl_dpo_loss(micro_model, micro_tok, tmp_path):
    import copy

    import datasets
    from trl import DPOConfig, DPOTrainer

    from methods.cpo import cpo_loss, margins, pair_logps
    from methods.dpo import conversational_pairs

    rows = [{"prompt": "hey how are you", "chosen": "good thanks, and you?", "rejected": "no"},
            {"prompt": "what did you do today", "chosen": "i went hiking with my dog", "rejected": "what"},
            {"prompt": "hi", "chosen": "hello there", "rejected": "the weather is bad in march i think"}]
    policy, ref = copy.deepcopy(micro_model), copy.deepcopy(micro_model)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    args = DPOConfig(output_dir=str(tmp_path), beta=0.1, max_length=128, use_cpu=True, report_to=[],
                     per_device_train_batch_size=3)
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, processing_class=micro_tok,
                         train_dataset=datasets.Dataset.from_list(conversational_pairs(rows)))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    policy.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(policy, batch).item()
        m = margins(*pair_logps(policy, micro_tok, rows, 128, "cpu"), *pair_logps(ref, micro_tok, rows, 128, "cpu"))
        ours = cpo_loss(m, m, beta=0.1, tau=1.0, lam=0.0)[0].item()
    assert abs(ours - trl_loss) < 1e-5, (ours, trl_loss)
    assert abs(trl_loss - math.log(2)) > 1e-3  # policy != reference: the margins are not all 0


# -- the mu schedule reaches what the config says -----------------------------------------------------------


def test_every_shipped_config_ends_its_mu_schedule_at_mu_min():
    from pathlib import Path

    from methods.core.config import load_config
    from methods.l3m import mu_at, mu_decay

    for f in sorted((Path(__file__).parents[1] / "config").glob("*.yaml")):
        c = load_config(f)["l3m"]
        d = mu_decay(c)
        last = mu_at(c["steps"] - 1, c["mu0"], c["mu_min"], d, c["mu_every"])
        assert d == 1.0 or last == pytest.approx(c["mu_min"], rel=1e-9), (f.name, d, last)


def test_a_schedule_that_stops_short_of_mu_min_is_a_config_error(micro_cfg):
    from methods.core.config import ConfigError, deep_merge, validate_config

    with pytest.raises(ConfigError, match=r"config.l3m.mu_decay: 0.75 every 10 steps ends at mu = 0.01336 after "
                                          r"160 steps, not mu_min 0.01; use mu_decay <= 0.735642"):
        validate_config(deep_merge(micro_cfg, {"l3m": {"steps": 160, "mu_decay": 0.75, "mu_every": 10}}))
    cfg = validate_config(deep_merge(micro_cfg, {"l3m": {"steps": 160, "mu_decay": 0.735642, "mu_every": 10}}))
    assert cfg["l3m"]["mu_decay"] == 0.735642


def test_the_barrier_weight_scales_only_the_barrier_gradient(tmp_path, micro_cfg, micro_model_dir):
    """One real L3M step from the same model and seed (so the same samples), barrier_weight auto
    against 1: the barrier gradient before clipping is divided by exactly max_new_tokens + 1 = 13, the
    task gradient is the same bit for bit. With the enumeration tests above (the sequence estimate's
    expectation is grad C), the weighted step's barrier part has expectation grad C / 13."""
    import json

    from methods import l3m
    from methods.core.config import deep_merge, validate_config
    from methods.core.data import build_task_splits

    data = tmp_path / "data"
    build_task_splits(dict(micro_cfg["data"], n_train=40), data)
    logs = {}
    for w in ("auto", 1):
        cfg = validate_config(deep_merge(micro_cfg, {
            "constraints": [{"reward": "length", "band": [0, 3]}],
            "l3m": {"steps": 1, "mu_decay": 1.0, "logging_steps": 1, "barrier_max_norm": 1e6, "barrier_weight": w},
            "onpolicy": {"batch_size": 4, "sample_prompts": 4, "samples_per_prompt": 2, "max_new_tokens": 12},
            "experiments": {"length": {"enabled": False}}}))
        l3m.train(cfg, str(micro_model_dir), str(tmp_path / f"w{w}"), str(data))
        logs[w] = json.loads(open(tmp_path / f"w{w}" / "train_log.jsonl").readline())
    assert logs[1]["grad_norm_barrier"] > 1e-3
    assert logs[1]["grad_norm_barrier"] / logs["auto"]["grad_norm_barrier"] == pytest.approx(13.0, rel=1e-6)
    assert logs[1]["grad_norm_task"] == logs["auto"]["grad_norm_task"]
    assert (logs["auto"]["barrier_weight"], logs[1]["barrier_weight"]) == (1 / 13, 1.0)
    assert logs[1]["lambda[length<=3]"] == logs["auto"]["lambda[length<=3]"]  # the barrier's, before w
