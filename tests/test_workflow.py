"""The real DAG, end to end, on the micro config in a temporary directory (3-4 minutes on 2 cores)."""
import csv
import json
import math
import os
import subprocess
import sys

import pytest

from .conftest import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


# every run of the micro DAG here registers one more method from a test module (tests/extra_method.py)
EXTRA = {"L3M_BENCH_METHODS": "tests.extra_method"}


def run(args, cwd, **kw):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", **EXTRA)
    return subprocess.run(SNAKEMAKE + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, **kw)


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("dag")
    p = run(["--cores", "2", "--configfile", str(REPO / "config" / "micro.yaml"), "--directory", str(work)], cwd=work)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return work


def _rows(path):
    return list(csv.DictReader(open(path)))


def _per_example(out, seed, model, name):
    doc = json.loads((out / f"seed{seed}" / "metrics" / model / name).read_text())["per_example"]
    return list(doc.values()) if isinstance(doc, dict) else doc


def test_dag_outputs_exist_and_are_sane(micro_run):
    out = micro_run / "results" / "micro"
    for fig in ("fig1_barrier", "metrics", "fig2_length", "fig3_two_reward", "pareto", "comparisons"):
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{fig}.{ext}").stat().st_size > 5000
    for seed in (7, 8):  # curves per seed
        for fig in ("l3m_len0", "l3m_len1", "l3m_pt0", "mm_pt1", "mm2_pt1"):
            assert (out / f"seed{seed}" / "figures" / "curves" / f"{fig}.pdf").stat().st_size > 5000
    rows = _rows(out / "tables" / "metrics.csv")
    prov = json.loads((out / "tables" / "metrics.csv.run.json").read_text())
    assert prov["seed"] == 7 and prov["seeds"] == [7, 8] and prov["packages"]["torch"].startswith("2.13.0")
    models = ["base", "sft", "l3m_len0", "l3m_len1", "l3m_pt0", "l3m_pt1", "mm_pt0", "mm_pt1", "mix0", "mix1", "dpo",
              "cpo", "mm2_pt0", "mm2_pt1"]
    assert [r["model"] for r in rows] == models
    per_seed = _rows(out / "tables" / "metrics_per_seed.csv")
    assert [(r["model"], r["seed"]) for r in per_seed] == [(m, s) for s in ("7", "8") for m in models]
    # lm-eval's standard errors are kept; for the local task's corpus-level bits per byte it reports "N/A" (empty)
    assert "lm_eval:l3m_task:bits_per_byte_stderr" in per_seed[0] and per_seed[0]["lm_eval:l3m_task:bits_per_byte_stderr"] == ""
    for r in rows:
        bpb, npb = float(r["lm_eval:l3m_task:bits_per_byte"]), float(r["lm_eval:l3m_task:nll_per_byte"])
        assert 0 < bpb < 20 and math.isclose(bpb, npb / math.log(2), rel_tol=1e-5)  # CSV keeps 6 digits
        nll, ppl = float(r["nll_mean"]), float(r["perplexity"])
        assert 0 < nll < 20 and math.isclose(ppl, math.exp(nll), rel_tol=1e-4)
        assert 0 <= float(r["len_mean"]) <= 12 and math.isfinite(float(r["length_mean"]))
        # the pooled mean is the mean over both seeds' per-example values, read here from the metric files
        pooled = [v for s in (7, 8) for v in _per_example(out, s, r["model"], "perplexity.json")]
        assert math.isclose(nll, sum(pooled) / len(pooled), rel_tol=1e-5) and int(r["n_seeds"]) == 2
        assert float(r["nll_lo"]) <= nll <= float(r["nll_hi"]) and float(r["rating_lo"]) <= float(r["rating_mean"])
    length = _rows(out / "tables" / "length_experiment.csv")
    assert [(r["model"], r["band_lo"], r["band_hi"]) for r in length] == [("sft", "", ""), ("l3m_len0", "0", "4"),
                                                                          ("l3m_len1", "4", "10")]
    for r in length[1:]:
        lo, hi = float(r["band_lo"]), float(r["band_hi"])
        lower, upper = float(r["len_lower"]), float(r["len_upper"])
        want = "met" if lo <= lower and upper <= hi else "violated" if upper < lo or lower > hi else "undecided"
        assert r["verdict"] == want and 0 <= float(r["frac_in_band"]) <= 1
        seed_means = [sum(x) / len(x) for x in (_per_example(out, s, r["model"], "lengths.json") for s in (7, 8))]
        assert float(r["seeds_met"]) == sum(lo <= m <= hi for m in seed_means) / 2
    assert len(_rows(out / "tables" / "length_experiment_per_seed.csv")) == 2 * len(length)
    log = [json.loads(x) for x in open(out / "seed7" / "train_logs" / "l3m_len1.jsonl")]
    assert len(log) == 4 and "lambda[length<=10]" in log[0]
    for seed in (7, 8):
        for model in ("base", "sft", "l3m_len0", "l3m_len1"):
            rec = json.loads((out / f"seed{seed}" / "metrics" / model / "perplexity.json").read_text())
            assert rec["run"]["seed"] == seed and rec["run"]["config"]["name"] == "micro"
            assert rec["run"]["packages"]["trl"] == "1.16.0" and rec["run"]["git_revision"]
            assert len(rec["per_example"]) == 16
            samples = [json.loads(x) for x in open(out / f"seed{seed}" / "samples" / f"{model}.jsonl")]
            assert len(samples) == 16 and all(s["n_tokens"] <= 12 for s in samples)
        run_json = json.loads((micro_run / "resources" / "micro" / f"seed{seed}" / "models" / "sft" / "l3m_run.json").read_text())
        assert run_json["steps"] == 6 and run_json["config"]["sft"]["max_steps"] == 6
        assert run_json["config"]["seed"] == seed  # the training seed reached the trainer
        assert (micro_run / "logs" / "micro" / f"seed{seed}" / "train_sft.log").exists()
        assert not list((micro_run / "resources" / "micro" / f"seed{seed}" / "models").glob("*.work"))  # cleaned up
    # the seeds train different models from the same base model
    w7, w8 = (_weights(micro_run / "resources" / "micro" / f"seed{s}" / "models" / "l3m_len0") for s in (7, 8))
    assert any(not (w7[k] == w8[k]).all() for k in w7)


