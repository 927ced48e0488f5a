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
    lowest NLL (2.0) but fails the point; so s1. At p1 (bounds 1, 1) nothing meets: the one closest to
    meeting it, s0 (rewards 0.7 against s1's 0.5 and s2's -0.5), marked as not met."""
    from evaluation.tables import tune_tables

    cfg = _cfg()
    rows = tune_rows(cfg)
    assert [(r["variant"], r["setting"]) for r in rows] == [
        ("mm_pt0", "s0"), ("mm_pt1", "s0"), ("mm_pt0", "s1"), ("mm_pt1", "s1"), ("mm_pt0", "s2"), ("mm_pt1", "s2")]
    assert rows[2]["overrides"]["mm"] == {"dual_lr": 1.0} and rows[2]["overrides"]["constraints"][0]["bound"] == 0.0
    rng = np.random.default_rng(0)
    spec = {"s0": (3.0, 0.7), "s1": (2.5, 0.5), "s2": (2.0, -0.5)}  # (NLL, both rewards' mean)
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
    assert (p1["setting"], p1["met_on_val"], p1["val_verdict"]) == ("s0", 0, "violated")
    assert p1["rule"].startswith("none met on val") and p0["rule"].startswith("met on val")
    # the slack is the worst one-sided 95% lower bound minus its bound: below -0.3 (the mean's gap), above -0.35
    assert -0.35 < p1["val_slack"] < -0.3 and p1["val_slack"] == pytest.approx(
        table.loc[(table["variant"] == "mm_pt1") & (table["setting"] == "s0"), "slack_p1"].iloc[0])


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


def test_a_point_free_model_is_compared_at_every_point(tmp_path):
    """CPO has one model (no point): L3M at p0 and at p1 is each paired with it, on the same seeds and
    prompts, and the known shifts (L3M +0.1 and +0.2 above CPO's -0.4 in reward a) come back."""
    from evaluation.tables import comparisons_table

    cfg = validate_config({**_cfg(), "experiments": {**_cfg()["experiments"], "two_reward": {
        **_cfg()["experiments"]["two_reward"], "cpo": True}}}, check_paths=False)
    rng = np.random.default_rng(3)
    for seed in (1, 2):
        x = rng.normal(size=30)
        for model, shift in (("sft", 0.0), ("l3m_pt0", 0.1), ("l3m_pt1", 0.2), ("mm_pt0", 0.3), ("mm_pt1", 0.3),
                             ("cpo", -0.4)):
            _write(tmp_path, seed, model, x + 4, x + shift, -x)
    df = comparisons_table(cfg, tmp_path)
    cpo = df[df["other"] == "cpo"]
    assert set(cpo["where"]) == {"p0", "p1"} and set(cpo["other_is"]) == {"CPO"}
    got = {w: cpo[(cpo["where"] == w) & (cpo["metric"] == "a")]["delta"].iloc[0] for w in ("p0", "p1")}
    assert got["p0"] == pytest.approx(0.5) and got["p1"] == pytest.approx(0.6)
    assert "L3M − CPO (cpo) a at p1: +0.600" in cpo[(cpo["where"] == "p1") & (cpo["metric"] == "a")]["sentence"].iloc[0]


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

    sweep = pd.DataFrame([{"method": m, "variant": f"{m}_pt{p}", "point": p, "setting": st,
                           **{f"{k}_{q}": v + d for k, v in (("r1", 0.4), ("r2", 0.3))
                              for q, d in (("mean", 0), ("lo", -0.1), ("hi", 0.1))}}
                          for m in ("l3m", "mm") for p in (0, 1) for st in ("s0", "s1")])
    outs = tuning_figure(sweep, table, cfg["experiments"]["two_reward"]["points"], ["a", "b"], tmp_path / "tuning.png")
    assert [o.suffix for o in outs] == [".png", ".pdf"] and all(o.stat().st_size > 5000 for o in outs)
    # a method without points (the mixture's weight vectors) is drawn in every panel, its choice in its point's
    import evaluation.figures as figures

    mix = pd.DataFrame([{"method": "mixture", "variant": f"mix{j}", "point": None, "setting": "s0",
                         **{f"r{k}_{q}": 0.1 * j + d for k in (1, 2) for q, d in (("mean", 0), ("lo", -0.1), ("hi", 0.1))}}
                        for j in (0, 1)])
    chose = table.iloc[[0]].assign(method="mixture", variant="mix1", setting="s0", verdict="undecided")
    drawn = {}
    monkey = pytest.MonkeyPatch()
    monkey.setattr(figures, "save", lambda fig, png: drawn.setdefault("labels", [
        [t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes]))
    try:
        figures.tuning_figure(pd.concat([sweep, mix], ignore_index=True), pd.concat([table, chose], ignore_index=True),
                              cfg["experiments"]["two_reward"]["points"], ["a", "b"], tmp_path / "t2.png")
    finally:
        monkey.undo()
    p0, p1 = drawn["labels"]
    assert "mixture RLHF: settings on val" in p0 and "mixture RLHF: settings on val" in p1
    assert any(x.startswith("mixture RLHF mix1 s0 on test: undecided") for x in p0)
    assert not any("on test" in x and "mixture" in x for x in p1)


def test_tuned_settings_reach_only_their_points_model():
    """experiments.two_reward.tuned: entries keyed by method, reward pair and point; an entry's keys
    become the model of the point equal to its point (and so its training fingerprint), the other
    points keep the method's own settings, and the sweep still varies its grid keys over them. The
    same point reordered among others keeps its entry; an experiment on another reward pair (an
    overlay's, with the shipped entries still there) inherits nothing. Bad entries are named before
    any job: among them a point of this pair that is none of the experiment's (a typo would otherwise
    train the untuned model silently) and the pair in another order."""
    from methods.core.config import ConfigError
    from methods.registry import variants

    raw = _cfg()
    raw["rewards"]["c"] = raw["rewards"]["a"]
    entry = {"method": "mm", "rewards": ["a", "b"], "point": [1.0, 1.0], "set": {"mm.dual_lr": 2.0, "mm.beta": 0.01}}
    two = {**raw["experiments"]["two_reward"], "tuned": [entry]}
    cfg = validate_config({**raw, "experiments": {**raw["experiments"], "two_reward": two}}, check_paths=False)
    vs = variants(cfg)
    assert "mm" not in vs["mm_pt0"].overrides and vs["mm_pt1"].overrides["mm"] == {"dual_lr": 2.0, "beta": 0.01}
    assert vs["mm_pt1"].overrides["constraints"][0]["bound"] == 1.0
    rows = {(r["variant"], r["setting"]): r for r in tune_rows(cfg)}
    assert rows[("mm_pt1", "s0")]["overrides"]["mm"] == {"dual_lr": 0.1, "beta": 0.01}  # the grid's key wins
    for other, tuned_at in (({"points": [[0.5, 0.5], [1.0, 1.0], [0.0, 0.0]]}, (1.0, 1.0)),
                            ({"rewards": ["a", "c"]}, None)):
        cfg = validate_config({**raw, "experiments": {**raw["experiments"], "two_reward": {**two, **other}}},
                              check_paths=False)
        by_point = {tuple(p): variants(cfg)[f"mm_pt{i}"].overrides.get("mm")
                    for i, p in enumerate(cfg["experiments"]["two_reward"]["points"])}
        assert by_point == {p: ({"dual_lr": 2.0, "beta": 0.01} if p == tuned_at else None) for p in by_point}, other
    bad = [([{**entry, "point": [1.0, 1.0 + 1e-6]}], "tuned[0].point: [1.0, 1.000001] is none of experiments.two_reward.points"),
           ([{**entry, "rewards": ["b", "a"]}], "tuned[0].rewards: ['b', 'a'] is the experiment's pair in another order"),
           ([{**entry, "rewards": ["a", "z"]}], "tuned[0].rewards: ['z'] not defined in config.rewards"),
           ([entry, {**entry, "set": {}}], "tuned[1]: mm at [1.0, 1.0] has an entry already"),
           ([{**entry, "point": [1.0]}], "tuned[0].point: 1 bounds for 2 rewards"),
           ([{**entry, "set": {"mm.dual_rate": 1.0}}], "tuned[0].set.mm.dual_rate: no such config key"),
           ([{k: v for k, v in entry.items() if k != "point"}], "'point' is a required property"),
           ([{**entry, "method": "mixture"}], "tuned[0].method: mixture is not a method with one model per")]
    for tuned, field in bad:
        with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
            validate_config({**raw, "experiments": {**raw["experiments"], "two_reward": {**two, "tuned": tuned}}},
                            check_paths=False)


def test_tune_methods_sweeps_only_the_methods_it_names():
    """tune.methods keeps the grids of the methods it names: with grids for MM (3 settings) and CPO (2),
    [cpo] gives CPO's 2 runs (one model: no point) and no MM run, null every method's; a name without a
    grid is an error naming the field before any job."""
    from methods.core.config import ConfigError

    raw = _cfg()
    two = {**raw["experiments"]["two_reward"], "cpo": True}
    tune = {"seeds": [1], "grid": {"mm": {"mm.dual_lr": [0.1, 1.0, 5.0]}, "cpo": {"cpo.tau": [0.5, 2.0]}}}
    def rows(methods):
        cfg = validate_config({**raw, "experiments": {**raw["experiments"], "two_reward": two},
                               "tune": {**tune, "methods": methods}}, check_paths=False)
        return [(r["variant"], r["setting"], r["point"], r["values"]) for r in tune_rows(cfg)]
    assert rows(["cpo"]) == [("cpo", "s0", None, {"cpo.tau": 0.5}), ("cpo", "s1", None, {"cpo.tau": 2.0})]
    assert len(rows(None)) == 3 * 2 + 2
    with pytest.raises(ConfigError, match=r"config.tune.methods: 'dpo' has no grid in config.tune.grid"):
        rows(["cpo", "dpo"])
    two["cpo"] = False  # a named method without a model in the experiment would sweep nothing
    with pytest.raises(ConfigError, match=r"config.tune.methods: 'cpo' has no model in the two-reward experiment "
                                          r"\(experiments.two_reward.cpo: false\)"):
        rows(["cpo"])


def test_per_model_settings_are_checked_before_any_job_like_the_job_would_see_them():
    """A tuned entry or a sweep setting: its values pass the schema of their section, and under a
    budget mode they may not change what the model's chain trains on (the job re-derives its steps from
    its own settings); budgeted steps are never set. Under budget.mode none the same keys are fine.
    The numbers, by hand from config/config.yaml (equal compute, L3M 160 steps of 32 task pairs + 8 x 4
    samples; SFT 5,120 sequences): L3M 10,240 sequences, MM 80 x 64 = 5,120. MM with 64 sampled prompts
    a step (32 + 256 a step): L3M's run would be 160 x 288 = 46,080, so MM ceil(40,960 / 288) = 143 steps,
    41,184 sequences. L3M at 320 steps: 20,480. MM with 8 samples per prompt (32 + 64 a step):
    ceil((15,360 - 5,120) / 96) = 107 steps, 10,272 sequences."""
    from methods.core.config import ConfigError, read_config_file

    from .conftest import REPO

    raw = read_config_file(REPO / "config" / "config.yaml")
    two = raw["experiments"]["two_reward"]
    p0, p3 = two["points"][0], two["points"][3]

    def tuned(method, point, values):
        return [{"method": method, "rewards": two["rewards"], "point": point, "set": values}]

    bad = [(tuned("mm", p0, {"mm.dual_lr": "abc"}), r"tuned\[0\].set: config.mm.dual_lr: 'abc' has the wrong type"),
           (tuned("mm", p3, {"mm.dual_lr": -5}), r"tuned\[0\].set: config.mm.dual_lr: -5 is less than"),
           (tuned("mm", p0, {"onpolicy.sample_prompts": 64}), r"tuned\[0\].set: .* mm train on 41184 sequences instead of 5120"),
           (tuned("l3m", p0, {"l3m.steps": 320}), r"tuned\[0\].set: .* l3m train on 20480 sequences instead of 10240"),
           (tuned("mm", p0, {"mm.steps": 100}), r"tuned\[0\].set.mm.steps: budgeted steps follow from budget.mode")]
    for t, match in bad:
        with pytest.raises(ConfigError, match=match):
            validate_config({**raw, "experiments": {**raw["experiments"], "two_reward": {**two, "tuned": t}}},
                            check_paths=False)
    with pytest.raises(ConfigError, match=r"config.tune.grid.mm: .* mm train on 10272 sequences instead of 5120"):
        validate_config({**raw, "tune": {"grid": {"mm": {"mm.dual_lr": [0.5], "onpolicy.samples_per_prompt": [8]}}}},
                        check_paths=False)
    ok = tuned("mm", p0, {"mm.dual_lr": 2.0, "mm.beta": 0.01}) + tuned("l3m", p3, {"l3m.barrier_max_norm": 8})
    validate_config({**raw, "experiments": {**raw["experiments"], "two_reward": {**two, "tuned": ok}}},
                    check_paths=False)
    validate_config({**raw, "budget": {"mode": "none"}, "experiments": {**raw["experiments"], "two_reward": {
        **two, "tuned": tuned("mm", p0, {"onpolicy.sample_prompts": 64})}}}, check_paths=False)


def test_nll_grids_pair_by_example_id_whatever_order_the_files_list_them(tmp_path):
    """Two models with the same per-example NLL written in opposite id orders: the paired difference
    is exactly 0 (laid out in the files' order it would pair id0 with id39)."""
    from evaluation import stats
    from evaluation.tables import Grids

    rng = np.random.default_rng(5)
    vals = rng.normal(4.0, 1.0, size=40)
    for seed in (1, 2):
        for model, order in (("x", range(40)), ("y", reversed(range(40)))):
            d = tmp_path / f"seed{seed}" / "metrics" / model
            d.mkdir(parents=True)
            (d / "perplexity.json").write_text(json.dumps({"per_example": {f"id{i}": vals[i] for i in order}}))
    grids = Grids(tmp_path, [1, 2])
    assert stats.paired(grids("x", "nll"), grids("y", "nll")) == (0.0, 0.0, 0.0)
