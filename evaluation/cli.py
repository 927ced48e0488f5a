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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _cfg(path):
    from methods.core.config import load_config

    return load_config(path)


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


def cmd_perplexity(a):
    from evaluation.perplexity import response_nll, summarize_nll
    from methods.core.io import read_jsonl, write_json
    from methods.core.models import load_model, set_threads
    from methods.core.record import run_record

    cfg = _cfg(a.config)
    set_threads(cfg["hardware"])
    rows = read_jsonl(Path(a.data) / "test.jsonl")
    model, tok = load_model(a.model, device=cfg["hardware"]["device"])
    nll = response_nll(model, tok, rows, batch_size=cfg["evaluation"]["batch_size"])
    write_json(a.out, {"metric": "task_perplexity", "model": _model_name(a.model), "summary": summarize_nll(nll),
                       "per_example": {r["id"]: v for r, v in zip(rows, nll)},
                       "definition": "per example: mean NLL (nats/token) of the reference response given its "
                                     "chat-formatted prompt; summary over the test split",
                       "run": run_record(cfg, cfg["seed"], model=str(a.model))})


def _lengths_doc(cfg, samples: list[dict], samples_path) -> dict:
    from evaluation.lengths import length_stats
    from methods.core.record import run_record

    return {"metric": "response_length", "model": Path(samples_path).stem, "unit": "tokens",
            "summary": length_stats(samples), "per_example": [s["n_tokens"] for s in samples],
            "run": run_record(cfg, cfg["seed"], samples=str(samples_path))}


def cmd_lengths(a):
    from methods.core.io import read_jsonl, write_json

    write_json(a.out, _lengths_doc(_cfg(a.config), read_jsonl(a.samples), a.samples))


def cmd_score(a):
    """lengths.json and reward_<name>.json for every named reward, from one model's samples."""
    from methods.core.io import read_jsonl, write_json
    from methods.core.models import load_tokenizer, set_threads
    from methods.core.record import run_record
    from methods.core.rewards import build_reward, summarize

    cfg = _cfg(a.config)
    set_threads(cfg["hardware"])
    samples = read_jsonl(a.samples)
    out = Path(a.out)
    model = Path(a.samples).stem
    write_json(out / "lengths.json", _lengths_doc(cfg, samples, a.samples))
    prompts, texts, ids = ([s[k] for s in samples] for k in ("prompt", "response", "response_ids"))
    for name in [n for n in a.rewards.split(",") if n]:
        spec = cfg["rewards"][name]
        tok = load_tokenizer(a.model) if spec["type"] == "length" else None
        reward = build_reward(name, spec, tokenizer=tok, device=cfg["hardware"]["device"], cfg=cfg)
        scores = reward(prompts, texts, ids)
        write_json(out / f"reward_{name}.json", {
            "metric": f"reward_{name}", "model": model, "reward": spec, "unit": reward.unit,
            "summary": summarize(scores), "per_example": scores.tolist(),
            "run": run_record(cfg, cfg["seed"], samples=str(a.samples))})


def cmd_evaluate(a):
    """One model, one process: sample the test prompts, task perplexity, lengths and every reward
    (the same steps as the separate subcommands, without paying the start-up three times)."""
    import argparse

    from methods.cli import cmd_generate

    out = Path(a.out)
    samples = Path(a.samples)
    cmd_generate(argparse.Namespace(config=a.config, model=a.model, data=a.data, out=str(samples)))
    cmd_perplexity(argparse.Namespace(config=a.config, model=a.model, data=a.data, out=str(out / "perplexity.json")))
    cmd_score(argparse.Namespace(config=a.config, rewards=a.rewards, samples=str(samples), model=a.model, out=str(out)))


def cmd_lm_eval(a):
    """lm-eval on one model: the local task on the test split, plus evaluation.lm_eval.tasks."""
    from evaluation.lm_eval import run_lm_eval
    from methods.core.io import write_json
    from methods.core.models import set_threads
    from methods.core.record import run_record

    cfg = _cfg(a.config)
    set_threads(cfg["hardware"])
    le = cfg["evaluation"]["lm_eval"]
    res = run_lm_eval(a.model, str(Path(a.data) / "test.jsonl"), le["tasks"], le["batch_size"],
                      cfg["hardware"]["device"], le["limit"])
    write_json(a.out, {"metric": "lm_eval", "model": _model_name(a.model), **res,
                       "run": run_record(cfg, cfg["seed"], model=str(a.model))})


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
        rows.append({"model": model, **row, "train_feasible": run.get("feasible")})
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
        rows.append({"setting": name, "params": pat, **row, "final_C_hat": run.get("final_C_hat")})
    df = pd.DataFrame(rows)
    _write_table(df, a.table, cfg)
    ablation_figure(df, a.out)


def two_reward_models(cfg: dict) -> list[str]:
    """Models of the two-reward experiment, in the order common.smk builds them."""
    tw = cfg["experiments"]["two_reward"]
    n = len(tw["points"])
    return (["base", "sft"] + [f"l3m_pt{i}" for i in range(n)] + ([f"mm_pt{i}" for i in range(n)] if tw["mm"] else [])
            + ([f"mix{j}" for j in range(len(cfg["mixture"]["weights"]))] if tw["mixture"] else [])
            + [m for m in ("dpo", "cpo") if tw[m]])