def test_two_reward_experiment_outputs(micro_run):
    """Figure 3's table pooled over both seeds: every model with both rewards and intervals, the
    verdict following its one-sided bounds and the seeds' share from the per-seed table; the paired
    comparisons; the cost table per seed from the benchmark files; a card per reward model."""
    out = micro_run / "results" / "micro"
    rows = {r["model"]: r for r in _rows(out / "tables" / "two_reward.csv")}
    assert list(rows) == ["base", "sft", "l3m_pt0", "l3m_pt1", "mm_pt0", "mm_pt1", "mix0", "mix1", "dpo", "cpo",
                          "mm2_pt0", "mm2_pt1"]  # mm2: the test-only method of tests/extra_method.py
    per_seed = _rows(out / "tables" / "two_reward_per_seed.csv")
    assert len(per_seed) == 2 * len(rows) and "satisfied" not in per_seed[0]  # no point-estimate verdicts
    points = [[0.0, 0.0], [-0.5, 0.5]]
    for name, r in rows.items():
        assert all(math.isfinite(float(r[k])) for k in ("r1_mean", "r1_lo", "r1_hi", "r2_mean", "r2_lo", "nll_mean"))
        if "_pt" in name:
            b1, b2 = points[int(r["point"])]
            assert (float(r["b1"]), float(r["b2"])) == (b1, b2)
            l1, l2 = float(r["r1_lower"]), float(r["r2_lower"])
            assert float(r["r1_lo"]) <= l1 <= float(r["r1_mean"])  # one-sided 95% inside two-sided 95%
            if l1 >= b1 and l2 >= b2:
                assert r["verdict"] == "met"
            elif r["verdict"] == "met":
                raise AssertionError(r)
            mine = [x for x in per_seed if x["model"] == name]
            share = sum(float(x["r1_mean"]) >= b1 and float(x["r2_mean"]) >= b2 for x in mine) / 2
            assert math.isclose(float(r["seeds_met"]), share)
    assert rows["mix0"]["weights"] == "1/0" and rows["mix1"]["weights"] == "0/1"
    assert rows["mm_pt0"]["method"] == "mm" and rows["cpo"]["method"] == "cpo"
    comp = _rows(out / "tables" / "comparisons.csv")
    got = {(r["where"], r["other"]) for r in comp}
    assert {("p0", "mm_pt0"), ("p0", "mm2_pt0"), ("p1", "mm_pt1"), ("p0", "sft"), ("[0, 4]", "sft"), ("p0", "cpo"),
            ("p1", "cpo")} <= got
    assert any(w == "p0" and o in ("mix0", "mix1") for w, o in got)  # the mixture nearest on its front
    nll = next(r for r in comp if r["where"] == "p1" and r["other"] == "mm_pt1" and r["metric"] == "nll")
    diffs = [a - b for s in (7, 8) for a, b in zip(_per_example(out, s, "l3m_pt1", "perplexity.json"),
                                                   _per_example(out, s, "mm_pt1", "perplexity.json"))]
    assert math.isclose(float(nll["delta"]), sum(diffs) / len(diffs), rel_tol=1e-4, abs_tol=1e-6)
    assert float(nll["lo"]) <= float(nll["delta"]) <= float(nll["hi"]) and "2 seeds x 16 prompts" in nll["sentence"]
    cost = {(r["seed"], r["point"], r["method"]): r for r in _rows(out / "benchmarks" / "cost.csv")}
    assert sorted(k[1:] for k in cost if k[0] == "7") == [("0", "l3m"), ("0", "mm"), ("0", "mm2"), ("1", "l3m"),
                                                          ("1", "mm"), ("1", "mm2")]
    assert {k[0] for k in cost} == {"7", "8", "mean"}
    assert cost[("7", "1", "mm2")]["chain"] == "sft+mm2_pt1" and rows["mm2_pt1"]["point"] == "1"
    # budgets: SFT 6 steps of 8 pairs, MM 3 steps of 8 task pairs + 4 prompts x 2 samples; L3M 4 steps of the
    # same; mm2 (no budget entry in its registry record): unknown
    assert cost[("7", "0", "mm")]["steps"] == "6+3" and int(cost[("7", "0", "mm")]["sequences"]) == 6 * 8 + 3 * (8 + 8)
    assert cost[("7", "0", "l3m")]["steps"] == "4" and int(cost[("7", "0", "l3m")]["sequences"]) == 4 * (8 + 8)
    assert cost[("7", "0", "mm2")]["sequences"] == ""
    assert json.loads((micro_run / "resources" / "micro" / "seed7" / "models" / "mm2_pt0" / "l3m_run.json").read_text())[
        "steps"] == 3

    def wall(rule, seed):
        return float(_rows_tsv(out / "benchmarks" / f"seed{seed}" / f"{rule}.tsv")[-1]["s"])

    for seed in ("7", "8"):
        for i in "01":
            mm, l3m = cost[(seed, i, "mm")], cost[(seed, i, "l3m")]
            assert mm["chain"] == f"sft+mm_pt{i}" and l3m["chain"] == f"l3m_pt{i}"
            assert math.isclose(float(mm["wall_s"]), wall("train_sft", seed) + wall(f"train_mm_pt{i}", seed), rel_tol=1e-5)
            assert math.isclose(float(mm["wall_over_l3m"]), float(mm["wall_s"]) / float(l3m["wall_s"]), rel_tol=1e-5)
    for rm in ("rating", "coherence"):
        card = json.loads((out / "data" / f"rm_{rm}_card.json").read_text())
        assert 0 <= card["heldout_pair_accuracy"]["accuracy"] <= 1 and card["normalisation"]["std"] > 0
        m = json.loads((out / "seed7" / "metrics" / "sft" / f"reward_{rm}.json").read_text())
        assert m["unit"] == "std units of the reference set" and len(m["per_example"]) == 16
    mm_log = [json.loads(x) for x in open(out / "seed7" / "train_logs" / "mm_pt0.jsonl")]
    assert all(r["lambda[rating>=0]"] >= 0 for r in mm_log)
    # CPO's log kept and drawn per seed: violation = tau - mean constraint margin, one tau throughout
    cpo_log = [json.loads(x) for x in open(out / "seed7" / "train_logs" / "cpo.jsonl")]
    taus = {round(r["violation"] + r["margin_constraint"], 5) for r in cpo_log}
    assert len(cpo_log) >= 2 and len(taus) == 1 and all(r["lambda"] >= 0 for r in cpo_log)
    assert (out / "seed7" / "figures" / "curves" / "cpo.png").is_file()


