"""The comparison protocol's bookkeeping on hand-made metric files: the tuning rule (met on val, then
the lowest val task NLL) and the paired comparisons table against differences computed here."""
import json

import numpy as np
import pytest

from methods.core.config import validate_config
from methods.registry import tune_rows


def _cfg():
    return validate_config({
        "name": "t", "seeds": [1, 2], "tune": {"seeds": [1, 2], "grid": {"mm": {"mm.dual_lr": [0.1, 1.0, 5.0]}}},
        "experiments": {"length": {"enabled": False},
                        "two_reward": {"enabled": True, "rewards": ["a", "b"], "points": [[0.0, 0.0], [1.0, 1.0]],
                                       "mixture": False, "dpo": False, "cpo": False}},
        "rewards": {"a": {"type": "reward_model", "pairs": "preferences"},
                    "b": {"type": "reward_model", "pairs": "contrast"}},
        "evaluation": {"rewards": ["a", "b"]}}, check_paths=False)


def _write(root, seed, model, nll, a, b):
    d = root / f"seed{seed}" / "metrics" / model
    d.mkdir(parents=True, exist_ok=True)
    (d / "perplexity.json").write_text(json.dumps({"per_example": {f"id{i}": v for i, v in enumerate(nll)}}))
    (d / "lengths.json").write_text(json.dumps({"per_example": [3] * len(nll)}))
    for name, vals in (("a", a), ("b", b)):
        (d / f"reward_{name}.json").write_text(json.dumps({"per_example": list(vals)}))


def test_tuning_chooses_the_lowest_nll_among_the_settings_met_on_val(tmp_path):
    """Per point, three MM settings: at p0 s0 meets with NLL 3.0, s1 meets with NLL 2.5, s2 has the
    lowest NLL (2.0) but fails the point; so s1. At p1 (bounds 1, 1) nothing meets: no choice."""
    from evaluation.tables import tune_tables

    cfg = _cfg()
    rows = tune_rows(cfg)
    assert [(r["variant"], r["setting"]) for r in rows] == [
        ("mm_pt0", "s0"), ("mm_pt1", "s0"), ("mm_pt0", "s1"), ("mm_pt1", "s1"), ("mm_pt0", "s2"), ("mm_pt1", "s2")]
    assert rows[2]["overrides"]["mm"] == {"dual_lr": 1.0} and rows[2]["overrides"]["constraints"][0]["bound"] == 0.0
    rng = np.random.default_rng(0)
    spec = {"s0": (3.0, 0.5), "s1": (2.5, 0.5), "s2": (2.0, -0.5)}  # (NLL, both rewards' mean)
    for r in rows:
        nll, reward = spec[r["setting"]]
        for seed in (1, 2):
            noise = rng.normal(scale=0.05, size=(3, 40))
            _write(tmp_path, seed, f"variant~{r['variant']}_setting~{r['setting']}", nll + noise[0],
                   reward + noise[1], reward + noise[2])
    table, choice = tune_tables(cfg, tmp_path)
    assert len(table) == 6 and set(table["verdict_p0"]) == {"met", "violated"}
    p0 = choice[(choice["point"] == 0)].iloc[0]
    assert (p0["variant"], p0["setting"], p0["met_on_val"], p0["candidates"]) == ("mm_pt0", "s1", 2, 3)
    assert json.loads(p0["values"]) == {"mm.dual_lr": 1.0} and p0["val_nll"] == pytest.approx(2.5, abs=0.02)
    p1 = choice[(choice["point"] == 1)].iloc[0]
    assert p1["met_on_val"] == 0 and p1["setting"] is None or p1["setting"] != p1["setting"]  # None (NaN in pandas)


