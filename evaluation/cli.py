"""Command line of the evaluation side; every Snakemake rule calls one subcommand.

    python -m evaluation.cli generate   --config CFG --model DIR --data DIR --out JSONL
    python -m evaluation.cli perplexity --config CFG --model DIR --data DIR --out JSON
    python -m evaluation.cli lengths    --config CFG --samples JSONL --out JSON
    python -m evaluation.cli reward     --config CFG --name R --samples JSONL --model DIR --out JSON
    python -m evaluation.cli aggregate  --config CFG --results DIR --models A,B --out CSV --per-seed CSV
    python -m evaluation.cli figure1    --config CFG --out PNG
    python -m evaluation.cli metrics-figure --config CFG --table CSV --samples-dir DIR --models A,B --out PNG
    python -m evaluation.cli figure2    --config CFG --results DIR --models-dir DIR --table CSV --per-seed CSV --out PNG
    python -m evaluation.cli two-reward --config CFG --results DIR --models-dir DIR --table CSV --per-seed CSV --out PNG --pareto PNG
    python -m evaluation.cli comparisons --config CFG --results DIR --table CSV --out PNG
    python -m evaluation.cli curves     --config CFG --log JSONL --out PNG

The per-model commands (generate, perplexity, score, evaluate, lm-eval) take ``--seed S``: the
training seed of the model, which seeds its sampling (default: the config's ``seed``). The tables
read results/<name>/seed<s>/ for every seed of the config and pool them (evaluation/stats.py).

The commands only read files, call evaluation/ (tables.py builds every table, figures.py draws) and
write. Every JSON holds the metric's summary, its per-example values where they exist, and the run
record (config, seed, git revision, package versions, device).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _cfg(path, seed=None):
    from methods.core.config import load_config

    cfg = load_config(path)
    if seed is not None:
        cfg["seed"] = int(seed)  # this model's training seed: it seeds the sampling
    return cfg


def _write_table(df, path, cfg, extra: dict | None = None) -> None:
    """A CSV table plus ``<table>.run.json`` with its provenance (config, seed, revision, versions)."""
    from methods.core.io import atomic_path, write_json
    from methods.core.record import run_record

    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    write_json(str(path) + ".run.json", run_record(cfg, cfg["seed"], table=str(path), **(extra or {})))
    print(df.to_string(index=False))


def _model_name(path) -> str:
    return Path(str(path)).name


def _perplexity(cfg, model_dir, data_dir, out, split: str = "test") -> None:
    from evaluation.perplexity import response_nll, summarize_nll
    from methods.core.io import read_jsonl, write_json
    from methods.core.models import load_model
    from methods.core.record import run_record

    rows = read_jsonl(Path(data_dir) / f"{split}.jsonl")
    model, tok = load_model(model_dir, device=cfg["hardware"]["device"])
    nll = response_nll(model, tok, rows, batch_size=cfg["evaluation"]["batch_size"])
    write_json(out, {"metric": "task_perplexity", "model": _model_name(model_dir), "summary": summarize_nll(nll),
                     "per_example": {r["id"]: v for r, v in zip(rows, nll)},
                     "split": split,
                     "definition": f"per example: mean NLL (nats/token) of the reference response given its "
                                   f"chat-formatted prompt; summary over the {split} split",
                     "run": run_record(cfg, cfg["seed"], model=str(model_dir))})


def _threaded_cfg(path, seed=None):
    from methods.core.models import set_threads

    cfg = _cfg(path, seed)
    set_threads(cfg["hardware"])
    return cfg


def cmd_generate(a):
    from evaluation.sampling import sample_test_prompts

    sample_test_prompts(_threaded_cfg(a.config, a.seed), a.model, a.data, a.out)


def cmd_perplexity(a):
    _perplexity(_threaded_cfg(a.config, a.seed), a.model, a.data, a.out)


def _lengths_doc(cfg, samples: list[dict], samples_path) -> dict:
    from evaluation.lengths import length_stats
    from methods.core.record import run_record

    return {"metric": "response_length", "model": Path(samples_path).stem, "unit": "tokens",
            "summary": length_stats(samples), "per_example": [s["n_tokens"] for s in samples],
            "run": run_record(cfg, cfg["seed"], samples=str(samples_path))}


def cmd_lengths(a):
    from methods.core.io import read_jsonl, write_json

    write_json(a.out, _lengths_doc(_cfg(a.config), read_jsonl(a.samples), a.samples))


def _score(cfg, rewards: list[str], samples: list[dict], samples_path, model_dir, out) -> None:
    """lengths.json and reward_<name>.json for every named reward, from one model's samples."""
    from methods.core.io import write_json
    from methods.core.models import load_tokenizer
    from methods.core.record import run_record
    from methods.core.rewards import build_reward, summarize

    out = Path(out)
    write_json(out / "lengths.json", _lengths_doc(cfg, samples, samples_path))
    prompts, texts, ids = ([s[k] for s in samples] for k in ("prompt", "response", "response_ids"))
    for name in rewards:
        spec = cfg["rewards"][name]
        tok = load_tokenizer(model_dir) if spec["type"] == "length" else None
        reward = build_reward(name, spec, tokenizer=tok, device=cfg["hardware"]["device"], cfg=cfg)
        scores = reward(prompts, texts, ids)
        write_json(out / f"reward_{name}.json", {
            "metric": f"reward_{name}", "model": Path(samples_path).stem, "reward": spec, "unit": reward.unit,
            "summary": summarize(scores), "per_example": scores.tolist(),
            "run": run_record(cfg, cfg["seed"], samples=str(samples_path))})