def _rows_tsv(path):
    return list(csv.DictReader(open(path), delimiter="\t"))


def _dry_run_jobs(stdout):
    """(rule, wildcards) of every job a dry run lists."""
    import re

    jobs = []
    for line in stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if m:
            jobs.append((m.group(1), {}))
        elif line.strip().startswith("wildcards:") and jobs:
            jobs[-1][1].update(kv.split("=", 1) for kv in line.split(":", 1)[1].strip().split(", "))
    return jobs


def test_adding_a_seed_trains_only_the_new_seeds_models(micro_run, tmp_path):
    """A third seed on the finished two-seed run (a dry run): every training and evaluation job is the
    new seed's; nothing shared (data, base model, reward models) and nothing of seeds 7 and 8 reruns."""
    overlay = tmp_path / "seeds.yaml"
    overlay.write_text(json.dumps({"seeds": [7, 8, 9]}))
    p = run(["--cores", "1", "--directory", str(micro_run), "-n", "--configfile", str(REPO / "config" / "micro.yaml"),
             str(overlay)], cwd=micro_run)
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = _dry_run_jobs(p.stdout)
    trained = [(r, w) for r, w in jobs if r in ("train", "train_variant")]
    assert len(trained) == 13 and all(w["seed"] == "9" for _, w in trained)  # sft, dpo, cpo + 10 variants (mm2 too)
    assert all(w.get("seed") == "9" for r, w in jobs if r in ("evaluate", "evaluate_val", "lm_eval", "training_curves"))
    assert not {r for r, _ in jobs} & {"base_model", "reward_model", "task_data", "preference_data", "contrast_data"}
    assert {"aggregate", "two_reward", "comparisons", "cost_table"} <= {r for r, _ in jobs}