def test_comparisons_pair_the_same_seeds_and_prompts(tmp_path):
    """L3M against MM and SFT at each point: the table's difference is the mean of the per-(seed,
    prompt) differences written here, and a constant shift gives a zero-width interval."""
    from evaluation.tables import comparisons_table

    cfg = _cfg()
    rng = np.random.default_rng(1)
    base = rng.normal(size=(2, 30))
    for seed in (1, 2):
        for model, shift in (("sft", 0.0), ("l3m_pt0", 0.1), ("l3m_pt1", 0.2), ("mm_pt0", 0.3), ("mm_pt1", 0.3)):
            x = base[seed - 1] + shift
            _write(tmp_path, seed, model, x + 4, x, -x)
    df = comparisons_table(cfg, tmp_path)
    row = df[(df["where"] == "p0") & (df["other"] == "mm_pt0") & (df["metric"] == "nll")].iloc[0]
    assert row["delta"] == pytest.approx(-0.2) and row["lo"] == pytest.approx(-0.2) and row["hi"] == pytest.approx(-0.2)
    row = df[(df["where"] == "p1") & (df["other"] == "sft") & (df["metric"] == "b")].iloc[0]
    assert row["delta"] == pytest.approx(-0.2) and row["excludes_0"]
    assert "L3M − SFT (sft) b at p1: -0.200 [-0.200, -0.200] std units, 2 seeds x 30 prompts" == row["sentence"]
    assert set(df["other"]) == {"mm_pt0", "mm_pt1", "sft"}  # no mixture in this config: no nearest-front row


def test_the_nearest_mixture_model_is_chosen_on_the_val_prompts(tmp_path):
    """Four mixture models. On the test prompts mix0 sits at the point p0 = (0, 0); on the val
    prompts mix3 sits there but is dominated by mix1 (0.1, 0.1), so the val front is mix0, mix1,
    mix2 and the nearest to p0 is mix1 (distance 0.14 against 1.35). The comparison must pair L3M
    with mix1 and report the test-prompt difference; without the val scores it must say so."""
    from evaluation.tables import comparisons_table

    cfg = validate_config({**_cfg(), "mixture": {**_cfg()["mixture"], "weights": [[1, 0], [0.5, 0.5], [0, 1], [0.4, 0.6]]},
                           "experiments": {**_cfg()["experiments"],
                                           "two_reward": {**_cfg()["experiments"]["two_reward"], "mixture": True}}},
                          check_paths=False)
    rng = np.random.default_rng(2)
    test = {"mix0": (-0.05, 0.05), "mix1": (0.9, -0.5), "mix2": (-0.5, 0.9), "mix3": (-0.6, -0.6)}
    val = {"mix0": (-1.0, 0.9), "mix1": (0.1, 0.1), "mix2": (0.9, -1.0), "mix3": (0.0, 0.0)}
    for seed in (1, 2):
        for model, shift in (("sft", 0.0), ("l3m_pt0", 0.1), ("l3m_pt1", 0.2), ("mm_pt0", 0.3), ("mm_pt1", 0.3)):
            x = rng.normal(scale=0.01, size=30)
            _write(tmp_path, seed, model, x + 4, x + shift, x - shift)
        for model in test:
            x = rng.normal(scale=0.01, size=30)
            _write(tmp_path, seed, model, x + 4, x + test[model][0], x + test[model][1])
    with pytest.raises(FileNotFoundError, match="val-prompt scores.*evaluate_val"):
        comparisons_table(cfg, tmp_path)
    for seed in (1, 2):
        for model in val:
            x = rng.normal(scale=0.01, size=30)
            _write(tmp_path / "val", seed, model, x + 4, x + val[model][0], x + val[model][1])
    df = comparisons_table(cfg, tmp_path)
    near = df[df["other_is"].str.contains("nearest")]
    assert set(near["where"]) == {"p0", "p1"} and set(near["chosen_on"]) == {"val"}
    assert near[near["where"] == "p0"]["other"].iloc[0] == "mix1"  # not mix0 (test) nor mix3 (dominated)
    assert near[near["where"] == "p1"]["other"].iloc[0] == "mix1"  # (1, 1): 1.27 against 2.0 for mix0 and mix2
    row = near[(near["where"] == "p0") & (near["metric"] == "a")].iloc[0]
    a = np.array([[json.loads((tmp_path / f"seed{s}/metrics/{m}/reward_a.json").read_text())["per_example"]
                   for s in (1, 2)] for m in ("l3m_pt0", "mix1")])
    assert row["delta"] == pytest.approx((a[0] - a[1]).mean()) and row["delta"] == pytest.approx(0.1 - 0.9, abs=0.01)
