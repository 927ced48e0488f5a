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
