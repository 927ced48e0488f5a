"""Training prompts against test prompts: one model sampled and scored on the first ``--n`` prompts of
each split, with the evaluation's generation settings and reward models.

    .venv/bin/python benchmarks/split_gap.py --config resources/<name>/config/<hash>.yaml \\
        --model resources/<name>/models/seed1234/sft --data resources/<name>/data/task \\
        --rewards rating,coherence --out results/<name>/benchmarks/split_gap/sft

The training-end constraint estimate of L3M and MM (``train_feasible``: the EMA of the constraint on
the training step's samples) is read on training prompts, whose reference replies the model was
trained on (SFT, and L3M's task term); the tables' verdicts are read on test prompts. This measures
how far the same model's mean rewards, sampled length and reference NLL move between the two
splits: per split the mean and its standard error, and the difference (train minus test) with a
Welch 95% interval (different prompts, so unpaired). Writes ``split_gap.{json,md}`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def welch(a, b) -> dict:
    """mean(a) - mean(b) with its Welch-Satterthwaite 95% interval (scipy's t quantile)."""
    import numpy as np
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if min(len(a), len(b)) < 2:
        raise ValueError(f"a Welch interval needs at least 2 values per side (got {len(a)} and {len(b)})")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = float(np.sqrt(va + vb))
    d = float(a.mean() - b.mean())
    if se == 0:  # both sides constant: the difference is exact
        return {"diff": d, "lo": d, "hi": d, "se": 0.0, "df": float("inf")}
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    h = float(stats.t.ppf(0.975, df)) * se
    return {"diff": d, "lo": d - h, "hi": d + h, "se": se, "df": float(df)}


def measure(cfg: dict, model_dir: str, data_dir: str, rewards: list[str], n: int) -> dict:
    import numpy as np

    from methods.core.generation import sample
    from methods.core.io import read_jsonl
    from methods.core.logprobs import response_nll
    from methods.core.models import load_model
    from methods.core.rewards import build_reward

    model, tok = load_model(model_dir, device=cfg["hardware"]["device"])
    scorers = {r: build_reward(r, cfg["rewards"][r], tokenizer=tok, device=cfg["hardware"]["device"], cfg=cfg)
               for r in rewards}
    per = {}
    for split in ("train", "test"):
        rows = read_jsonl(Path(data_dir) / f"{split}.jsonl")[:n]
        prompts = [r["prompt"] for r in rows]
        s = sample(model, tok, prompts, cfg["generation"], cfg["seed"], progress=False)
        vals = {r: f(prompts, [x["response"] for x in s], [x["response_ids"] for x in s]).double().numpy()
                for r, f in scorers.items()}
        vals["length"] = np.array([x["n_tokens"] for x in s], float)
        vals["nll"] = np.asarray(response_nll(model, tok, rows, batch_size=cfg["evaluation"]["batch_size"],
                                                progress=False), float)
        per[split] = vals
    out = {"model": str(model_dir), "n_prompts": {k: len(v["nll"]) for k, v in per.items()}, "metrics": {}}
    for m in per["train"]:
        tr, te = per["train"][m], per["test"][m]
        out["metrics"][m] = {"train_mean": float(tr.mean()), "train_se": float(tr.std(ddof=1) / np.sqrt(len(tr))),
                             "test_mean": float(te.mean()), "test_se": float(te.std(ddof=1) / np.sqrt(len(te))),
                             "train_minus_test": welch(tr, te)}
    return out


def main(argv: list[str] | None = None) -> None:
    from methods.core.config import load_config
    from methods.core.models import set_threads
    from methods.core.record import run_record

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="a resolved run config (resources/<name>/config/<hash>.yaml)")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="the task data folder (train.jsonl, test.jsonl)")
    p.add_argument("--rewards", default="rating,coherence")
    p.add_argument("--n", type=int, default=300, help="prompts per split (the first n of each)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: the config's seed)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.n < 2:
        p.error("--n: at least 2 prompts per split (an interval needs two)")
    cfg = load_config(a.config)
    if a.seed is not None:
        cfg["seed"] = a.seed
    set_threads(cfg["hardware"])
    res = measure(cfg, a.model, a.data, [r for r in a.rewards.split(",") if r], a.n)
    res["run"] = run_record(cfg, cfg["seed"], model=a.model)
    lines = [f"# Train prompts against test prompts: {a.model}", "",
             f"First {a.n} prompts of each split, one sample each (generation settings of the config), seed {cfg['seed']}.",
             "", "| metric | train mean ± se | test mean ± se | train − test [95% Welch] |", "|---|---|---|---|"]
    for m, v in res["metrics"].items():
        d = v["train_minus_test"]
        lines.append(f"| {m} | {v['train_mean']:.3f} ± {v['train_se']:.3f} | {v['test_mean']:.3f} ± {v['test_se']:.3f} "
                     f"| {d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] |")
    res["command"] = " ".join(["python", *sys.argv])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "split_gap.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "split_gap.md").write_text("\n".join(lines + ["", f"Command: `{res['command']}`", ""]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
