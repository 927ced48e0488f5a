"""The registry is the one place a method is declared: a method defined only in this test gets its
experiment models, its DAG jobs with their reward-model inputs, its table rows and its figure style,
with nothing else in the tree naming it."""
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from methods import registry
from methods.core.config import load_config
from methods.registry import Method

from .conftest import REPO

# A second constrained method (the minimax trainer under another name and style) and a "single" one.
EXTRA = textwrap.dedent("""
    import methods.registry as r
    r.METHODS["mm2"] = r.Method("mm2", "methods.minimax", "sft", "test-only constrained method",
                                reads=("onpolicy", "constraints", "rewards", "generation"),
                                needs=r._constraint_rewards, grid="constraints", style=("MM two", "v", "tab:brown"))
    r.METHODS["dpo2"] = r.Method("dpo2", "methods.dpo", "sft", "test-only preference method",
                                 needs=lambda cfg: {"pairs": cfg["dpo"]["pairs"]}, grid="single",
                                 style=("DPO two", "<", "tab:olive"))
""")


@pytest.fixture()
def extra_methods(monkeypatch):
    monkeypatch.setattr(registry, "METHODS", dict(registry.METHODS))  # EXTRA adds to the copy
    exec(EXTRA, {})
    return registry.METHODS


def micro():
    return load_config(REPO / "config" / "micro.yaml")


def test_variants_of_the_micro_config():
    """Names, methods, bands, points and overrides as the experiments define them."""
    v = registry.variants(micro())
    assert list(v) == ["l3m_len0", "l3m_len1", "l3m_pt0", "l3m_pt1", "mm_pt0", "mm_pt1", "mix0", "mix1", "dpo", "cpo"]
    assert v["l3m_len1"].band == [4, 10] and v["l3m_len1"].overrides == {
        "constraints": [{"reward": "length", "band": [4, 10]}]}
    assert v["mm_pt1"].point == 1 and v["mm_pt1"].overrides["constraints"] == [
        {"reward": "rating", "bound": -0.5, "direction": ">="}, {"reward": "coherence", "bound": 0.5, "direction": ">="}]
    assert v["mix1"].weights == [0.0, 1.0] and v["mix1"].overrides == {"mixture": {"weight": [0.0, 1.0]}}
    assert v["dpo"].overrides is None and v["dpo"].experiment == "two_reward"


def test_a_methods_flag_turns_its_models_off():
    cfg = micro()
    cfg["experiments"]["two_reward"]["mm"] = False
    cfg["experiments"]["two_reward"]["cpo"] = False
    assert [n for n in registry.variants(cfg) if n.startswith(("mm", "cpo"))] == []


def test_a_method_defined_in_a_test_gets_its_models(extra_methods):
    v = registry.variants(micro())
    assert [n for n in v if "2" in n.split("_")[0]] == ["mm2_pt0", "mm2_pt1", "dpo2"]
    assert v["mm2_pt0"].overrides == v["mm_pt0"].overrides and v["mm2_pt0"].method == "mm2"
    assert registry.style("mm2") == ("MM two", "v", "tab:brown") and registry.style("base")[0] == "init (base)"


def test_the_dag_trains_a_method_defined_in_a_test_after_its_reward_models(tmp_path):
    """Snakemake's own DAG (--dag) with the test's methods registered: each new model is trained from
    SFT after both reward models it constrains, and feeds Figure 3's table and the cost table."""
    script = EXTRA + textwrap.dedent(f"""
        from snakemake.cli import main
        main(["-s", {str(REPO / "Snakefile")!r}, "--configfile", {str(REPO / "config" / "micro.yaml")!r},
              "--directory", {str(tmp_path)!r}, "--dag"])
    """)
    p = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1"))
    assert p.returncode == 0, p.stderr[-3000:]
    # node labels without the seed (Snakemake shows it on some rules only): one label, a node per seed
    ids: dict[str, set] = {}
    for i, label in re.findall(r'\t(\d+)\[label = "([^"]+)"', p.stdout):
        ids.setdefault(re.sub(r" seed: \d+", "", label.replace("\\n", " ")), set()).add(i)
    nodes = set(ids)
    edges = set(re.findall(r"\t(\d+) -> (\d+)", p.stdout))

    def into(label):
        return {k for k in nodes if any((a, b) in edges for a in ids[k] for b in ids[label])}

    for model in ("mm2_pt0", "mm2_pt1"):
        assert {"reward_model reward: rating", "reward_model reward: coherence", "train method: sft"} <= into(
            f"train_variant variant: {model}")
        assert f"train_variant variant: {model}" in into("two_reward") & into("cost_table")
        assert f"evaluate model: {model}" in nodes and f"training_curves model: {model}" in nodes
    assert "train method: sft" in into("train method: dpo2") and "train method: dpo2" in into("two_reward")
    assert not any("train method: dpo2" in into(f"training_curves model: {m}") for m in ("mm2_pt0", "l3m_pt0"))


def test_tables_and_figures_draw_a_method_defined_in_a_test(extra_methods, tmp_path, monkeypatch):
    """Figure 3 and the Pareto figure take method, point and style from the table and the registry:
    the new constrained method gets its legend entry, its per-point NLL series and its dotted lines."""
    from evaluation import figures

    figs = []
    monkeypatch.setattr(figures, "save", lambda fig, png: figs.append(fig))
    rows = [("base", "base", None), ("sft", "sft", None), ("l3m_pt0", "l3m", 0), ("l3m_pt1", "l3m", 1),
            ("mm2_pt0", "mm2", 0), ("mm2_pt1", "mm2", 1), ("mix0", "mixture", None), ("mix1", "mixture", None),
            ("dpo2", "dpo2", None)]
    rng = np.random.default_rng(0)
    df = pd.DataFrame([{"model": m, "method": k, "point": p, "r1_mean": rng.normal(), "r2_mean": rng.normal(),
                        "nll_mean": 4 + rng.random(), "verdict": "undecided" if p is not None else None,
                        "weights": "1/0" if m == "mix0" else ("0/1" if m == "mix1" else "")} for m, k, p in rows])
    for c in ("r1", "r2", "nll"):  # 95% intervals, as the pooled table has them
        df[f"{c}_lo"], df[f"{c}_hi"] = df[f"{c}_mean"] - 0.1, df[f"{c}_mean"] + 0.1
    figures.figure3_two_reward(df, [[0.0, 0.0], [-0.5, 0.5]], 0, ["r1", "r2"], tmp_path / "f3.png")
    figures.pareto_figure(df, ["r1", "r2"], tmp_path / "pareto.png")
    left, right = figs[0].axes[:2]
    assert {"MM two", "DPO two", "L3M", "mixture RLHF", "SFT", "init (base)"} <= set(
        left.get_legend_handles_labels()[1])
    right_labels = set(right.get_legend_handles_labels()[1])
    assert {"L3M", "MM two"} <= right_labels and "DPO two" not in right_labels
    pareto_labels = set(figs[1].axes[0].get_legend_handles_labels()[1])
    assert {"mixture RLHF Pareto front", "MM two", "DPO two"} <= pareto_labels and "init (base)" not in pareto_labels


def test_an_unknown_grid_is_named(monkeypatch):
    monkeypatch.setitem(registry.METHODS, "odd", Method("odd", "methods.sft", "base", "bad", grid="per-prompt"))
    with pytest.raises(ValueError, match="method odd: unknown grid 'per-prompt'"):
        registry.variants(micro())