def _names(arg: str) -> list[str]:
    return [n for n in arg.split(",") if n]


def cmd_score(a):
    from methods.core.io import read_jsonl

    _score(_threaded_cfg(a.config, a.seed), _names(a.rewards), read_jsonl(a.samples), a.samples, a.model, a.out)


def cmd_evaluate(a):
    """One model, one process: sample the test prompts, task perplexity, lengths and every reward
    (the steps of generate, perplexity and score, without paying the start-up three times)."""
    from evaluation.sampling import sample_test_prompts

    cfg = _threaded_cfg(a.config, a.seed)
    samples = sample_test_prompts(cfg, a.model, a.data, a.samples, a.split)
    _perplexity(cfg, a.model, a.data, Path(a.out) / "perplexity.json", a.split)
    _score(cfg, _names(a.rewards), samples, a.samples, a.model, a.out)


def cmd_lm_eval(a):
    """lm-eval on one model: the local task on the test split, plus evaluation.lm_eval.tasks."""
    from evaluation.lm_eval import run_lm_eval
    from methods.core.io import write_json
    from methods.core.record import run_record

    cfg = _threaded_cfg(a.config, a.seed)
    le = cfg["evaluation"]["lm_eval"]
    res = run_lm_eval(a.model, str(Path(a.data) / "test.jsonl"), le["tasks"], le["batch_size"],
                      cfg["hardware"]["device"], le["limit"])
    write_json(a.out, {"metric": "lm_eval", "model": _model_name(a.model), **res,
                       "run": run_record(cfg, cfg["seed"], model=str(a.model))})


_POOLED = {"pooled_over": "seeds x test prompts",
           "interval": "95%, Student-t with Satterthwaite df on the two-way random-effects variance of the grid mean "
                       "(seeds and prompts crossed; evaluation/stats.py); lm-eval scores and frac_finished: Student-t "
                       "over the per-seed values",
           "verdict": "met: the one-sided 95% bound(s) on the feasible side; violated: the opposite one-sided 95% "
                      "bound on the infeasible side; else undecided"}


def _write_pair(cfg, table, per_seed, path, per_seed_path, extra=None) -> None:
    _write_table(per_seed, per_seed_path, cfg, extra={**(extra or {}), "seeds": cfg["seeds"]})
    _write_table(table, path, cfg, extra={**(extra or {}), **_POOLED, "seeds": cfg["seeds"],
                                          "per_seed_table": str(per_seed_path)})


