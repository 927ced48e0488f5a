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


def test_the_tuned_choice_is_reported_on_the_test_prompts(tmp_path):
    """The choice (made on val) read back on test: at p0 L3M chose s1 and MM s0, so the test table has
    both and the paired comparison is the mean of the per-(seed, prompt) differences of those two
    models written here (a fixed shift of -0.3 in NLL is recovered with a zero-width interval); at p1
    MM found no setting on val, so only L3M's row and no comparison. The test verdict follows the
    test values: L3M at p0 (means 0.5, 0.5 against bounds 0, 0) is met, at p1 (bounds 1, 1) violated."""
    import pandas as pd

    from evaluation.tables import tune_test_tables

    cfg = validate_config({**_cfg(), "tune": {"seeds": [1, 2], "grid": {"mm": {"mm.dual_lr": [0.1, 1.0]},
                                                                         "l3m": {"l3m.barrier_max_norm": [2, 4]}}}},
                          check_paths=False)
    choice = pd.DataFrame([
        {"point": 0, "method": "l3m", "variant": "l3m_pt0", "setting": "s1", "values": '{"l3m.barrier_max_norm": 4}'},
        {"point": 0, "method": "mm", "variant": "mm_pt0", "setting": "s0", "values": '{"mm.dual_lr": 0.1}'},
        {"point": 1, "method": "l3m", "variant": "l3m_pt1", "setting": "s0", "values": '{"l3m.barrier_max_norm": 2}'},
        {"point": 1, "method": "mm", "variant": None, "setting": None, "values": None}])
    rng = np.random.default_rng(3)
    for seed in (1, 2):
        x = rng.normal(scale=0.05, size=40)
        for key, nll in (("variant~l3m_pt0_setting~s1", 3.7), ("variant~mm_pt0_setting~s0", 4.0),
                         ("variant~l3m_pt1_setting~s0", 3.9)):
            _write(tmp_path, seed, key, nll + x, 0.5 + x, 0.5 - x)
    table, comps = tune_test_tables(cfg, tmp_path, choice)
    assert [(r.point, r.method, r.setting) for r in table.itertuples()] == [(0, "l3m", "s1"), (0, "mm", "s0"),
                                                                            (1, "l3m", "s0")]
    assert list(table["verdict"]) == ["met", "met", "violated"] and list(table["seeds_met"]) == [1.0, 1.0, 0.0]
    assert set(comps["point"]) == {0} and set(comps["metric"]) == {"nll", "a", "b"}
    nll = comps[comps["metric"] == "nll"].iloc[0]
    assert nll["delta"] == pytest.approx(-0.3) and nll["lo"] == pytest.approx(-0.3) and nll["hi"] == pytest.approx(-0.3)
    assert nll["sentence"].startswith("tuned L3M − tuned ") and "-0.300 [-0.300, -0.300] nats/token, 2 seeds x 40" \
        in nll["sentence"]
    assert comps[comps["metric"] == "a"]["delta"].iloc[0] == pytest.approx(0.0, abs=1e-12)
    from evaluation.figures import tuning_figure

    sweep = pd.DataFrame([{"method": m, "point": p, "setting": st, **{f"{k}_{q}": v + d for k, v in (("r1", 0.4), ("r2", 0.3))
                                                                      for q, d in (("mean", 0), ("lo", -0.1), ("hi", 0.1))}}
                          for m in ("l3m", "mm") for p in (0, 1) for st in ("s0", "s1")])
    outs = tuning_figure(sweep, table, cfg["experiments"]["two_reward"]["points"], ["a", "b"], tmp_path / "tuning.png")
    assert [o.suffix for o in outs] == [".png", ".pdf"] and all(o.stat().st_size > 5000 for o in outs)


def test_tuned_settings_reach_only_their_points_model():
    """experiments.two_reward.tuned: one entry per point; the entry's keys become that point's model's
    overrides (and so its training fingerprint), the other points keep the method's own settings, and
    the sweep still varies its grid keys over them. Bad entries are named before any job."""
    from methods.core.config import ConfigError
    from methods.registry import variants

    raw = _cfg()
    two = {**raw["experiments"]["two_reward"], "tuned": {"mm": [None, {"mm.dual_lr": 2.0, "mm.beta": 0.01}]}}
    cfg = validate_config({**raw, "experiments": {**raw["experiments"], "two_reward": two}}, check_paths=False)
    vs = variants(cfg)
    assert "mm" not in vs["mm_pt0"].overrides and vs["mm_pt1"].overrides["mm"] == {"dual_lr": 2.0, "beta": 0.01}
    assert vs["mm_pt1"].overrides["constraints"][0]["bound"] == 1.0
    rows = {(r["variant"], r["setting"]): r for r in tune_rows(cfg)}
    assert rows[("mm_pt1", "s0")]["overrides"]["mm"] == {"dual_lr": 0.1, "beta": 0.01}  # the grid's key wins
    for tuned, field in (({"mm": [None]}, "tuned.mm: 1 entries for 2"),
                         ({"mm": [None, {"mm.dual_rate": 1.0}]}, "tuned.mm[1].mm.dual_rate: no such config key"),
                         ({"mixture": [None, None]}, "tuned.mixture: not a method with one model per")):
        with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
            validate_config({**raw, "experiments": {**raw["experiments"], "two_reward": {**two, "tuned": tuned}}},
                            check_paths=False)
