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


def test_two_gloo_ranks_match_one_process(tmp_path, micro_cfg, micro_model_dir):
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this build")
    from methods.core.config import deep_merge, validate_config
    from methods.core.data import build_task_splits

    build_task_splits(dict(micro_cfg["data"], n_train=80), tmp_path / "data")
    cfg = validate_config(deep_merge(micro_cfg, {
        "constraints": [{"reward": "length", "band": [0, 3]}],
        "l3m": {"steps": 4, "batch_size": 8, "sample_prompts": 4, "samples_per_prompt": 2, "max_new_tokens": 12,
                "lr": 0.01, "mu_every": 2, "logging_steps": 1, "save_steps": 100, "max_length": 96}}))
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=str(REPO), L3M_THREADS="1", OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    args = [str(cfg_path), str(micro_model_dir), str(tmp_path / "data")]
    one = subprocess.run([sys.executable, DRIVER, *args, str(tmp_path / "one"), str(tmp_path / "one.json")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), DRIVER, *args,
                          str(tmp_path / "two"), str(tmp_path / "two.json")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    ref = json.loads((tmp_path / "one_rank0.json").read_text())
    r0, r1 = (json.loads((tmp_path / f"two_rank{r}.json").read_text()) for r in (0, 1))
    assert len(ref) == len(r0) == len(r1) == 4 and r0[0]["world"] == 2 and r1[0]["rank"] == 1
    for a, b, c in zip(r0, r1, ref):
        for key in ("c_batch", "c_hat", "lam"):
            assert a[key] == b[key], key  # identical on both ranks (all-reduced)
            assert a[key] == pytest.approx(c[key], rel=1e-5, abs=1e-6), key  # = the 1-process global batch
        assert a["sampled_tokens"] + b["sampled_tokens"] == c["sampled_tokens"]  # each rank sampled its half
    assert len({str(x["c_batch"]) for x in ref}) > 1  # the estimates move: the comparison is not trivial
    assert (tmp_path / "two" / "train_log.jsonl").exists() and not (tmp_path / "two.work").exists()
    rec = json.loads((tmp_path / "two" / "l3m_run.json").read_text())
    assert rec["processes"] == 2 and rec["steps"] == 4