def cmd_aggregate(a):
    from evaluation.tables import aggregate_seeds

    cfg = _cfg(a.config)
    df, per_seed = aggregate_seeds(a.results, cfg["seeds"], a.models.split(","), cfg["evaluation"]["rewards"])
    _write_pair(cfg, df, per_seed, a.out, a.per_seed)


def cmd_figure1(a):
    from evaluation.figures import figure1_barrier

    figure1_barrier(_cfg(a.config)["figures"]["barrier_mus"], a.out)


def cmd_metrics_figure(a):
    import pandas as pd

    from evaluation.figures import metrics_figure
    from methods.core.io import read_jsonl

    cfg = _cfg(a.config)
    table = pd.read_csv(a.table)
    lengths = {m: [s["n_tokens"] for seed in cfg["seeds"]
                   for s in read_jsonl(Path(a.samples_dir) / f"seed{seed}" / "samples" / f"{m}.jsonl")]
               for m in a.models.split(",")}
    cols = ["model", "n_seeds", "nll_mean", "nll_lo", "nll_hi", "nll_spread_sd", "perplexity", "len_mean", "len_lo",
            "len_hi", "frac_finished"]
    metrics_figure(table[[c for c in cols if c in table]], lengths, a.out, cfg["generation"]["max_new_tokens"])


def cmd_figure2(a):
    from evaluation.figures import figure2_length
    from evaluation.tables import length_table_seeds

    cfg = _cfg(a.config)
    df, per_seed, lengths = length_table_seeds(cfg, a.results, a.models_dir)
    _write_pair(cfg, df, per_seed, a.table, a.per_seed)
    figure2_length(df, lengths, a.out)


def cmd_curves(a):
    from evaluation.figures import training_curves
    from methods.core.io import read_jsonl

    training_curves(read_jsonl(a.log), a.out, title=Path(a.log).stem)


def cmd_ablations(a):
    from evaluation.figures import ablation_figure
    from evaluation.tables import ablation_table_seeds

    cfg = _cfg(a.config)
    df, per_seed = ablation_table_seeds(cfg, a.results, a.models_dir, a.patterns.split(","), a.names.split(","))
    _write_pair(cfg, df, per_seed, a.table, a.per_seed)
    ablation_figure(df, a.out)


def cmd_two_reward(a):
    """The two-reward table, Figure 3 and the Pareto figure. Timings are measurements and live in
    results/<name>/benchmarks/."""
    from evaluation.figures import figure3_two_reward, pareto_figure
    from evaluation.tables import two_reward_table_seeds

    cfg = _cfg(a.config)
    tw = cfg["experiments"]["two_reward"]
    df, per_seed = two_reward_table_seeds(cfg, a.results, a.models_dir)
    _write_pair(cfg, df, per_seed, a.table, a.per_seed,
                extra={"reward_1": tw["rewards"][0], "reward_2": tw["rewards"][1], "points": tw["points"]})
    labels = [cfg["rewards"][r].get("label") or r for r in tw["rewards"]]
    figure3_two_reward(df, tw["points"], tw["shade"], labels, a.out)
    pareto_figure(df, labels, a.pareto)


def cmd_cost(a):
    """The cost table from the training jobs' Snakemake benchmark files (``--bench``: a JSON object,
    model -> file): a measurement, written beside them (results/<name>/benchmarks/cost.csv), not among
    the reproducible tables."""
    import json

    from evaluation.tables import cost_table

    cfg = _cfg(a.config)
    _write_table(cost_table(cfg, json.loads(a.bench), a.models_dir), a.table, cfg,
                 extra={"source": "Snakemake benchmark files of the training rules",
                        "note": "reward models are shared by every method and excluded"})


def cmd_comparisons(a):
    """The paired comparisons table (tables/comparisons.csv) and its figure."""
    from evaluation.figures import comparisons_figure
    from evaluation.tables import comparisons_table

    cfg = _cfg(a.config)
    df = comparisons_table(cfg, a.results)
    _write_table(df, a.table, cfg, extra={**_POOLED, "seeds": cfg["seeds"],
                                          "difference": "L3M minus the other model, paired on seeds and prompts"})
    comparisons_figure(df, a.out)


