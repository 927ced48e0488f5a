"""The aggregate table: one row per model, one column per metric, from the per-(model, metric) JSONs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from methods.core.io import read_json


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
