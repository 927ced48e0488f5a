"""The tables, built from the per-(seed, model, metric) JSONs: the aggregate (one row per model, one
column per metric), Figure 2's length table, the ablation table, Figure 3's two-reward table, the
paired comparisons and the cost table. Which models a table holds, and their band, point or weights,
come from the registry.

Each table exists twice: ``*_per_seed.csv``, one row per model and seed (the functions without
``_seeds``), and the table itself, one row per model pooled over the seeds with 95% intervals and
verdicts (evaluation/stats.py says which interval)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from evaluation import stats
from evaluation.lengths import length_stats
from methods.core.io import read_json, read_jsonl
from methods import registry
from methods.registry import budget_of, chain, get, sft_sequences, variants


def read_table(path: str | Path) -> pd.DataFrame:
    """A table this module wrote; an empty one (no rows, written as a bare line) reads as no rows."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def seed_results(results: str | Path, seed: int) -> Path:
    """One seed's results folder (samples/, metrics/) under results/<name>/."""
    return Path(results) / f"seed{seed}"


def seed_models(models_root: str | Path, model: str, seed: int) -> Path:
    """A model's folder under resources/<name>/ (registry ``model_folder``, the DAG's model_dir)."""
    return Path(registry.model_folder(models_root, model, seed))


def grid(results: str | Path, seeds: list[int], model: str, metric: str) -> np.ndarray:
    """The (seeds, prompts) grid of one model's per-example values: ``nll`` (task NLL of the reference
    response), ``length`` (sampled tokens) or a reward name; the prompts in test order, the same for
    every seed."""
    return grid_of([seed_results(results, s) / "metrics" / model for s in seeds], seeds, model, metric)


def grid_of(dirs: list[Path], seeds: list[int], model: str, metric: str) -> np.ndarray:
    """``grid`` over explicit metric folders, one per seed (``model`` names them in errors). Task NLL
    is keyed by example id and laid out in sorted id order, so two models' NLL grids pair prompt by
    prompt whatever order their files list the ids in."""
    rows, ids = [], None
    for s, d in zip(seeds, dirs):
        if metric == "nll":
            per = read_json(Path(d) / "perplexity.json")["per_example"]
            ids = ids or sorted(per)
            if set(per) != set(ids):
                raise ValueError(f"{model} nll: seed {s} scored other prompts than seed {seeds[0]}")
            rows.append([per[i] for i in ids])
        elif metric == "length":
            rows.append(read_json(Path(d) / "lengths.json")["per_example"])
        else:
            rows.append(read_json(Path(d) / f"reward_{metric}.json")["per_example"])
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"{model} {metric}: the seeds {seeds} scored different numbers of prompts")
    return np.asarray(rows, dtype=float)


class Grids:
    """``grid`` read once per (model, metric) for the tables that use the same grid many times."""

    def __init__(self, results: str | Path, seeds: list[int]):
        self.results, self.seeds, self._cache = results, seeds, {}

    def __call__(self, model: str, metric: str) -> np.ndarray:
        key = (model, metric)
        if key not in self._cache:
            self._cache[key] = grid(self.results, self.seeds, model, metric)
        return self._cache[key]


def _per_seed(build, seeds: list[int]) -> pd.DataFrame:
    """One seed's table per seed, stacked, with the seed as the second column."""
    parts = []
    for s in seeds:
        df = build(s)
        df.insert(1, "seed", s)
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def _with_interval(row: dict, name: str, g: np.ndarray) -> None:
    row[f"{name}_mean"], row[f"{name}_lo"], row[f"{name}_hi"] = stats.interval(g)


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
                    if isinstance(v, (int, float)) and k != "sample_len":  # with lm-eval's stderrs
                        row[f"lm_eval:{task}:{k.split(',')[0]}"] = v
                    elif "stderr" in k and v == "N/A":  # lm-eval gives no stderr for corpus-level metrics
                        row[f"lm_eval:{task}:{k.split(',')[0]}"] = None
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