def cmd_two_reward(a):
    """The two-reward table (per model: both mean rewards ± s.e., constraint satisfied, task NLL ± std),
    Figure 3 and the Pareto figure. Timings are measurements and live in results/<name>/benchmarks/."""
    import pandas as pd

    from evaluation.figures import figure3_two_reward, pareto_figure
    from methods.core.io import read_json

    cfg = _cfg(a.config)
    tw = cfg["experiments"]["two_reward"]
    points = tw["points"]
    r1, r2 = tw["rewards"]
    rows = []
    for model in two_reward_models(cfg):
        d = Path(a.results) / "metrics" / model
        s1, s2 = (read_json(d / f"reward_{r}.json")["summary"] for r in (r1, r2))
        ppl = read_json(d / "perplexity.json")["summary"]
        run_path = Path(a.models_dir) / model / "l3m_run.json"
        run = read_json(run_path) if run_path.exists() else {}
        point = int(model.rsplit("pt", 1)[1]) if "_pt" in model else None
        feasible = [i for i, (b1, b2) in enumerate(points) if s1["mean"] >= b1 and s2["mean"] >= b2]
        row = {"model": model, "method": run.get("method", "base"), "point": point,
               "b1": points[point][0] if point is not None else None, "b2": points[point][1] if point is not None else None,
               "r1_mean": s1["mean"], "r1_se": s1["se"], "r2_mean": s2["mean"], "r2_se": s2["se"],
               "satisfied": (point in feasible) if point is not None else None,
               "points_satisfied": " ".join(f"p{i}" for i in feasible),
               "nll_mean": ppl["nll_mean"], "nll_std": ppl["nll_std"], "perplexity": ppl["perplexity"],
               "weights": "/".join(f"{w:g}" for w in run["weights"]) if "weights" in run else "",
               "train_feasible": run.get("feasible")}
        rows.append(row)
    df = pd.DataFrame(rows)
    _write_table(df, a.table, cfg, extra={"reward_1": r1, "reward_2": r2, "points": points})
    labels = [cfg["rewards"][r].get("label") or r for r in (r1, r2)]
    figure3_two_reward(df, points, tw["shade"], labels, a.out)
    pareto_figure(df, labels, a.pareto)


def cmd_cost(a):
    """The paper's cost claim: L3M (one stage from init) against SFT + MM (two stages) per constraint
    point, from the rules' own Snakemake benchmark files (wall-clock s and CPU seconds): a measurement,
    written beside them (results/<name>/benchmarks/cost.csv), not among the reproducible tables."""
    import pandas as pd

    cfg = _cfg(a.config)
    bench = Path(a.bench)

    def b(rule):
        t = pd.read_csv(bench / f"{rule}.tsv", sep="\t")
        return float(t["s"].iloc[-1]), float(t["cpu_time"].iloc[-1])

    sft_s, sft_cpu = b("train_sft")
    rows = []
    for i in range(len(cfg["experiments"]["two_reward"]["points"])):
        l_s, l_cpu = b(f"train_l3m_pt{i}")
        m_s, m_cpu = b(f"train_mm_pt{i}")
        rows.append({"point": i, "l3m_s": l_s, "sft_s": sft_s, "mm_s": m_s, "sft_plus_mm_s": sft_s + m_s,
                     "ratio_sft_mm_over_l3m": (sft_s + m_s) / l_s, "l3m_cpu_s": l_cpu,
                     "sft_plus_mm_cpu_s": sft_cpu + m_cpu, "ratio_cpu": (sft_cpu + m_cpu) / l_cpu if l_cpu else None,
                     "device": cfg["hardware"]["device"]})
    _write_table(pd.DataFrame(rows), a.table, cfg, extra={"source": "Snakemake benchmark files of the training rules",
                                                         "note": "reward models are shared by both and excluded"})


def main(argv=None):
    p = argparse.ArgumentParser(prog="evaluation.cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn, args in [
        ("perplexity", cmd_perplexity, ["model", "data", "out"]),
        ("lengths", cmd_lengths, ["samples", "out"]),
        ("score", cmd_score, ["rewards", "samples", "model", "out"]),
        ("evaluate", cmd_evaluate, ["rewards", "model", "data", "samples", "out"]),
        ("lm-eval", cmd_lm_eval, ["model", "data", "out"]),
        ("aggregate", cmd_aggregate, ["metrics", "models", "out"]),
        ("figure1", cmd_figure1, ["out"]),
        ("metrics-figure", cmd_metrics_figure, ["table", "samples-dir", "models", "out"]),
        ("figure2", cmd_figure2, ["results", "models-dir", "table", "out"]),
        ("curves", cmd_curves, ["log", "out"]),
        ("ablations", cmd_ablations, ["results", "models-dir", "patterns", "names", "table", "out"]),
        ("two-reward", cmd_two_reward, ["results", "models-dir", "table", "out", "pareto"]),
        ("cost", cmd_cost, ["bench", "table"]),
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
