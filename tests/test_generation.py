from methods.core.generation import sample

GEN = dict(max_new_tokens=10, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, batch_size=3)
PROMPTS = ["hi", "how was your weekend?", "tell me about your dog\nhe is a labrador", "ok", "lol"]


def test_sampling_is_seeded_and_bounded(micro_model, micro_tok):
    a = sample(micro_model, micro_tok, PROMPTS, GEN, seed=3, progress=False)
    b = sample(micro_model, micro_tok, PROMPTS, GEN, seed=3, progress=False)
    c = sample(micro_model, micro_tok, PROMPTS, GEN, seed=4, progress=False)
    assert [x["response_ids"] for x in a] == [x["response_ids"] for x in b]
    assert [x["response_ids"] for x in a] != [x["response_ids"] for x in c]
    for x in a:
        assert 0 <= x["n_tokens"] <= 10 and x["n_tokens"] == len(x["response_ids"])
        assert micro_tok.eos_token_id not in x["response_ids"]


def test_batching_does_not_change_greedy_output(micro_model, micro_tok):
    greedy = dict(GEN, do_sample=False)
    one = sample(micro_model, micro_tok, PROMPTS, dict(greedy, batch_size=1), seed=0, progress=False)
    many = sample(micro_model, micro_tok, PROMPTS, dict(greedy, batch_size=5), seed=0, progress=False)
    assert [x["response_ids"] for x in one] == [x["response_ids"] for x in many]  # left padding is masked


def test_long_prompts_are_left_truncated(micro_model, micro_tok):
    long = " ".join(["blah"] * 500)
    out = sample(micro_model, micro_tok, [long, "hi"], GEN, seed=0, progress=False)
    assert out[0]["prompt_truncated"] and not out[1]["prompt_truncated"]


def _prompt_batch(tok, prompts):
    import torch

    from methods.core.models import encode_pair

    enc = [encode_pair(tok, p)[0] for p in prompts]
    T = max(map(len, enc))
    ids = torch.full((len(enc), T), tok.pad_token_id)
    att = torch.zeros((len(enc), T), dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, T - len(e):], att[i, T - len(e):] = torch.tensor(e), 1
    return ids, att


def test_greedy_decode_equals_transformers_generate_with_both_caches(micro_model, micro_tok):
    from methods.core.generation import decode

    ids, att = _prompt_batch(micro_tok, PROMPTS)
    ref = micro_model.generate(input_ids=ids, attention_mask=att, max_new_tokens=12, do_sample=False,
                               pad_token_id=micro_tok.pad_token_id, eos_token_id=micro_tok.eos_token_id)[:, ids.shape[1]:]
    for cache in ("dynamic", "static"):
        ours = decode(micro_model, ids, att, 12, eos_id=micro_tok.eos_token_id, pad_id=micro_tok.pad_token_id,
                      do_sample=False, cache=cache)
        assert ours[:, :ref.shape[1]].tolist() == ref.tolist(), cache
        assert (ours[:, ref.shape[1]:] == micro_tok.pad_token_id).all()  # generate stops once every row ended


def test_token_sampler_draws_from_softmax_with_top_k_and_top_p():
    import torch

    from methods.core.generation import pick_tokens

    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]]).repeat(20000, 1)
    p = torch.softmax(logits[0], -1)
    freq = torch.bincount(pick_tokens(logits), minlength=5).float() / 20000
    assert (freq - p).abs().max() < 0.015 and freq[4] == 0  # 3 s.e. of a 0.6-probability frequency is 0.011
    freq_t = torch.bincount(pick_tokens(logits, temperature=0.5), minlength=5).float() / 20000
    assert (freq_t - torch.softmax(logits[0] / 0.5, -1)).abs().max() < 0.015
    k2 = torch.bincount(pick_tokens(logits, top_k=2), minlength=5).float() / 20000
    assert k2[2:].sum() == 0 and abs(k2[0] - p[0] / p[:2].sum()) < 0.015
    # top_p 0.7: the nucleus is the smallest prefix with mass >= 0.7, here tokens 0 and 1 (0.64 + 0.24)
    n = torch.bincount(pick_tokens(logits, top_p=0.7), minlength=5).float() / 20000
    assert n[2:].sum() == 0 and abs(n[0] - p[0] / p[:2].sum()) < 0.015
    assert pick_tokens(logits[:3], do_sample=False).tolist() == [0, 0, 0]