def two_reward_table(cfg: dict, results: str | Path, models_root: str | Path, seed: int) -> pd.DataFrame:
    """Figure 3's table for one seed (``results``: that seed's folder): the initialisation model, SFT
    and every two-reward model (registry ``variants``): both mean rewards ± s.e. over the prompts, its
    constraint point, task NLL, mixture weights and whether its training ended feasible; for a reward
    with a ``check`` (an independent signal of the same quality), that signal's mean ± s.e. and the gap
    (reward − check, both in std units of the human replies). Verdicts are made over the seeds
    (``two_reward_table_seeds``), not here."""
    tw = cfg["experiments"]["two_reward"]
    points, (r1, r2) = tw["points"], tw["rewards"]
    models = [("base", "base", None, None), ("sft", "sft", None, None)] + [
        (v.name, v.method, v.point, v.weights) for v in variants(cfg).values() if v.experiment == "two_reward"]
    rows = []
    for model, method, point, weights in models:
        d = Path(results) / "metrics" / model
        s1, s2 = (read_json(d / f"reward_{r}.json")["summary"] for r in (r1, r2))
        ppl = read_json(d / "perplexity.json")["summary"]
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
                     "nll_mean": ppl["nll_mean"], "nll_std": ppl["nll_std"], "perplexity": ppl["perplexity"],
                     "weights": "/".join(f"{w:g}" for w in weights) if weights else "",
                     "train_feasible": _run_json(seed_models(models_root, model, seed)).get("feasible")})
    return pd.DataFrame(rows)


def benchmark_seconds(path: str | Path) -> tuple[float, float] | None:
    """(wall-clock, CPU) seconds of a Snakemake benchmark file: its last row's ``s`` and ``cpu_time``
    (a file holds one row per repeat); None for a file without rows or without cpu_time."""
    t = pd.read_csv(path, sep="\t")
    if t.empty or "cpu_time" not in t or "s" not in t:
        return None
    return float(t["s"].iloc[-1]), float(t["cpu_time"].iloc[-1])


def cost_table(cfg: dict, bench: dict, models_root: str | Path) -> pd.DataFrame:
    """The cost claim, per seed, constraint point and constrained method: the model's whole training
    chain (its own job plus the jobs of the models it starts from: MM's chain is SFT then MM, L3M's is
    L3M alone) with the budget each job got (steps, sequences trained on: task pairs, policy samples,
    chosen + rejected responses; from the runs' resolved configs) and its wall-clock and CPU seconds
    (the training jobs' Snakemake benchmark files, ``bench``: seed -> model -> file), and each chain's
    ratio to the first constrained method's (L3M's). Rows with seed "mean" average the seeds."""
    def seconds(seed, model):  # (wall-clock, CPU) of the model's training job: its benchmark file's last row
        return np.array(benchmark_seconds(bench[str(seed)][model]), dtype=float)

    def budget(seed, model, method):
        run = _run_json(seed_models(models_root, model, seed))
        rc = run.get("config") or cfg
        if method == "sft":
            return run.get("steps"), sft_sequences(rc, run["steps"]) if run.get("steps") else None
        return run.get("steps"), budget_of(rc, method).get("sequences")

    by_point: dict[int, list] = {}
    for v in variants(cfg).values():
        if v.point is not None:
            by_point.setdefault(v.point, []).append(v)
    rows = []
    for seed in cfg["seeds"]:
        for point, vs in sorted(by_point.items()):
            ref = None
            for v in vs:
                methods = chain(v.method)
                models = [*methods[:-1], v.name]
                wall, cpu = (float(x) for x in sum(seconds(seed, m) for m in models))
                got = [budget(seed, m, meth) for m, meth in zip(models, methods)]
                ref = ref or (v.method, wall, cpu)
                rows.append({"seed": seed, "point": point, "method": v.method, "model": v.name,
                             "chain": "+".join(models), "steps": "+".join(str(g[0]) for g in got),
                             "sequences": None if any(g[1] is None for g in got) else sum(g[1] for g in got),
                             "wall_s": wall, "cpu_s": cpu,
                             f"wall_over_{ref[0]}": wall / ref[1], f"cpu_over_{ref[0]}": cpu / ref[2] if ref[2] else None,
                             "device": cfg["hardware"]["device"]})
    df = pd.DataFrame(rows)
    num = [c for c in df.columns if c.startswith(("wall", "cpu", "sequences"))]
    mean = df.groupby(["point", "method", "model", "chain", "steps", "device"], sort=False)[num].mean().reset_index()
    mean.insert(0, "seed", "mean")
    return pd.concat([df, mean[df.columns]], ignore_index=True)


