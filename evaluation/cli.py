"""Command line of the evaluation side; every Snakemake rule calls one subcommand.

    python -m evaluation.cli perplexity --config CFG --model DIR --data DIR --out JSON
    python -m evaluation.cli lengths    --config CFG --samples JSONL --out JSON
    python -m evaluation.cli reward     --config CFG --name R --samples JSONL --model DIR --out JSON
    python -m evaluation.cli aggregate  --config CFG --metrics DIR --models A,B --out CSV
    python -m evaluation.cli figure1    --config CFG --out PNG
    python -m evaluation.cli metrics-figure --config CFG --table CSV --samples-dir DIR --models A,B --out PNG
    python -m evaluation.cli figure2    --config CFG --results DIR --models-dir DIR --table CSV --out PNG
    python -m evaluation.cli curves     --config CFG --log JSONL --out PNG

Every JSON holds the metric's summary, its per-example values where they exist, and the run
record (config, seed, git revision, package versions, device).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _cfg(path):
    from methods.core.config import load_config

    return load_config(path)


def _write_table(df, path, cfg) -> None:
    """A CSV table plus ``<table>.run.json`` with its provenance (config, seed, revision, versions)."""
    from methods.core.io import atomic_path, write_json
    from methods.core.record import run_record

    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    write_json(str(path) + ".run.json", run_record(cfg, cfg["seed"], table=str(path)))
    print(df.to_string(index=False))


def _model_name(path) -> str:
    return Path(str(path)).name


def cmd_perplexity(a):
    from evaluation.perplexity import response_nll, summarize_nll
    from methods.core.io import read_jsonl, write_json
    from methods.core.models import load_model, set_threads
    from methods.core.record import run_record

    t0 = time.time()
    cfg = _cfg(a.config)
    set_threads(cfg["hardware"])
    rows = read_jsonl(Path(a.data) / "test.jsonl")
    model, tok = load_model(a.model, device=cfg["hardware"]["device"])
    nll = response_nll(model, tok, rows, cfg["evaluation"]["batch_size"])
    write_json(a.out, {"metric": "task_perplexity", "model": _model_name(a.model), "summary": summarize_nll(nll),
                       "per_example": {r["id"]: v for r, v in zip(rows, nll)},
                       "definition": "per example: mean NLL (nats/token) of the reference response given its "
                                     "chat-formatted prompt; summary over the test split",
                       "run": run_record(cfg, cfg["seed"], started=t0, model=str(a.model))})


def cmd_lengths(a):
    from evaluation.lengths import length_stats
    from methods.core.io import read_jsonl, write_json
    from methods.core.record import run_record

    cfg = _cfg(a.config)
    samples = read_jsonl(a.samples)
    write_json(a.out, {"metric": "response_length", "model": Path(a.samples).stem, "unit": "tokens",
                       "summary": length_stats(samples), "per_example": [s["n_tokens"] for s in samples],
                       "run": run_record(cfg, cfg["seed"], samples=str(a.samples))})


def cmd_reward(a):
    from methods.core.io import read_jsonl, write_json
    from methods.core.models import load_tokenizer
    from methods.core.record import run_record
    from methods.core.rewards import build_reward, summarize

    t0 = time.time()
    cfg = _cfg(a.config)
    spec = cfg["rewards"][a.name]
    tok = load_tokenizer(a.model) if spec["type"] == "length" else None
    reward = build_reward(a.name, spec, tokenizer=tok, device=cfg["hardware"]["device"])
    samples = read_jsonl(a.samples)
    scores = reward([s["prompt"] for s in samples], [s["response"] for s in samples],
                    [s["response_ids"] for s in samples])
    write_json(a.out, {"metric": f"reward_{a.name}", "model": Path(a.samples).stem, "reward": spec,
                       "unit": reward.unit, "summary": summarize(scores), "per_example": scores.tolist(),
                       "run": run_record(cfg, cfg["seed"], started=t0, samples=str(a.samples))})


def cmd_aggregate(a):
    from evaluation.tables import aggregate

    cfg = _cfg(a.config)
    df = aggregate(a.metrics, a.models.split(","), cfg["evaluation"]["rewards"])
    _write_table(df, a.out, cfg)


def cmd_figure1(a):
    from evaluation.figures import figure1_barrier

    figure1_barrier(_cfg(a.config)["figures"]["barrier_mus"], a.out)


def cmd_metrics_figure(a):
    import pandas as pd

    from evaluation.figures import metrics_figure
    from methods.core.io import read_jsonl

    cfg = _cfg(a.config)
    table = pd.read_csv(a.table)
    lengths = {m: [s["n_tokens"] for s in read_jsonl(Path(a.samples_dir) / f"{m}.jsonl")]
               for m in a.models.split(",")}
    cols = ["model", "nll_mean", "nll_std", "perplexity", "len_mean", "len_median", "frac_finished"]
    metrics_figure(table[[c for c in cols if c in table]], lengths, a.out, cfg["generation"]["max_new_tokens"])


def _length_row(samples_path, ppl_path, band) -> tuple[dict, list[int]]:
    """Length statistics (share inside ``band``) and task NLL of one model, and its sampled lengths."""
    from evaluation.lengths import length_stats
    from methods.core.io import read_json, read_jsonl

    samples = read_jsonl(samples_path)
    st = length_stats(samples, band)
    ppl = read_json(ppl_path)["summary"]
    row = {"band_lo": band[0] if band else None, "band_hi": band[1] if band else None, "len_mean": st["mean"],
           "len_std": st["std"], "len_median": st["median"], "frac_in_band": st.get("frac_in_band"),
           "mean_in_band": bool(band and band[0] <= st["mean"] <= band[1]), "nll_mean": ppl["nll_mean"],
           "nll_std": ppl["nll_std"], "perplexity": ppl["perplexity"]}
    return row, [s["n_tokens"] for s in samples]


def cmd_figure2(a):
    from evaluation.figures import figure2_length
    from methods.core.io import read_json

    cfg = _cfg(a.config)
    bands = cfg["experiments"]["length"]["bands"]
    rows, lengths = [], {}
    for i, model in enumerate(["sft"] + [f"l3m_len{j}" for j in range(len(bands))]):
        band = None if model == "sft" else bands[i - 1]
        row, lengths[model] = _length_row(Path(a.results) / "samples" / f"{model}.jsonl",
                                          Path(a.results) / "metrics" / model / "perplexity.json", band)
        run = read_json(Path(a.models_dir) / model / "l3m_run.json")
        rows.append({"model": model, **row, "train_wall_clock_s": run.get("wall_clock_s")})
    import pandas as pd

    df = pd.DataFrame(rows)
    _write_table(df, a.table, cfg)
    figure2_length(df, lengths, a.out)


def cmd_curves(a):
    from evaluation.figures import training_curves
    from methods.core.io import read_jsonl

    training_curves(read_jsonl(a.log), a.out, title=Path(a.log).stem)


def cmd_ablations(a):
    import pandas as pd

    from evaluation.figures import ablation_figure
    from methods.core.io import read_json

    cfg = _cfg(a.config)
    band = cfg["ablations"]["band"]
    rows = []
    for pat, name in zip(a.patterns.split(","), a.names.split(",")):
        d = Path(a.results) / pat
        row, _ = _length_row(d / "samples.jsonl", d / "perplexity.json", band)
        run = read_json(Path(a.models_dir) / pat / "model" / "l3m_run.json")
        rows.append({"setting": name, "params": pat, **row, "final_C_hat": run.get("final_C_hat"),
                     "train_wall_clock_s": run.get("wall_clock_s")})
    df = pd.DataFrame(rows)
    _write_table(df, a.table, cfg)
    ablation_figure(df, a.out)


def main(argv=None):
    p = argparse.ArgumentParser(prog="evaluation.cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn, args in [
        ("perplexity", cmd_perplexity, ["model", "data", "out"]),
        ("lengths", cmd_lengths, ["samples", "out"]),
        ("reward", cmd_reward, ["name", "samples", "model", "out"]),
        ("aggregate", cmd_aggregate, ["metrics", "models", "out"]),
        ("figure1", cmd_figure1, ["out"]),
        ("metrics-figure", cmd_metrics_figure, ["table", "samples-dir", "models", "out"]),
        ("figure2", cmd_figure2, ["results", "models-dir", "table", "out"]),
        ("curves", cmd_curves, ["log", "out"]),
        ("ablations", cmd_ablations, ["results", "models-dir", "patterns", "names", "table", "out"]),
    ]:
        sp = sub.add_parser(name)
        sp.add_argument("--config", required=True)
        for x in args:
            sp.add_argument(f"--{x}", required=True)
        sp.set_defaults(fn=fn)
    a = p.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
