import math

import pytest
import torch

from methods.barrier import barrier_slope, multipliers, relaxed_log_barrier
from methods.core.rewards import HFClassifierReward, LengthReward, summarize


def test_length_reward_counts_tokens_words_chars(micro_tok):
    resp = ["hello there friend", ""]
    tok = LengthReward("len", "tokens", micro_tok).score(["p", "p"], resp)
    assert tok[1] == 0 and tok[0] == len(micro_tok("hello there friend", add_special_tokens=False)["input_ids"])
    assert LengthReward("len", "tokens", micro_tok)(["p"], ["x"], response_ids=[[5, 6, 7]]).tolist() == [3]
    assert LengthReward("len", "words").score(["p", "p"], resp).tolist() == [3, 0]
    assert LengthReward("len", "chars").score(["p", "p"], resp).tolist() == [18, 0]


def test_classifier_reward_truncates_and_normalises(tmp_path, micro_tok):
    import json

    from transformers import LlamaConfig, LlamaForSequenceClassification

    cfg = LlamaConfig(vocab_size=len(micro_tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, num_labels=1,
                      pad_token_id=micro_tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForSequenceClassification(cfg).save_pretrained(tmp_path)
    micro_tok.save_pretrained(tmp_path)
    long = " ".join(["word"] * 2000)  # far beyond the 64-position context
    raw = HFClassifierReward("rm", str(tmp_path), max_length=512, normalize=False)
    assert raw.max_length == 64
    s = raw(["hi", "hi"], [long, "short"])
    assert s.shape == (2,) and torch.isfinite(s).all()
    (tmp_path / "reward_norm.json").write_text(json.dumps({"mean": 1.5, "std": 2.0}))
    norm = HFClassifierReward("rm", str(tmp_path), max_length=512, normalize=True)
    assert torch.allclose(norm(["hi", "hi"], [long, "short"]), (s - 1.5) / 2.0)


def test_nonfinite_reward_names_the_sample():
    class Bad(LengthReward):
        def score(self, p, r, ids=None):
            return torch.tensor([1.0, float("nan")])

    with pytest.raises(FloatingPointError, match="sample 1"):
        Bad("bad", "words")(["a", "b"], ["x", "y"])


def test_summarize():
    s = summarize(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert s["mean"] == 2.5 and abs(s["se"] - s["std"] / 2) < 1e-12


@pytest.mark.parametrize("mu", [1.0, 0.5, 0.1, 0.01])
def test_barrier_continuous_and_once_differentiable_at_minus_s(mu):
    s = mu * mu
    eps = 1e-9
    left, right = relaxed_log_barrier(-s - eps, mu), relaxed_log_barrier(-s + eps, mu)
    assert abs(left - right) < 1e-5 * max(1, abs(left))
    assert abs(relaxed_log_barrier(-s, mu) - (-mu * math.log(s))) < 1e-12
    assert abs(barrier_slope(-s, mu) - mu / s) < 1e-12
    # numerical slope on both sides of the junction equals mu/s
    h = 1e-7 * s
    for z in (-s - 2 * h, -s + 2 * h):
        num = (relaxed_log_barrier(z + h, mu) - relaxed_log_barrier(z - h, mu)) / (2 * h)
        assert abs(num - mu / s) / (mu / s) < 1e-3


def test_barrier_tensor_matches_scalar_and_multipliers():
    z = torch.linspace(-3, 1, 41, dtype=torch.float64)
    for mu in (1.0, 0.1):
        t = relaxed_log_barrier(z, mu)
        assert torch.allclose(t, torch.tensor([relaxed_log_barrier(v.item(), mu) for v in z], dtype=torch.float64))
    lam = multipliers([-0.5, 0.2], mu=0.1)  # k = 2: inactive -> mu/(k*0.5), active -> 1/(k*mu)
    assert torch.allclose(lam, torch.tensor([0.1 / (2 * 0.5), 1 / (2 * 0.1)], dtype=torch.float64))