def aggregate_seeds(results: str | Path, seeds: list[int], models: list[str], rewards: list[str]
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The aggregate table pooled over the seeds, and the per-seed one behind it. Per model: task NLL,
    sampled length and every reward as the grid mean over seeds x prompts with its 95% interval
    (``_lo``, ``_hi``; seeds and prompts as crossed random effects, evaluation/stats.py); perplexity =
    exp(mean NLL) with exp of the interval; the spread of the per-example NLL (``nll_spread_sd``,
    pooled: a separate view, not an uncertainty); lm-eval's scores and the share of finished samples as
    the mean over seeds with a Student-t interval over the per-seed values (NaN with one seed)."""
    per_seed = _per_seed(lambda s: aggregate(seed_results(results, s) / "metrics", models, rewards), seeds)
    rows = []
    for m in models:
        row = {"model": m, "n_seeds": len(seeds)}
        nll = grid(results, seeds, m, "nll")
        _with_interval(row, "nll", nll)
        row["nll_spread_sd"] = float(nll.std())
        row.update(perplexity=float(np.exp(row["nll_mean"])), perplexity_lo=float(np.exp(row["nll_lo"])),
                   perplexity_hi=float(np.exp(row["nll_hi"])), n_nll_prompts=nll.shape[1])
        lens = grid(results, seeds, m, "length")
        row["n_sampled_prompts"] = lens.shape[1]  # generation.n_prompts may sample fewer than the NLL reads
        _with_interval(row, "len", lens)
        for r in rewards:
            _with_interval(row, r, grid(results, seeds, m, r))
        sub = per_seed[per_seed["model"] == m]
        scores = [c for c in per_seed.columns if c.startswith("lm_eval:") and not c.endswith("_stderr")]
        for c in ["frac_finished"] + scores:
            vals = sub[c].dropna()
            if len(vals):
                row[c], row[f"{c}_lo"], row[f"{c}_hi"] = stats.t_interval(vals)
        rows.append(row)
    return pd.DataFrame(rows), per_seed


def length_table_seeds(cfg: dict, results: str | Path, models_root: str | Path
                       ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[int]]]:
    """Figure 2's table over the seeds, the per-seed one and every model's sampled lengths (pooled).
    Per model: its band, mean length with its 95% interval and the verdict on the band
    (met / violated / undecided from one-sided bounds pooled over seeds and prompts) with the share of
    seeds whose mean is inside it, the pooled share of responses inside the band, task NLL with its
    interval, and the share of seeds whose training ended feasible."""
    seeds = cfg["seeds"]
    models = [("sft", None)] + [(v.name, v.band) for v in variants(cfg).values() if v.experiment == "length"]

    def one(s):
        res = seed_results(results, s)
        rows = []
        for model, band in models:
            samples = read_jsonl(res / "samples" / f"{model}.jsonl")
            ppl = read_json(res / "metrics" / model / "perplexity.json")["summary"]
            rows.append({"model": model, **length_row(samples, ppl, band),
                         "train_feasible": _run_json(seed_models(models_root, model, s)).get("feasible")})
        return pd.DataFrame(rows).drop(columns=["mean_in_band"])

    per_seed = _per_seed(one, seeds)
    rows, lengths = [], {}
    for model, band in models:
        g = grid(results, seeds, model, "length")
        lengths[model] = [int(x) for x in g.ravel()]
        row = {"model": model, "n_seeds": len(seeds), "band_lo": band[0] if band else None,
               "band_hi": band[1] if band else None}
        _with_interval(row, "len", g)
        if band:
            v = stats.verdict(g, band[0], band[1])
            row.update(verdict=v["verdict"], len_lower=v["lower"], len_upper=v["upper"], seeds_met=v["seeds_met"],
                       frac_in_band=float(((g >= band[0]) & (g <= band[1])).mean()))
        _with_interval(row, "nll", grid(results, seeds, model, "nll"))
        feas = per_seed.loc[per_seed["model"] == model, "train_feasible"].dropna()
        row["train_feasible_share"] = float(feas.astype(bool).mean()) if len(feas) else None
        rows.append(row)
    return pd.DataFrame(rows), per_seed, lengths


def two_reward_table_seeds(cfg: dict, results: str | Path, models_root: str | Path
                           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Figure 3's table over the seeds and the per-seed one. Per model: both rewards (and their
    checks, with the gap and its paired interval: both score the same samples) as grid means with
    95% intervals; for a constrained model the verdict on its
    point (both one-sided 95% bounds; met / violated / undecided) and the share of seeds whose means
    meet it; for every model the points it meets by that rule (``points_met``) and those undecided;
    task NLL with its interval; mixture weights; the share of seeds whose training ended feasible."""
    tw = cfg["experiments"]["two_reward"]
    points, (r1, r2) = tw["points"], tw["rewards"]
    seeds = cfg["seeds"]
    per_seed = _per_seed(lambda s: two_reward_table(cfg, seed_results(results, s), models_root, seed=s), seeds)
    models = [("base", "base", None, None), ("sft", "sft", None, None)] + [
        (v.name, v.method, v.point, v.weights) for v in variants(cfg).values() if v.experiment == "two_reward"]
    rows = []
    for model, method, point, weights in models:
        g1, g2 = grid(results, seeds, model, r1), grid(results, seeds, model, r2)
        row = {"model": model, "method": method, "point": point, "n_seeds": len(seeds)}
        _with_interval(row, "r1", g1)
        _with_interval(row, "r2", g2)
        for k, r, g in (("r1", r1, g1), ("r2", r2, g2)):
            check = cfg["rewards"][r].get("check")
            if check:
                gc = grid(results, seeds, model, check)
                row[f"{k}_check"] = check
                _with_interval(row, f"{k}_check", gc)
                row[f"{k}_gap"], row[f"{k}_gap_lo"], row[f"{k}_gap_hi"] = stats.paired(g, gc)  # same samples
        per_point = []
        for i, (b1, b2) in enumerate(points):
            v1, v2 = stats.verdict(g1, lo=b1), stats.verdict(g2, lo=b2)
            met = (g1.mean(axis=1) >= b1) & (g2.mean(axis=1) >= b2)
            per_point.append((stats.combine([v1["verdict"], v2["verdict"]]), v1, v2, float(met.mean())))
        if point is not None:
            verdict, v1, v2, share = per_point[point]
            row.update(b1=points[point][0], b2=points[point][1], verdict=verdict, r1_lower=v1["lower"],
                       r2_lower=v2["lower"], seeds_met=share)
        row["points_met"] = " ".join(f"p{i}" for i, pp in enumerate(per_point) if pp[0] == "met")
        row["points_undecided"] = " ".join(f"p{i}" for i, pp in enumerate(per_point) if pp[0] == "undecided")
        _with_interval(row, "nll", grid(results, seeds, model, "nll"))
        row["weights"] = "/".join(f"{w:g}" for w in weights) if weights else ""
        feas = per_seed.loc[per_seed["model"] == model, "train_feasible"].dropna()
        row["train_feasible_share"] = float(feas.astype(bool).mean()) if len(feas) else None
        rows.append(row)
    return pd.DataFrame(rows), per_seed


def ablation_table_seeds(cfg: dict, results: str | Path, models_dir: str | Path, patterns: list[str],
                         names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ablation table over the seeds (mean length, its verdict on the band, task NLL, with
    intervals) and the per-seed one."""
    band, seeds = cfg["ablations"]["band"], cfg["seeds"]
    per_seed = _per_seed(lambda s: ablation_table(cfg, Path(results) / f"seed{s}", Path(models_dir) / f"seed{s}",
                                                  patterns, names), seeds)
    rows = []
    for pat, name in zip(patterns, names):
        dirs = [Path(results) / f"seed{s}" / pat for s in seeds]
        lg, ng = grid_of(dirs, seeds, pat, "length"), grid_of(dirs, seeds, pat, "nll")
        row = {"setting": name, "params": pat, "n_seeds": len(seeds), "band_lo": band[0], "band_hi": band[1]}
        _with_interval(row, "len", lg)
        v = stats.verdict(lg, band[0], band[1])
        row.update(verdict=v["verdict"], seeds_met=v["seeds_met"],
                   frac_in_band=float(((lg >= band[0]) & (lg <= band[1])).mean()))
        _with_interval(row, "nll", ng)
        rows.append(row)
    return pd.DataFrame(rows), per_seed


def _nearest_on_front(cfg: dict, val: Grids, candidates: list[str], point) -> str | None:
    """The model of a weight-grid method (the mixture) on its Pareto front nearest the constraint
    point (Euclidean distance in the two normalised rewards), front and distance from the pooled
    means on the val prompts (``val``: grids over results/<name>/val, the evaluate_val rule's), so
    that the choice does not see the test prompts the comparison reports."""
    from evaluation.figures import pareto_front

    r1, r2 = cfg["experiments"]["two_reward"]["rewards"]
    if not candidates:
        return None
    missing = [m for m in candidates for s in val.seeds for r in (r1, r2)
               if not (seed_results(val.results, s) / "metrics" / m / f"reward_{r}.json").is_file()]
    if missing:
        raise FileNotFoundError(
            f"comparisons: no val-prompt scores ({r1}, {r2}) of {sorted(set(missing))} under {val.results}/seed<s>/"
            f"metrics/ for seeds {val.seeds}; the nearest mixture model is chosen on the val prompts: run the "
            "evaluate_val rule (snakemake builds them for the comparisons target)")
    means = np.array([[val(m, r).mean() for r in (r1, r2)] for m in candidates])
    front = pareto_front(means)
    return candidates[min(front, key=lambda i: float(np.hypot(*(means[i] - np.asarray(point)))))]


def comparisons_table(cfg: dict, results: str | Path) -> pd.DataFrame:
    """Paired comparisons: per constraint point, the L3M model against every other constrained
    method's model at the point, against each single model of the experiment (DPO, CPO: the same model
    at every point), against the mixture model nearest the point on the mixture's Pareto
    front (front and distance from the val prompts, results/<name>/val) and against SFT; per length band, the L3M model against the other constrained methods'
    models at the band (if any) and SFT. For task NLL, sampled length and every evaluation reward:
    the mean difference (L3M minus the other) over the same seeds and prompts, its paired 95%
    interval (the random-effects interval of the differences), and a sentence to quote."""
    seeds, rewards = cfg["seeds"], cfg["evaluation"]["rewards"]
    grids = Grids(results, seeds)  # the L3M model's grids serve every pair it is in
    val = Grids(Path(results) / "val", seeds)
    vs = list(variants(cfg).values())
    units = {"nll": "nats/token", "length": "tokens"}
    units.update({r: ("tokens" if cfg["rewards"][r]["type"] == "length" else "std units") for r in rewards})
    metrics = ["nll", "length"] + [r for r in rewards if cfg["rewards"][r]["type"] != "length"]
    names = {"nll": "task NLL", "length": "sampled length"}
    pairs = []  # (experiment, where, a, b, relation, chosen_on)
    for key, exp in (("point", "two_reward"), ("band", "length")):
        groups: dict = {}
        for v in vs:
            if v.experiment == exp and getattr(v, key) is not None and get(v.method).grid == "constraints":
                groups.setdefault(v.point if key == "point" else tuple(v.band), []).append(v)
        for where, group in groups.items():
            l3m = [v for v in group if v.method == "l3m"]
            if not l3m:
                continue
            label = f"p{where}" if key == "point" else f"[{where[0]:g}, {where[1]:g}]"
            for other in group:
                if other.method != "l3m":
                    pairs.append((exp, label, l3m[0].name, other.name, get(other.method).label, ""))
            if key == "point":
                # the point-free models of the experiment (DPO, CPO: one model, trained on the two rewards'
                # pair sets) are compared at every point
                for v in vs:
                    if v.experiment == exp and get(v.method).grid == "single":
                        pairs.append((exp, label, l3m[0].name, v.name, get(v.method).label, ""))
                for m in [m for m in registry.METHODS.values() if m.grid == "weights"]:
                    cands = [v.name for v in vs if v.method == m.name]
                    near = _nearest_on_front(cfg, val, cands, cfg["experiments"]["two_reward"]["points"][where])
                    if near:
                        pairs.append((exp, label, l3m[0].name, near, f"{m.label} nearest on its val front", "val"))
            pairs.append((exp, label, l3m[0].name, "sft", "SFT", ""))
    rows = []
    for exp, label, a, b, rel, chosen_on in pairs:
        for metric in metrics:
            ga, gb = grids(a, metric), grids(b, metric)
            d, lo, hi = stats.paired(ga, gb)
            where = f"at {label}" if exp == "two_reward" else f"in band {label}"
            sentence = (f"L3M − {rel} ({b}) {names.get(metric, metric)} {where}: {d:+.3f} [{lo:+.3f}, {hi:+.3f}] "
                        f"{units[metric]}, {len(seeds)} seed{'s' if len(seeds) > 1 else ''} x {ga.shape[1]} prompts")
            rows.append({"experiment": exp, "where": label, "model": a, "other": b, "other_is": rel, "metric": metric,
                         "delta": d, "lo": lo, "hi": hi, "excludes_0": bool(lo > 0 or hi < 0), "n_seeds": len(seeds),
                         "n_prompts": ga.shape[1], "chosen_on": chosen_on, "sentence": sentence})
    return pd.DataFrame(rows)


def tune_tables(cfg: dict, results: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The validation sweep's tables (registry ``tune_rows``; ``results``: results/<name>/tune). Per
    model and setting: both rewards and task NLL on the val prompts, pooled over the tuning seeds, with
    95% intervals, and the verdict at every constraint point. Per constraint point and method the
    choice by the declared rule: among the method's models at the point (every model of a method
    without points), those whose verdict is met; of them the lowest val task NLL. Where none is met,
    the one closest to meeting it: the largest worst one-sided slack min(r1_lower - b1, r2_lower - b2)
    (its ``rule`` column says so; ``met_on_val`` is 0), so every method has a setting to report on test
    and to ship, and the table says it was not met."""
    import json

    from methods.registry import tune_rows

    tw, seeds = cfg["experiments"]["two_reward"], cfg["tune"]["seeds"]
    (r1, r2), points = tw["rewards"], tw["points"]
    rows = []
    for t in tune_rows(cfg):
        key = f"variant~{t['variant']}_setting~{t['setting']}"  # tune.smk's Paramspace pattern
        g1, g2 = grid(results, seeds, key, r1), grid(results, seeds, key, r2)
        row = {"method": t["method"], "variant": t["variant"], "point": t["point"], "setting": t["setting"],
               "values": json.dumps(t["values"], sort_keys=True), "n_seeds": len(seeds), "n_prompts": g1.shape[1]}
        _with_interval(row, "r1", g1)
        _with_interval(row, "r2", g2)
        _with_interval(row, "nll", grid(results, seeds, key, "nll"))
        (row["r1_lower"], _), (row["r2_lower"], _) = stats.one_sided(g1), stats.one_sided(g2)
        for i, (b1, b2) in enumerate(points):
            row[f"verdict_p{i}"] = stats.combine([stats.verdict(g1, lo=b1)["verdict"], stats.verdict(g2, lo=b2)["verdict"]])
            row[f"slack_p{i}"] = min(row["r1_lower"] - b1, row["r2_lower"] - b2)
        rows.append(row)
    table = pd.DataFrame(rows)
    choice = []
    for i, _ in enumerate(points):
        for method in dict.fromkeys(table["method"]) if len(table) else []:
            cand = table[(table["method"] == method) & (table["point"].isna() | (table["point"] == i))]
            met = cand[cand[f"verdict_p{i}"] == "met"].sort_values("nll_mean", kind="stable")
            if len(met):
                best, rule = met.iloc[0], "met on val (one-sided 95% bounds), then the lowest val task NLL"
            else:
                best = cand.sort_values(f"slack_p{i}", ascending=False, kind="stable").iloc[0]
                rule = "none met on val: the largest worst one-sided slack (closest to meeting the point)"
            choice.append({"point": i, "method": method, "candidates": len(cand), "met_on_val": len(met),
                           "variant": best["variant"], "setting": best["setting"], "values": best["values"],
                           "val_nll": best["nll_mean"], "val_verdict": best[f"verdict_p{i}"],
                           "val_slack": best[f"slack_p{i}"], "rule": rule})
    return table, pd.DataFrame(choice)


def tune_test_tables(cfg: dict, results: str | Path, choice: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The validation sweep's choice (``choice``: tune_tables' second table) reported on the test
    prompts (``results``: results/<name>/tune/test, the tune_eval_test rule's). Per constraint point
    and method with a chosen setting: both rewards and task NLL on the test prompts pooled over the
    tuning seeds with 95% intervals, the verdict at the point and the share of seeds meeting it. And
    per point, the L3M choice against every other method's choice there: L3M minus the other in task
    NLL and both rewards, paired on the same seeds and prompts, with a sentence to quote. A choice
    without a setting (an empty sweep) has no row."""
    tw, seeds = cfg["experiments"]["two_reward"], cfg["tune"]["seeds"]
    (r1, r2), points = tw["rewards"], tw["points"]
    if "setting" not in choice:
        return pd.DataFrame(), pd.DataFrame()
    chosen = choice[choice["setting"].notna() & (choice["setting"].astype(str) != "")]
    grids = Grids(results, seeds)
    rows, keys = [], {}
    for c in chosen.itertuples():
        key = f"variant~{c.variant}_setting~{c.setting}"  # tune.smk's Paramspace pattern
        keys[(int(c.point), c.method)] = key
        b1, b2 = points[int(c.point)]
        g1, g2 = grids(key, r1), grids(key, r2)
        row = {"point": int(c.point), "method": c.method, "variant": c.variant, "setting": c.setting,
               "values": c.values, "chosen_on": "val", "val_verdict": getattr(c, "val_verdict", None),
               "n_seeds": len(seeds), "n_prompts": g1.shape[1], "b1": b1, "b2": b2}
        _with_interval(row, "r1", g1)
        _with_interval(row, "r2", g2)
        _with_interval(row, "nll", grids(key, "nll"))
        v1, v2 = stats.verdict(g1, lo=b1), stats.verdict(g2, lo=b2)
        row.update(verdict=stats.combine([v1["verdict"], v2["verdict"]]), r1_lower=v1["lower"], r2_lower=v2["lower"],
                   seeds_met=float(((g1.mean(axis=1) >= b1) & (g2.mean(axis=1) >= b2)).mean()))
        rows.append(row)
    comps = []
    names = {"nll": ("task NLL", "nats/token"), r1: (r1, "std units"), r2: (r2, "std units")}
    for (point, method), key in keys.items():
        if method == "l3m":
            continue
        a = keys.get((point, "l3m"))
        if a is None:
            continue
        for metric, (name, unit) in names.items():
            ga, gb = grids(a, metric), grids(key, metric)
            d, lo, hi = stats.paired(ga, gb)
            label = get(method).label
            comps.append({"point": point, "model": a, "other": key, "other_is": label, "metric": metric,
                          "delta": d, "lo": lo, "hi": hi, "excludes_0": bool(lo > 0 or hi < 0), "n_seeds": len(seeds),
                          "n_prompts": ga.shape[1], "chosen_on": "val",
                          "sentence": f"tuned L3M − tuned {label} {name} at p{point}: {d:+.3f} [{lo:+.3f}, {hi:+.3f}] "
                                      f"{unit}, {len(seeds)} seed{'s' if len(seeds) > 1 else ''} x {ga.shape[1]} "
                                      "test prompts"})
    return pd.DataFrame(rows), pd.DataFrame(comps)