def _sharp(micro_model):
    """The micro model with its final norm scaled: peaked next-token distributions (a near-uniform one
    would let a wrong sampler pass a chi-squared test)."""
    import copy

    import torch

    m = copy.deepcopy(micro_model)
    with torch.no_grad():
        m.model.norm.weight.mul_(6.0)
    return m


def _gof(draws, probs, min_expected=5.0):
    """Chi-squared goodness of fit of token draws to exact probabilities (categories with fewer than
    ``min_expected`` expected draws pooled into one)."""
    import numpy as np
    from scipy.stats import chisquare

    n = len(draws)
    counts = np.bincount(draws, minlength=len(probs)).astype(float)
    big = probs * n >= min_expected
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(probs[big] * n, probs[~big].sum() * n)
    keep = exp > 0
    return chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue


def test_hf_backend_draws_from_the_same_distribution_as_the_loop(micro_model, micro_tok):
    """generation.backend hf (transformers' generate) against the project's loop and against the exact
    softmax: the first token of 4,000 draws each fits softmax(logits) in float64 (goodness of fit), the
    (first, second) token pairs of the two backends are homogeneous (contingency chi-squared), with
    both caches; a negative control at temperature 0.7 is rejected, so the test can fail."""
    import numpy as np
    import torch
    from scipy.stats import chi2_contingency

    from methods.core.models import encode_pair

    m = _sharp(micro_model)
    prompt = "how was your weekend?"
    ids = torch.tensor([encode_pair(micro_tok, prompt)[0]])
    with torch.no_grad():
        exact = torch.softmax(m(input_ids=ids).logits[0, -1].double(), -1).numpy()
    assert exact.max() > 0.05 and (exact > 1e-3).sum() > 10  # peaked, yet many tokens in play

    def draws(backend, cache, seed, temperature=1.0):
        gen = dict(max_new_tokens=2, do_sample=True, temperature=temperature, top_p=1.0, top_k=0, batch_size=1000,
                   cache=cache, backend=backend)
        out = sample(m, micro_tok, [prompt] * 4000, gen, seed=seed, progress=False)
        eos = micro_tok.eos_token_id
        return [tuple((x["response_ids"] + [eos, eos])[:2]) for x in out]

    for cache in ("dynamic", "static"):
        loop, hf = draws("loop", cache, 11), draws("hf", cache, 12)
        for name, d in (("loop", loop), ("hf", hf)):
            assert _gof(np.array([t[0] for t in d]), exact) > 1e-3, (cache, name)
        pairs = sorted(set(loop) | set(hf))
        table = np.array([[d.count(p) for p in pairs] for d in (loop, hf)], dtype=float)
        common = table.sum(0) >= 10
        table = np.column_stack([table[:, common], table[:, ~common].sum(1)])
        assert chi2_contingency(table).pvalue > 1e-3, cache
    cold = draws("hf", "dynamic", 13, temperature=0.7)
    assert _gof(np.array([t[0] for t in cold]), exact) < 1e-6  # the test tells distributions apart


def test_hf_backend_greedy_equals_the_loop(micro_model, micro_tok):
    greedy = dict(GEN, do_sample=False, temperature=0)
    for cache in ("dynamic", "static"):
        a = sample(micro_model, micro_tok, PROMPTS, dict(greedy, cache=cache), seed=0, progress=False)
        b = sample(micro_model, micro_tok, PROMPTS, dict(greedy, cache=cache, backend="hf"), seed=0, progress=False)
        assert [x["response_ids"] for x in a] == [x["response_ids"] for x in b], cache
        assert [x["finished"] for x in a] == [x["finished"] for x in b], cache