def cmd_tune_table(a):
    """The validation sweep's table and the setting chosen per constraint point and method."""
    from evaluation.tables import tune_tables
    from methods.registry import swept_grids

    cfg = _cfg(a.config)
    table, choice = tune_tables(cfg, a.results)
    extra = {**_POOLED, "pooled_over": "tuning seeds x val prompts", "tune_seeds": cfg["tune"]["seeds"],
             "grid": swept_grids(cfg)}
    _write_table(table, a.table, cfg, extra=extra)
    _write_table(choice, a.choice, cfg, extra=extra)


def cmd_tune_test(a):
    """The sweep's choice on the test prompts (tables/tuning_test.csv) and tuned L3M against the other
    tuned methods, paired (tables/tuning_comparisons.csv)."""
    from evaluation.figures import tuning_figure
    from evaluation.tables import read_table, tune_test_tables
    from methods.registry import swept_grids

    cfg = _cfg(a.config)
    table, comps = tune_test_tables(cfg, a.results, read_table(a.choice))
    extra = {**_POOLED, "pooled_over": "tuning seeds x test prompts", "tune_seeds": cfg["tune"]["seeds"],
             "grid": swept_grids(cfg), "chosen_on": "val prompts (tables/tuning_choice.csv)"}
    _write_table(table, a.table, cfg, extra=extra)
    _write_table(comps, a.comparisons, cfg, extra={**extra, "difference": "tuned L3M minus the other tuned method, "
                                                                        "paired on seeds and prompts"})
    two = cfg["experiments"]["two_reward"]
    tuning_figure(read_table(a.sweep), table, two["points"], [cfg["rewards"][r].get("label") or r for r in two["rewards"]],
                  a.out)


def main(argv=None):
    p = argparse.ArgumentParser(prog="evaluation.cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn, args in [
        ("generate", cmd_generate, ["model", "data", "out"]),
        ("perplexity", cmd_perplexity, ["model", "data", "out"]),
        ("lengths", cmd_lengths, ["samples", "out"]),
        ("score", cmd_score, ["rewards", "samples", "model", "out"]),
        ("evaluate", cmd_evaluate, ["rewards", "model", "data", "samples", "out"]),
        ("lm-eval", cmd_lm_eval, ["model", "data", "out"]),
        ("aggregate", cmd_aggregate, ["results", "models", "out", "per-seed"]),
        ("figure1", cmd_figure1, ["out"]),
        ("metrics-figure", cmd_metrics_figure, ["table", "samples-dir", "models", "out"]),
        ("figure2", cmd_figure2, ["results", "models-dir", "table", "per-seed", "out"]),
        ("curves", cmd_curves, ["log", "out"]),
        ("ablations", cmd_ablations, ["results", "models-dir", "patterns", "names", "table", "per-seed", "out"]),
        ("two-reward", cmd_two_reward, ["results", "models-dir", "table", "per-seed", "out", "pareto"]),
        ("comparisons", cmd_comparisons, ["results", "table", "out"]),
        ("tune-table", cmd_tune_table, ["results", "table", "choice"]),
        ("tune-test", cmd_tune_test, ["results", "sweep", "choice", "table", "comparisons", "out"]),
        ("cost", cmd_cost, ["bench", "models-dir", "table"]),
    ]:
        sp = sub.add_parser(name)
        sp.add_argument("--config", required=True)
        for x in args:
            sp.add_argument(f"--{x}", required=True)
        if name in ("generate", "perplexity", "score", "evaluate", "lm-eval"):
            sp.add_argument("--seed", type=int, default=None, help="the model's training seed (seeds its sampling)")
        if name == "evaluate":
            sp.add_argument("--split", default="test", choices=["test", "val"], help="val: the tuning sweep's and the nearest-mixture choice's prompts")
        sp.set_defaults(fn=fn)
    a = p.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
