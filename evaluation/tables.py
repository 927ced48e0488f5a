"""The tables, built from the per-(model, metric) JSONs: the aggregate (one row per model, one column
per metric), Figure 2's length table, the ablation table, Figure 3's two-reward table and the cost
table. Which models a table holds, and their band, point or weights, come from the registry."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.lengths import length_stats
from methods.core.io import read_json, read_jsonl
from methods.registry import METHODS, variants


def aggregate(metrics_dir: str | Path, models: list[str], rewards: list[str]) -> pd.DataFrame:
    rows = []
    for m in models:
        d = Path(metrics_dir) / m
        ppl = read_json(d / "perplexity.json")["summary"]
        ln = read_json(d / "lengths.json")["summary"]
        row = {"model": m, "nll_mean": ppl["nll_mean"], "nll_std": ppl["nll_std"], "perplexity": ppl["perplexity"],
               "len_mean": ln["mean"], "len_std": ln["std"], "len_median": ln["median"],
               "frac_finished": ln["frac_finished"]}
        for r in rewards:
            s = read_json(d / f"reward_{r}.json")["summary"]
            row[f"{r}_mean"], row[f"{r}_se"] = s["mean"], s["se"]
        if (d / "lm_eval.json").exists():  # lm-eval: every numeric metric of every task, as lm_eval:<task>:<metric>
            for task, res in read_json(d / "lm_eval.json")["results"].items():
                for k, v in res.items():
                    if isinstance(v, (int, float)) and "stderr" not in k and k != "sample_len":
                        row[f"lm_eval:{task}:{k.split(',')[0]}"] = v
        rows.append(row)
    return pd.DataFrame(rows)


def length_row(samples: list[dict], ppl: dict, band) -> dict:
    """Length statistics (share inside ``band``) and task NLL of one model's test samples."""
    st = length_stats(samples, band)
    return {"band_lo": band[0] if band else None, "band_hi": band[1] if band else None, "len_mean": st["mean"],
            "len_std": st["std"], "len_median": st["median"], "frac_in_band": st.get("frac_in_band"),
            "mean_in_band": bool(band and band[0] <= st["mean"] <= band[1]), "nll_mean": ppl["nll_mean"],
            "nll_std": ppl["nll_std"], "perplexity": ppl["perplexity"]}


def _run_json(model_dir: Path) -> dict:
    path = Path(model_dir) / "l3m_run.json"
    return read_json(path) if path.exists() else {}


def length_table(cfg: dict, results: str | Path, models_dir: str | Path) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """Figure 2's table: SFT and every length-experiment model (registry ``variants``) with its band,
    length statistics, task NLL and whether its training ended feasible; and each model's sampled lengths."""
    results = Path(results)
    models = [("sft", None)] + [(v.name, v.band) for v in variants(cfg).values() if v.experiment == "length"]
    rows, lengths = [], {}
    for model, band in models:
        samples = read_jsonl(results / "samples" / f"{model}.jsonl")
        ppl = read_json(results / "metrics" / model / "perplexity.json")["summary"]
        lengths[model] = [s["n_tokens"] for s in samples]
        rows.append({"model": model, **length_row(samples, ppl, band),
                     "train_feasible": _run_json(Path(models_dir) / model).get("feasible")})
    return pd.DataFrame(rows), lengths


def ablation_table(cfg: dict, results: str | Path, models_dir: str | Path, patterns: list[str],
                   names: list[str]) -> pd.DataFrame:
    """One row per ablation setting (its Paramspace path ``params``): length statistics on the
    ablation band, task NLL and the run's final constraint estimate."""
    band = cfg["ablations"]["band"]
    rows = []
    for pat, name in zip(patterns, names):
        d = Path(results) / pat
        row = length_row(read_jsonl(d / "samples.jsonl"), read_json(d / "perplexity.json")["summary"], band)
        run = read_json(Path(models_dir) / pat / "model" / "l3m_run.json")
        rows.append({"setting": name, "params": pat, **row, "final_C_hat": run.get("final_C_hat")})
    return pd.DataFrame(rows)


