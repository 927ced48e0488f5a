"""The speed benchmark runs end to end (tiny settings; its figures are not asserted, only sane)."""
import json
import os
import subprocess
import sys
import time

from .conftest import REPO


def test_step_bench_runs_every_method_and_writes_ratios(tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "step_bench.py"), "--out", str(tmp_path), "--threads", "1",
           "--steps", "1", "--warmup", "1", "--prompts", "2", "--samples", "2", "--new-tokens", "6", "--band", "1", "3",
           "--methods", "l3m,rloo,grpo,mm,l3m_hf"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((tmp_path / "step_bench.json").read_text())
    assert [r["method"] for r in doc["methods"]] == ["l3m", "rloo", "grpo", "mm", "l3m_hf"]
    for r in doc["methods"]:
        assert r["step_s_median"] > 0 and r["peak_mem_mb"] > 100 and 0 < r["mean_sampled_len"] <= 6
    assert doc["ratios"]["l3m_over_rloo_step"] > 0 and "| l3m |" in (tmp_path / "step_bench.md").read_text()
    assert doc["ratios"]["l3m_hf_over_l3m_step"] > 0


def test_step_bench_random_init_needs_only_config_and_tokenizer(tmp_path, micro_model_dir, micro_model):
    """--random-init: the GPU run ships SmolLM2's config.json and tokenizer, not its weights."""
    import shutil

    arch = tmp_path / "arch"
    shutil.copytree(micro_model_dir, arch, ignore=shutil.ignore_patterns("*.safetensors"))
    cmd = [sys.executable, str(REPO / "benchmarks" / "step_bench.py"), "--out", str(tmp_path / "out"), "--model",
           str(arch), "--random-init", "--methods", "l3m", "--threads", "1", "--steps", "1", "--warmup", "0",
           "--prompts", "2", "--samples", "2", "--new-tokens", "4", "--band", "1", "3"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((tmp_path / "out" / "step_bench.json").read_text())
    assert doc["n_params"] == sum(x.numel() for x in micro_model.parameters())
    assert doc["methods"][0]["method"] == "l3m" and doc["methods"][0]["mean_sampled_len"] <= 4


def test_dist_bench_counts_collectives_per_phase(tmp_path):
    """benchmarks/dist_bench.py on 2 gloo processes (tiny settings): bucketed averaging is a few
    all-reduces per backward, gathered FSDP sampling all-gathers each layer once per phase while
    per-layer gathering does it per decoded token, and a sharded checkpoint stays far below a full
    one on rank 0."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "dist_bench.py"), "--out", str(tmp_path), "--steps", "1",
           "--warmup", "0", "--prompts", "2", "--samples", "2", "--batch", "4", "--new-tokens", "6", "--band", "30", "40",
           "--runs", "ddp_per_tensor,ddp_bucketed,fsdp_per_layer,fsdp_gather"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    by = {r["run"]: r for r in json.loads((tmp_path / "dist_bench.json").read_text())["runs"]}
    layers = by["fsdp_gather"]["layers"]
    assert by["ddp_bucketed"]["task_collectives"] <= 2 < by["ddp_per_tensor"]["task_collectives"]
    assert by["ddp_bucketed"]["task_mb"] == by["ddp_per_tensor"]["task_mb"] > 0  # the same bytes, fewer calls
    assert by["fsdp_gather"]["sampling_all_gathers"] <= layers + 1
    assert by["fsdp_per_layer"]["sampling_all_gathers"] >= layers * 2  # at least two forwards (prompt, a token)
    assert by["fsdp_gather"]["ckpt_peak_mb_rank0"] < by["fsdp_per_layer"]["ckpt_peak_mb_rank0"]


def test_split_gap_interval_is_scipys_welch_interval():
    """benchmarks/split_gap.py's train-minus-test interval against scipy's Welch t-test interval."""
    import numpy as np
    import pytest
    from scipy import stats

    sys.path.insert(0, str(REPO))
    from benchmarks.split_gap import welch

    rng = np.random.default_rng(3)
    a, b = rng.normal(0.3, 1.0, size=40), rng.normal(0.0, 2.0, size=25)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    w = welch(a, b)
    assert w["diff"] == pytest.approx(a.mean() - b.mean())
    assert (w["lo"], w["hi"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert welch([1.0, 1.0], [0.5, 0.5, 0.5]) == {"diff": 0.5, "lo": 0.5, "hi": 0.5, "se": 0.0, "df": float("inf")}


def test_split_gap_runs_on_a_micro_model(tmp_path, micro_model_dir, micro_cfg):
    """End to end on the micro model with the length reward (no reward-model folder needed): both
    splits sampled, the NLL read on the reference replies, the report written."""
    import yaml

    data = tmp_path / "task"
    data.mkdir()
    for split in ("train", "test"):
        rows = [{"id": f"{split}{i}", "prompt": f"hello there {i}", "response": f"fine thanks {i}"} for i in range(6)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {**micro_cfg, "generation": {**micro_cfg["generation"], "max_new_tokens": 5}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, str(REPO / "benchmarks" / "split_gap.py"), "--config", str(tmp_path / "cfg.yaml"), "--model",
           str(micro_model_dir), "--data", str(data), "--rewards", "length", "--n", "4", "--out", str(tmp_path / "out")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((tmp_path / "out" / "split_gap.json").read_text())
    m = doc["metrics"]
    assert set(m) == {"length", "nll"} and doc["n_prompts"] == {"train": 4, "test": 4}
    assert all(v["train_minus_test"]["lo"] <= v["train_minus_test"]["diff"] <= v["train_minus_test"]["hi"]
               for v in m.values())  # no NaN, constant lengths included
    assert 0 <= m["length"]["train_mean"] <= 5 and m["nll"]["test_mean"] > 0
    assert "| nll |" in (tmp_path / "out" / "split_gap.md").read_text()


def test_dag_cost_split_sums_each_job_kind_from_its_benchmark_files(tmp_path):
    """benchmarks/dag_cost.py --summarize: per job kind (the model's index cut off) the jobs, the summed
    wall- and CPU-seconds of each file's last row, by hand; the on-policy share counts train_l3m/mm/mix
    only; files without cpu_time are skipped; a missing folder is named."""
    head = "s\th:m:s\tmax_rss\tcpu_time\n"
    files = {"seed1/train_l3m_pt0.tsv": "10.0\t0\t1\t9.0\n", "seed2/train_l3m_pt1.tsv": "12.0\t0\t1\t11.0\n",
             "seed1/train_sft.tsv": "5.0\t0\t1\t4.0\n", "seed1/evaluate_l3m_pt0.tsv": "3.0\t0\t1\t1.0\n",
             "reward_model_rating.tsv": "7.0\t0\t1\t2.0\n6.0\t0\t1\t6.0\n"}  # two repeats: the last row counts
    for rel, body in files.items():
        (tmp_path / "b" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "b" / rel).write_text(head + body)
    (tmp_path / "b" / "other.tsv").write_text("a\tb\n1\t2\n")
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "dag_cost.py"), "--out", str(tmp_path / "o"),
                        "--summarize", str(tmp_path / "b")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    doc = json.loads((tmp_path / "o" / "dag_cost.json").read_text())
    rows = {r["job"]: (r["jobs"], r["wall_s"], r["cpu_s"]) for r in doc["split"]}
    assert rows == {"train_l3m_pt": (2, 22.0, 20.0), "train_sft": (1, 5.0, 4.0), "evaluate_l3m_pt": (1, 3.0, 1.0),
                    "reward_model_rating": (1, 6.0, 6.0)}
    assert doc["cpu_s_in_benchmarked_jobs"] == 31.0 and doc["onpolicy_share_of_benchmarked_cpu"] == round(20 / 31, 3)
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "dag_cost.py"), "--out", str(tmp_path / "o"),
                        "--summarize", str(tmp_path / "none")], capture_output=True, text=True)
    assert p.returncode != 0 and "no such folder" in p.stderr


def test_dag_cost_resume_sums_the_wall_clock_of_a_killed_invocation_and_the_rest(tmp_path):
    """benchmarks/dag_cost.py --resume: a run whose first invocation was killed (a ledger part without
    an exit code, last heartbeat 60 s after its start) goes on in its clone with --rerun-incomplete
    after --unlock; the wall-clock is 60 s plus the new invocation's, the CPU-seconds the new one's
    only, the jobs the whole DAG's (the first invocation's Job stats total), the cores the run's own,
    and the report says so; the split counts the benchmark files written since the run began, and
    --report writes the same report again. A run still beating is not resumed. A finished run, or a folder without a ledger, is refused."""
    work = tmp_path / "w"
    (work / "config").mkdir(parents=True)
    (work / "config" / "config.yaml").write_text("name: tiny\n")
    fake = work / "fake_snakemake.py"  # stands in for snakemake: records its arguments, writes a benchmark file
    fake.write_text(
        "import sys, pathlib\n"
        "w = pathlib.Path(__file__).parent\n"
        "(w / 'calls.txt').open('a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "if '--unlock' in sys.argv: sys.exit(0)\n"
        "b = w / 'results' / 'tiny' / 'benchmarks'; b.mkdir(parents=True, exist_ok=True)\n"
        "(b / 'train_sft.tsv').write_text('s\\th:m:s\\tmax_rss\\tcpu_time\\n5.0\\t0\\t1\\t4.0\\n')\n"
        "print('Job stats:'); print('total                  3'); print('3 of 3 steps (100%) done')\n")
    cmd = [sys.executable, str(fake), "--cores", "3"]
    ledger = {"commit": "c0ffee", "workdir": str(work), "configfile": None, "cmd": cmd,
              "parts": [{"started": 100.0, "last_seen": 160.0, "wall_s": None, "cpu_s": None, "returncode": None}]}
    (work / "dag_cost_parts.json").write_text(json.dumps(ledger))
    (work / "dag_cost.log").write_text("Job stats:\ntotal                5\n")  # the killed one's: 5 jobs in all
    stale = work / "results" / "tiny" / "benchmarks" / "train_l3m_pt0.tsv"  # committed with the clone: not this run's
    stale.parent.mkdir(parents=True)
    stale.write_text("s\th:m:s\tmax_rss\tcpu_time\n9.0\t0\t1\t9.0\n")
    os.utime(stale, (50.0, 50.0))
    run = [sys.executable, str(REPO / "benchmarks" / "dag_cost.py"), "--out", str(tmp_path / "o"), "--resume", str(work)]
    ledger["parts"][0]["last_seen"] = time.time()  # still beating: refused, nothing run
    (work / "dag_cost_parts.json").write_text(json.dumps(ledger))
    p = subprocess.run(run, capture_output=True, text=True)
    assert p.returncode != 0 and "still running" in p.stderr and not (work / "calls.txt").exists()
    p = subprocess.run([*run[:-2], "--report", str(work)], capture_output=True, text=True)
    assert p.returncode != 0 and "has not finished" in p.stderr
    ledger["parts"][0]["last_seen"] = 160.0
    (work / "dag_cost_parts.json").write_text(json.dumps(ledger))
    p = subprocess.run(run, capture_output=True, text=True)  # --cores 2 by default: the run's own 3 are used
    assert p.returncode == 0, p.stderr
    assert (work / "calls.txt").read_text().splitlines() == ["--cores 3 --unlock", "--cores 3 --rerun-incomplete"]
    doc = json.loads((tmp_path / "o" / "dag_cost.json").read_text())
    second = doc["parts"][1]
    assert second["returncode"] == 0 and 0 <= second["wall_s"] < 60
    assert doc["wall_s"] == round(60.0 + second["wall_s"], 1) and doc["cpu_s"] == second["cpu_s"]
    assert (doc["invocations"], doc["interrupted"], doc["jobs"], doc["commit"]) == (2, 1, 5, "c0ffee")
    md = (tmp_path / "o" / "dag_cost.md").read_text()
    assert "5 jobs, 3 cores, in 2 invocations summed; killed from outside: 1" in md and doc["cores"] == 3
    assert [r["job"] for r in doc["split"]] == ["train_sft"]  # the stale file left out
    p = subprocess.run([*run[:-2], "--report", str(work)], capture_output=True, text=True)  # the report again
    assert p.returncode == 0, p.stderr
    again = json.loads((tmp_path / "o" / "dag_cost.json").read_text())
    assert {k: again[k] for k in ("wall_s", "cpu_s", "jobs", "split", "cores")} == \
        {k: doc[k] for k in ("wall_s", "cpu_s", "jobs", "split", "cores")}
    assert "cpu_s_over_cores_x_wall" not in (tmp_path / "o" / "dag_cost.md").read_text()
    p = subprocess.run(run, capture_output=True, text=True)
    assert p.returncode != 0 and "already finished" in p.stderr
    p = subprocess.run([*run[:-1], str(tmp_path)], capture_output=True, text=True)
    assert p.returncode != 0 and "no dag_cost_parts.json" in p.stderr
