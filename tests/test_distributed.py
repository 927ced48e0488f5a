"""L3M across processes (gloo on CPU, launched by torchrun as on a multi-GPU node): every rank sees
the same constraint estimates and multipliers, equal to a 1-process run on the same global batch."""
import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from .conftest import REPO

DRIVER = str(REPO / "tests" / "dist_l3m_driver.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args, env, *out, stop_at=0):
    env = dict(env, STOP_AT=str(stop_at))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), DRIVER, *args, *out],
                          env=env, capture_output=True, text=True, timeout=600)


def _same_update(a, b, init):
    """The weights of ``a`` equal ``b``'s to 1e-4 (float summation order differs across processes)
    while both moved by about lr x steps from ``init``."""
    from methods.core.models import load_model

    wa, wb, w0 = (load_model(p)[0].state_dict() for p in (a, b, init))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max() < 1e-4, k
        assert (wb[k] - w0[k]).abs().max() > 1e-2, k


@pytest.mark.parametrize("fsdp,checkpoint", [(False, "sharded"), (True, "sharded"), (True, "full")],
                         ids=["ddp", "fsdp", "fsdp-full-checkpoint"])
def test_two_gloo_ranks_match_one_process(tmp_path, micro_cfg, micro_model_dir, fsdp, checkpoint):
    """DDP-style (replicated weights, all-reduced gradients) and FSDP (sharded weights, gradients and
    optimiser state): the same estimates, multipliers and final weights as one process. The FSDP run
    is also stopped by rank 0's pre-emption flag after step 2 and resumed from its sharded checkpoint
    (torch.distributed.checkpoint: one shard file per process, no full state; ``hardware.checkpoint:
    full``: the full state gathered on rank 0); its training log then equals the uninterrupted
    one-process run's."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this build")
    from methods.core.config import deep_merge, validate_config
    from methods.core.data import build_task_splits

    build_task_splits(dict(micro_cfg["data"], n_train=80), tmp_path / "data")
    over = {"constraints": [{"reward": "length", "band": [0, 3]}],
            "l3m": {"steps": 4, "lr": 0.01, "mu_every": 2, "logging_steps": 1, "save_steps": 100},
            "onpolicy": {"batch_size": 8, "sample_prompts": 4, "samples_per_prompt": 2, "max_new_tokens": 12,
                         "max_length": 96, "eval_every": 2, "eval_prompts": 4}}
    cfgs = {"one": validate_config(deep_merge(micro_cfg, over)),
            "two": validate_config(deep_merge(micro_cfg, deep_merge(over, {"hardware": {"processes": 2, "fsdp": fsdp,
                                                                                 "checkpoint": checkpoint}})))}
    for name, cfg in cfgs.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=str(REPO), L3M_THREADS="1", OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    args = lambda name: [str(tmp_path / f"{name}.yaml"), str(micro_model_dir), str(tmp_path / "data")]  # noqa: E731
    one = subprocess.run([sys.executable, DRIVER, *args("one"), str(tmp_path / "one"), str(tmp_path / "one.json")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    ref = json.loads((tmp_path / "one_rank0.json").read_text())
    assert len({str(x["c_batch"]) for x in ref}) > 1  # the estimates move: the comparison is not trivial
    if fsdp:  # pre-empted after step 2 by rank 0 alone: both ranks checkpoint and exit 143
        part = _launch(args("two"), env, str(tmp_path / "two"), str(tmp_path / "part.json"), stop_at=2)
        assert part.returncode != 0 and "143" in part.stderr + part.stdout, part.stderr[-3000:]
        assert (tmp_path / "two.work" / "state.pt").exists() and not (tmp_path / "two").exists()
        import torch

        ck = torch.load(tmp_path / "two.work" / "state.pt", weights_only=False)
        if checkpoint == "sharded":
            assert "model" not in ck and "opt" not in ck and ck["shards"] == "shards/step2" and ck["world"] == 2
            shards = sorted(x.name for x in (tmp_path / "two.work" / "shards" / "step2").iterdir())
            assert sum(x.endswith(".distcp") for x in shards) == 2 and ".metadata" in shards  # one file per rank
        else:
            emb = ck["model"]["model.embed_tokens.weight"]  # whole (512 rows), not rank 0's shard (256)
            assert "shards" not in ck and emb.shape[0] == micro_cfg["base_model"]["pretrain"]["vocab_size"]
            assert not (tmp_path / "two.work" / "shards").exists()
    two = _launch(args("two"), env, str(tmp_path / "two"), str(tmp_path / "two.json"))
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"two_rank{r}.json").read_text()) for r in (0, 1))
    if fsdp:
        assert [x["step"] for x in r0] == [3, 4] and "resuming from step 2" in two.stdout + two.stderr
        ref = ref[2:]
    assert len(ref) == len(r0) == len(r1) and r0[0]["world"] == 2 and r1[0]["rank"] == 1
    for a, b, c in zip(r0, r1, ref):
        for key in ("c_batch", "c_hat", "lam"):
            assert a[key] == b[key], key  # identical on both ranks (all-reduced)
            assert a[key] == pytest.approx(c[key], rel=1e-5, abs=1e-6), key  # = the 1-process global batch
        assert a["sampled_tokens"] + b["sampled_tokens"] == c["sampled_tokens"]  # each rank sampled its half
    assert (tmp_path / "two" / "train_log.jsonl").exists() and not (tmp_path / "two.work").exists()
    rec = json.loads((tmp_path / "two" / "l3m_run.json").read_text())
    assert rec["processes"] == 2 and rec["steps"] == 4
    _same_update(tmp_path / "two", tmp_path / "one", micro_model_dir)  # as one process on the whole batch
    logs = [[json.loads(x) for x in open(tmp_path / d / "train_log.jsonl")] for d in ("one", "two")]
    assert [r["step"] for r in logs[1]] == [r["step"] for r in logs[0]] == [0, 1, 2, 3]  # the resumed log is whole
    for a, b in zip(*logs):
        for key in a:
            if key.startswith(("C_", "lambda", "mu", "task_loss", "mean_length")):
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
    # held-out evaluation across processes (with FSDP every process evaluates in step; rank 0 writes)
    ev1, ev2 = ([json.loads(x) for x in open(tmp_path / d / "eval_log.jsonl")] for d in ("one", "two"))
    assert [e["step"] for e in ev2] == [e["step"] for e in ev1] == [0, 2, 4]
    assert ev2[0]["C_heldout[length<=3]"] == pytest.approx(ev1[0]["C_heldout[length<=3]"], rel=1e-6)


def test_training_rules_launch_through_accelerate(tmp_path):
    """hardware.processes: 2 makes the DAG's training rules start through `accelerate launch`: TRL's
    SFT and reward-model trainers (DDP) and L3M run on two processes and one of them writes."""
    cfg = yaml.safe_load((REPO / "config" / "micro.yaml").read_text())
    cfg["hardware"] = {"processes": 2}
    cfg["seeds"] = [7]
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    targets = ["resources/micro/models/rm_rating"] + [f"resources/micro/seed7/models/{m}" for m in ("sft", "l3m_len0")]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    p = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2",
                        "--configfile", str(tmp_path / "cfg.yaml"), "--directory", str(tmp_path), "-p", *targets],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert p.stdout.count("accelerate.commands.launch --multi_gpu --num_processes 2") + \
        p.stderr.count("accelerate.commands.launch --multi_gpu --num_processes 2") >= 3
    for t in targets:
        rec = json.loads((tmp_path / t / "l3m_run.json").read_text())
        assert rec["processes"] == 2, t
    log = (tmp_path / "logs" / "micro" / "seed7" / "train_sft.log").read_text()
    assert log.count("sft: 6 steps in") == 2  # both processes trained; one wrote the model
    assert not list((tmp_path / "resources" / "micro").glob("**/*.work"))


def test_bucketed_averaging_and_gathered_sampling_on_two_ranks(tmp_path, micro_model_dir):
    """On 2 gloo processes: gradients averaged in flattened buckets (launched during the backward
    pass) equal the gradient of the whole batch on one process, in one all-reduce per bucket; FSDP
    sampling with the layers gathered once draws the same tokens as per-layer gathering and as one
    process on the whole batch, with one all-gather per layer group for the phase instead of one per
    layer per token, and no per-token all-reduce."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this build")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                        "127.0.0.1", "--master_port", str(_free_port()), str(REPO / "tests" / "dist_parts_driver.py"),
                        str(micro_model_dir), str(tmp_path / "parts")], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    for r in (0, 1):
        res = json.loads((tmp_path / f"parts.rank{r}.json").read_text())
        assert res["buckets"] >= 3 and res["all_reduces"] == res["buckets"]  # one collective per bucket
        assert res["launched_during_backward"] == res["buckets"]  # every bucket left during the backward pass
        assert res["grad_max_abs_err"] < 1e-6 * max(1.0, res["grad_max_abs"])
        per, gat = res["per_layer"], res["gather"]
        assert gat["tokens"] == per["tokens"] == res["one"]  # bit-identical draws
        assert per["n_tokens"] > 2
        assert gat["all_gathers"] <= res["layers"] + 1 and gat["all_reduces"] == 0
        assert per["all_gathers"] >= res["layers"] * per["n_tokens"] and per["all_reduces"] >= per["n_tokens"] - 1
        assert res["gathers_after"] == res["layers"]  # resharded after the phase (the root stays gathered)
