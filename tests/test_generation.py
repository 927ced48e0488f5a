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