def two_reward_table(cfg: dict, results: str | Path, models_dir: str | Path) -> pd.DataFrame:
    """Figure 3's table: the initialisation model, SFT and every two-reward model (registry
    ``variants``): both mean rewards ± s.e., its constraint point and whether its means meet it, the
    points its means meet, task NLL, mixture weights and whether its training ended feasible; for a
    reward with a ``check`` (an independent signal of the same quality), that signal's mean ± s.e. and
    the gap (reward − check, both in std units of the human replies) beside it."""
    tw = cfg["experiments"]["two_reward"]
    points, (r1, r2) = tw["points"], tw["rewards"]
    models = [("base", "base", None, None), ("sft", "sft", None, None)] + [
        (v.name, v.method, v.point, v.weights) for v in variants(cfg).values() if v.experiment == "two_reward"]
    rows = []
    for model, method, point, weights in models:
        d = Path(results) / "metrics" / model
        s1, s2 = (read_json(d / f"reward_{r}.json")["summary"] for r in (r1, r2))
        ppl = read_json(d / "perplexity.json")["summary"]
        feasible = [i for i, (b1, b2) in enumerate(points) if s1["mean"] >= b1 and s2["mean"] >= b2]
        b1, b2 = points[point] if point is not None else (None, None)
        checks = {}
        for k, r in (("r1", r1), ("r2", r2)):
            check = cfg["rewards"][r].get("check")
            if check:  # the independent signal of the same quality, and the gap to it
                c = read_json(d / f"reward_{check}.json")["summary"]
                s = s1 if k == "r1" else s2
                checks.update({f"{k}_check": check, f"{k}_check_mean": c["mean"], f"{k}_check_se": c["se"],
                               f"{k}_gap": s["mean"] - c["mean"]})
        rows.append({"model": model, "method": method, "point": point, "b1": b1, "b2": b2,
                     "r1_mean": s1["mean"], "r1_se": s1["se"], "r2_mean": s2["mean"], "r2_se": s2["se"], **checks,
                     "satisfied": (point in feasible) if point is not None else None,
                     "points_satisfied": " ".join(f"p{i}" for i in feasible),
                     "nll_mean": ppl["nll_mean"], "nll_std": ppl["nll_std"], "perplexity": ppl["perplexity"],
                     "weights": "/".join(f"{w:g}" for w in weights) if weights else "",
                     "train_feasible": _run_json(Path(models_dir) / model).get("feasible")})
    return pd.DataFrame(rows)


def cost_table(cfg: dict, bench: dict[str, str | Path]) -> pd.DataFrame:
    """The cost claim, per constraint point and constrained method: the wall-clock and CPU seconds of
    the model's whole training chain (its own job plus the jobs of the models it starts from: MM's
    chain is SFT then MM, L3M's is L3M alone), from the training jobs' Snakemake benchmark files
    (``bench``: model -> file), and each chain's ratio to the first constrained method's (L3M's)."""
    def seconds(model):  # (wall-clock, CPU) of the model's training job: its benchmark file's last row
        t = pd.read_csv(bench[model], sep="\t")
        return np.array([t["s"].iloc[-1], t["cpu_time"].iloc[-1]], dtype=float)

    def chain(v):
        models, m = [v.name], METHODS[v.method]
        while m.init_from != "base":
            models.insert(0, m.init_from)
            m = METHODS[m.init_from]
        return models

    by_point: dict[int, list] = {}
    for v in variants(cfg).values():
        if v.point is not None:
            by_point.setdefault(v.point, []).append(v)
    rows = []
    for point, vs in sorted(by_point.items()):
        ref = None
        for v in vs:
            models = chain(v)
            wall, cpu = (float(x) for x in sum(seconds(m) for m in models))
            ref = ref or (v.method, wall, cpu)
            rows.append({"point": point, "method": v.method, "model": v.name, "chain": "+".join(models),
                         "wall_s": wall, "cpu_s": cpu, f"wall_over_{ref[0]}": wall / ref[1],
                         f"cpu_over_{ref[0]}": cpu / ref[2] if ref[2] else None, "device": cfg["hardware"]["device"]})
    return pd.DataFrame(rows)