def test_rerun_is_a_no_op(micro_run):
    p = run(["--cores", "1", "--configfile", str(REPO / "config" / "micro.yaml"), "--directory", str(micro_run),
             "-n"], cwd=micro_run)
    assert p.returncode == 0 and "Nothing to be done" in p.stdout + p.stderr


def test_report_has_the_figures(micro_run):
    """The README's report command as written (no --cores)."""
    p = run(["--configfile", str(REPO / "config" / "micro.yaml"), "--directory", str(micro_run),
             "--report", str(micro_run / "report.html")], cwd=micro_run)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (micro_run / "report.html").stat().st_size > 10000


def test_ablations_target_runs_the_paramspace_grid(micro_run):
    p = run(["--cores", "2", "--configfile", str(REPO / "config" / "micro.yaml"), "--directory", str(micro_run),
             "ablations"], cwd=micro_run)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = list(csv.DictReader(open(micro_run / "results" / "micro" / "tables" / "ablations.csv")))
    assert [r["setting"] for r in rows] == ["default", "joint-clip"]
    assert "clip~joint" in rows[1]["params"] and all(0 <= float(r["frac_in_band"]) <= 1 for r in rows)
    assert all(r["verdict"] in ("met", "violated", "undecided") and r["n_seeds"] == "2" for r in rows)
    per_seed = _rows(micro_run / "results" / "micro" / "tables" / "ablations_per_seed.csv")
    assert [(r["setting"], r["seed"]) for r in per_seed] == [("default", "7"), ("joint-clip", "7"), ("default", "8"),
                                                             ("joint-clip", "8")]
    assert (micro_run / "results" / "micro" / "figures" / "ablations.pdf").exists()


def test_tune_target_runs_the_validation_sweep(micro_run):
    """`snakemake tune`: micro.yaml's grid (L3M barrier_max_norm 2, 4; MM dual_lr 0.5, 2) per constraint
    point, trained from the seed's models, scored on the val prompts; a choice per point and method
    that follows the rule on the sweep's own table."""
    p = run(["--cores", "2", "--configfile", str(REPO / "config" / "micro.yaml"), "--directory", str(micro_run),
             "tune"], cwd=micro_run)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    tables = micro_run / "results" / "micro" / "tables"
    micro_points = [[0.0, 0.0], [-0.5, 0.5]]  # config/micro.yaml experiments.two_reward.points
    rows = _rows(tables / "tuning.csv")
    assert sorted((r["variant"], r["setting"], r["values"]) for r in rows) == sorted(
        [(f"l3m_pt{i}", f"s{j}", json.dumps({"l3m.barrier_max_norm": v})) for i in (0, 1) for j, v in enumerate((2, 4))]
        + [(f"mm_pt{i}", f"s{j}", json.dumps({"mm.dual_lr": v})) for i in (0, 1) for j, v in enumerate((0.5, 2.0))])
    assert all(r["n_prompts"] == "16" and r["n_seeds"] == "1" for r in rows)  # the 16 val prompts, tune.seeds [7]
    run_cfg = json.loads((micro_run / "resources" / "micro" / "tune" / "seed7" / "variant~mm_pt1_setting~s1" / "model"
                          / "l3m_run.json").read_text())["config"]
    assert run_cfg["mm"]["dual_lr"] == 2.0 and run_cfg["constraints"][1]["bound"] == 0.5
    for c in _rows(tables / "tuning_choice.csv"):
        cands = [r for r in rows if r["method"] == c["method"] and r["point"] == c["point"]]
        met = [r for r in cands if r[f"verdict_p{c['point']}"] == "met"]
        assert int(c["candidates"]) == len(cands) == 2 and int(c["met_on_val"]) == len(met)
        # met: the lowest val NLL among the met; none met: the largest worst one-sided slack to the point
        b1, b2 = micro_points[int(c["point"])]
        best = (min(met, key=lambda r: float(r["nll_mean"])) if met else
                max(cands, key=lambda r: min(float(r["r1_lower"]) - b1, float(r["r2_lower"]) - b2)))
        assert c["setting"] == best["setting"]
    # the choice on the test prompts: one row per chosen setting, and tuned L3M - tuned MM per point
    # as the mean of the per-prompt differences in the test files (paired on the same prompts)
    chosen = {(c["point"], c["method"]): c["setting"] for c in _rows(tables / "tuning_choice.csv") if c["setting"]}
    test_rows = _rows(tables / "tuning_test.csv")
    assert {(r["point"], r["method"]): r["setting"] for r in test_rows} == chosen
    assert all(r["n_prompts"] == "16" and r["chosen_on"] == "val" for r in test_rows)
    test_dir = micro_run / "results" / "micro" / "tune" / "test" / "seed7" / "metrics"
    both = [p for p in {p for p, _ in chosen} if (p, "l3m") in chosen and (p, "mm") in chosen]
    assert sorted(both) == ["0", "1"]  # every point has a choice for both methods (met or closest)
    comps = _rows(tables / "tuning_comparisons.csv")
    assert sorted({c["point"] for c in comps}) == sorted(both)
    for c in (c for c in comps if c["metric"] == "nll"):
        nll = [json.loads((test_dir / k / "perplexity.json").read_text())["per_example"] for k in (c["model"], c["other"])]
        assert float(c["delta"]) == pytest.approx(sum(nll[0][i] - nll[1][i] for i in nll[0]) / len(nll[0]), rel=1e-4, abs=1e-5)


def test_bad_config_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "config" / "micro.yaml").read_text() + "constraints:\n  - {reward: length, band: [30, 10]}\n")
    p = run(["--cores", "1", "--configfile", str(bad), "--directory", str(tmp_path)], cwd=tmp_path)
    assert p.returncode != 0
    assert "config.constraints[0].band" in p.stdout + p.stderr
    assert not (tmp_path / "resources" / "micro" / "data").exists()


def test_a_killed_dag_leaves_no_complete_looking_output_and_the_rerun_resumes(micro_run, tmp_path):
    """SIGKILL to Snakemake and its training job (a node dying): the model folder never appears half
    written, so Snakemake reruns the job, and the job resumes from its last checkpoint."""
    import shutil
    import signal
    import time

    import yaml

    copy = tmp_path / "dag"
    shutil.copytree(micro_run, copy, symlinks=True)
    cfg = yaml.safe_load((REPO / "config" / "micro.yaml").read_text())
    cfg["l3m"].update(steps=40, save_steps=2)  # long enough to be killed part-way
    cfg_path = tmp_path / "long.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    model = copy / "resources" / "micro" / "seed7" / "models" / "l3m_len0"
    work = model.parent / "l3m_len0.work"
    args = ["--cores", "1", "--configfile", str(cfg_path), "--directory", str(copy), str(model.relative_to(copy))]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.Popen(SNAKEMAKE + args, cwd=copy, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not ((work / "state.pt").exists() and (work / "train_log.jsonl").exists()
               and len((work / "train_log.jsonl").read_text().splitlines()) >= 5) and time.time() < deadline:
        assert proc.poll() is None, "snakemake ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not model.exists() and (work / "state.pt").exists()
    assert run(["--unlock"] + args, cwd=copy).returncode == 0  # a killed Snakemake leaves its lock (documented)
    p = run(args, cwd=copy)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "resuming from step" in (copy / "logs" / "micro" / "seed7" / "train_l3m_len0.log").read_text()
    assert json.loads((model / "l3m_run.json").read_text())["steps"] == 40 and not work.exists()


def test_time_to_feasible_benchmark_on_the_micro_dag(micro_run, tmp_path):
    """benchmarks/time_to_feasible.py on the micro DAG's base model, data and reward models: SFT,
    then MM and L3M with held-out evaluation; the table's times and ratios follow from the logs."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "time_to_feasible.py"), "--config", str(REPO / "config" / "micro.yaml"),
           "--root", str(micro_run), "--points", "1", "--eval-every", "2", "--eval-prompts", "8", "--out", str(tmp_path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    doc = json.loads((tmp_path / "time_to_feasible.json").read_text())
    (row,) = doc["points"]
    assert row["bounds"] == [-0.5, 0.5] and doc["sft_s"] > 0 and row["l3m"]["steps"] == 4 and row["sft_mm"]["mm_steps"] == 3
    work = micro_run / "resources" / "micro" / "ttf"
    l3m = [json.loads(x) for x in open(work / "l3m_pt1" / "eval_log.jsonl")]
    mm = [json.loads(x) for x in open(work / "mm_pt1" / "eval_log.jsonl")]
    assert [e["step"] for e in l3m] == [0, 2, 4] and [e["step"] for e in mm] == [0, 2, 3]
    first = next((e for e in mm if e["feasible"]), None)
    assert row["sft_mm"]["first_feasible_s"] == (None if first is None else round(first["elapsed_s"] + doc["sft_s"], 3))
    assert row["sft_mm"]["final_nll"] == round(mm[-1]["heldout_nll"], 4) and row["l3m"]["final_feasible"] == l3m[-1]["feasible"]
    a, b = row["l3m"]["first_feasible_s"], row["sft_mm"]["first_feasible_s"]
    assert row["sft_mm_over_l3m_first"] == (None if a is None or b is None else round(b / a, 3))
    for ext in ("png", "pdf"):
        assert (tmp_path / f"time_to_feasible.{ext}").stat().st_size > 5000
    assert "| 1 (-0.5, 0.5) |" in (tmp_path / "time_to_feasible.md").read_text()


def test_step_profile_benchmark_on_the_micro_dag(micro_run, tmp_path):
    """benchmarks/step_profile.py on the micro DAG's models: MM at p0 (from its seed-7 SFT model; no
    named phases) and L3M at p0 (task, barrier and optimiser phases), each as its training job runs
    it: 1 warm-up step, 1 (MM: 3 steps in all) or 2 (L3M: 4) timed steps and one FLOP-counted step. The parts add up to the step in time and
    to the counted step's total in FLOPs (FlopCounterMode's own total, so nothing is dropped or counted
    twice), generation sits inside sampling, each constrained reward is timed, L3M's task and barrier
    passes do arithmetic, and the floor at the measured matmul rate is below the measured step."""
    cfg = __import__("yaml").safe_load(open(REPO / "config" / "micro.yaml"))
    for variant, method, timed in (("mm_pt0", "mm", 1), ("l3m_pt0", "l3m", 2)):
        out = tmp_path / variant
        cmd = [sys.executable, str(REPO / "benchmarks" / "step_profile.py"), "--root", str(micro_run), "--configfile",
               str(REPO / "config" / "micro.yaml"), "--variant", variant, "--steps", str(timed), "--warmup", "1",
               "--out", str(out)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        doc = json.loads((out / "step_profile.json").read_text())
        assert (doc["method"], doc["seed"], doc["steps_timed"]) == (method, 7, timed)
        parts = doc["parts"]
        assert math.isclose(sum(x["s"] for x in parts.values()), doc["step_s_mean"], rel_tol=1e-9)
        assert math.isclose(sum(x["gflop"] for x in parts.values()) * 1e9, doc["flops_per_step"], rel_tol=1e-9)
        assert {f"scoring {r}" for r in cfg["experiments"]["two_reward"]["rewards"]} <= set(parts)
        assert all(x["s"] >= 0 for x in parts.values()) and parts["generation (sampling, less scoring)"]["gflop"] > 0
        for s in doc["per_step"]:
            assert s["sample_s"] <= s["sas"] <= s["step_s"] and s["sampled_tokens"] > 0
        if method == "l3m":
            assert parts["task"]["gflop"] > 0 and parts["barrier"]["gflop"] > 0
            assert parts["the rest (outside any phase)"]["s"] < 0.05 * doc["step_s_mean"]
        assert 0 < doc["floor_s"] < doc["step_s_mean"] and doc["matmul_gflops"]["best"] > 0


def test_a_changed_setting_retrains_only_the_models_that_read_it(micro_run, tmp_path):
    """Each training job's params fingerprint the config sections its method reads (methods/registry.py):
    an L3M setting retrains only L3M models; a shared on-policy setting L3M and MM (the mixture reads only
    the temperature); a CPO optimiser setting CPO alone; an SFT setting SFT and everything that starts from
    it, not L3M."""
    def dry_run(section, change):
        overlay = tmp_path / f"{section}.yaml"
        overlay.write_text(json.dumps({section: change}))
        p = run(["--cores", "1", "--directory", str(micro_run), "-n", "--configfile",
                 str(REPO / "config" / "micro.yaml"), str(overlay)], cwd=micro_run)
        assert p.returncode == 0, p.stderr[-3000:]
        jobs = [w for r, w in _dry_run_jobs(p.stdout) if r in ("train", "train_variant")]
        assert {w["seed"] for w in jobs} <= {"7", "8"} and len(jobs) % 2 == 0  # both seeds retrain, alike
        return {f"method={w['method']}" if "method" in w else f"variant={w['variant']}" for w in jobs}

    l3m = {w.split("=")[1] for w in dry_run("l3m", {"mu0": 0.5})}
    assert {"l3m_len0", "l3m_len1", "l3m_pt0", "l3m_pt1"} <= l3m and all(w.startswith("l3m_") for w in l3m)
    shared = {w.split("=")[1] for w in dry_run("onpolicy", {"ema": 0.5})}
    assert {"l3m_len0", "l3m_pt0", "mm_pt0", "mm_pt1"} <= shared and not {"mix0", "sft", "dpo", "cpo"} & shared
    assert {"mix0", "mix1", "l3m_pt0", "mm_pt0"} <= {w.split("=")[1] for w in dry_run("onpolicy", {"temperature": 0.9})}
    assert dry_run("cpo", {"weight_decay": 0.01}) == {"method=cpo"}
    sft = dry_run("sft", {"lr": 0.002})
    assert {"method=sft", "method=dpo", "method=cpo", "variant=mm_pt0", "variant=mix0"} <= sft
    assert not any(w.startswith("variant=l3m") for w in sft)


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_a_second_invocation_cannot_change_a_running_study(micro_run, tmp_path):
    """While a micro run trains, Snakemake is called with another config of the same name (a dry run,
    then a real run that fails on the lock): the first run's model is the clean run's, bit for bit."""
    import time

    import yaml

    other = yaml.safe_load((REPO / "config" / "micro.yaml").read_text())
    other["seed"] = 8
    other_path = tmp_path / "seed8.yaml"
    other_path.write_text(yaml.safe_dump(other))
    work = tmp_path / "dag"
    work.mkdir()
    target = "resources/micro/seed7/models/cpo"
    base = ["--configfile", str(REPO / "config" / "micro.yaml"), "--directory", str(work)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    first = subprocess.Popen(SNAKEMAKE + ["--cores", "2"] + base + [target], cwd=work, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (work / "resources" / "micro" / "seed7" / "models" / "sft.work").exists() and time.time() < deadline:
        assert first.poll() is None, "the first run ended before the second invocation"
        time.sleep(0.1)
    second = ["--configfile", str(other_path), "--directory", str(work), "--cores", "1"]
    assert run(second + ["-n", target], cwd=work).returncode == 0
    locked = run(second + [target], cwd=work)
    assert locked.returncode != 0 and "lock" in (locked.stdout + locked.stderr).lower()
    assert first.wait(timeout=600) == 0
    import torch

    got, want = _weights(work / target), _weights(micro_run / target)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    # the first run's config file only: the dry run and the locked run of the other config write nothing
    assert len(list((work / "resources" / "micro" / "config").glob("*.yaml"))) == 1


def test_readme_recovery_after_a_killed_snakemake(micro_run, tmp_path):
    """Snakemake is SIGKILLed while a training job runs; the job itself finishes (its output complete,
    still marked incomplete). The README's recovery: `snakemake --unlock`, then the same command. The
    tables then equal the clean run's byte for byte."""
    import shutil
    import time

    copy = tmp_path / "dag"
    shutil.copytree(micro_run, copy, symlinks=True)
    model = copy / "resources" / "micro" / "seed7" / "models" / "l3m_len0"
    out = copy / "results" / "micro"
    for p in (model, out / "seed7" / "metrics" / "l3m_len0"):  # retrain it (the same config: the same model), rescore
        shutil.rmtree(p)
    for p in [*(out / "seed7" / "samples").glob("l3m_len0.jsonl*"), *(out / "tables").glob("metrics*.csv*"),
              *(out / "tables").glob("length_experiment*.csv*"), *(out / "tables").glob("comparisons.csv*")]:
        p.unlink()  # (Snakemake rebuilds a missing intermediate only when a requested output needs it)
    args = ["--cores", "1", "--configfile", str(REPO / "config" / "micro.yaml"), "--directory", str(copy)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.Popen(SNAKEMAKE + args, cwd=copy, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = model.parent / "l3m_len0.work"
    deadline = time.time() + 300
    while not work.exists() and time.time() < deadline:
        assert proc.poll() is None, "snakemake ended before it could be killed"
        time.sleep(0.05)
    proc.kill()  # Snakemake only: its training job goes on and completes its output
    proc.wait(timeout=60)
    while not (model.exists() and not work.exists()) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    assert model.exists()
    assert run(["--unlock"] + args, cwd=copy).returncode == 0
    p = run(args, cwd=copy)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    for table in ("metrics.csv", "metrics_per_seed.csv", "length_experiment.csv", "two_reward.csv", "comparisons.csv"):
        got = (copy / "results" / "micro" / "tables" / table).read_bytes()
        assert got == (micro_run / "results" / "micro" / "tables" / table).read_bytes(), table


def test_tables_and_figures_are_byte_reproducible(micro_run, tmp_path):
    """Rebuilding every table and figure from the same results gives the same bytes (no timings in
    tables, no creation dates in PDFs); timings live in benchmarks/."""
    import shutil

    copy = tmp_path / "dag"
    shutil.copytree(micro_run, copy, symlinks=True)
    out = copy / "results" / "micro"
    files = sorted(p for p in list((out / "tables").glob("*")) + list((out / "figures").rglob("*.p*"))
                   + list(out.glob("seed*/figures/curves/*.p*")) if p.is_file())
    before = {p: p.read_bytes() for p in files}
    rules = ["aggregate", "figure1", "metrics_figure", "figure2", "training_curves", "two_reward", "comparisons"]
    p = run(["--cores", "2", "--configfile", str(REPO / "config" / "micro.yaml"), "--directory", str(copy),
             "--forcerun"] + rules, cwd=copy)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert {p.name for p in files} >= {"metrics.csv", "length_experiment.csv", "two_reward.csv", "fig2_length.pdf",
                                       "comparisons.csv", "two_reward_per_seed.csv", "l3m_pt0.pdf"}
    changed = [str(p.relative_to(out)) for p in files if p.read_bytes() != before[p]]
    assert not changed, changed
    for table in ("length_experiment.csv", "two_reward.csv", "metrics.csv", "comparisons.csv"):
        assert "wall_clock" not in (out / "tables" / table).read_text().splitlines()[0]


def test_config_mistakes_are_named_before_any_job(tmp_path):
    """A configfile without a name, nested --config overrides, a YAML syntax error."""
    (tmp_path / "noname.yaml").write_text("seed: 3\n")
    p = run(["-n", "--cores", "1", "--configfile", str(tmp_path / "noname.yaml"), "--directory", str(tmp_path)],
            cwd=tmp_path)
    assert p.returncode != 0 and "config.name: missing in" in p.stdout + p.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()
    # one cheap job (Figure 1), so that the resolved config is written (a dry run writes nothing)
    p = run(["--cores", "1", "--configfile", str(REPO / "config" / "micro.yaml"), "--directory", str(tmp_path),
             "--config", 'l3m={"steps": 5}', 'onpolicy={"temperature": 0.7}', "--",
             "results/micro/figures/fig1_barrier.png"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    import yaml

    (resolved,) = (tmp_path / "resources" / "micro" / "config").glob("*.yaml")
    resolved = yaml.safe_load(resolved.read_text())
    # typed, not the strings Snakemake passes
    assert resolved["l3m"]["steps"] == 5 and resolved["onpolicy"]["temperature"] == 0.7
    (tmp_path / "bad.yaml").write_text("name: x\nl3m: [\n")
    c = subprocess.run([sys.executable, "-m", "methods.cli", "check", str(tmp_path / "bad.yaml")], cwd=REPO,
                       capture_output=True, text=True)
    assert c.returncode == 2 and f"{tmp_path / 'bad.yaml'}:3:1: not valid YAML" in c.stderr


# Remaining `snakemake --lint` findings, each justified in the README ("Workflow checks"): the
# interpreter, its environment, the resolved-config path and the launcher are the same for every job
# and change with the checkout or with any config key, so as params they would rerun every job; what
# a job depends on is in its fingerprint params.
ALLOWED_LINTS = {f"Shell command directly uses variable {v} from outside of the rule:"
                 for v in ("ENV", "PY", "CONFIG_FILE", "TRAIN_CLI")}


def test_snakemake_lint_finds_only_the_justified_globals(tmp_path):
    p = run(["--lint", "--configfile", str(REPO / "config" / "micro.yaml"), "--directory", str(tmp_path)],
            cwd=tmp_path)
    found = {line.strip()[2:] for line in (p.stdout + p.stderr).splitlines() if line.startswith("    * ")}
    assert found and found <= ALLOWED_LINTS, found - ALLOWED_LINTS
    assert not list(tmp_path.glob("resources/*/config/*.yaml"))  # --lint writes no config file


def test_workflow_files_are_snakefmt_formatted():
    files = [str(REPO / "Snakefile")] + sorted(str(p) for p in (REPO / "workflow" / "rules").glob("*.smk"))
    p = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *files], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_conda_environment_pins_what_requirements_pin():
    import yaml

    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    reqs = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert pip == reqs
