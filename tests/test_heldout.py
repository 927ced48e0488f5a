"""Held-out evaluation during on-policy training (onpolicy.eval_every) and time-to-feasible."""
import json
import math

import pytest

from methods.core.onpolicy import time_to_feasible


def test_time_to_feasible_first_and_stays():
    ev = [{"step": s, "elapsed_s": 10.0 * s, "feasible": f} for s, f in
          [(0, False), (5, True), (10, False), (15, True), (20, True)]]
    assert time_to_feasible(ev) == {"first_feasible_step": 5, "first_feasible_s": 50.0,
                                    "stays_feasible_step": 15, "stays_feasible_s": 150.0}
    assert time_to_feasible(ev, offset_s=7.5)["first_feasible_s"] == 57.5  # an earlier stage (SFT) counted
    never = time_to_feasible([dict(e, feasible=False) for e in ev])
    assert set(never.values()) == {None}
    assert time_to_feasible(ev[:4])["stays_feasible_step"] == 15  # feasible only at the last evaluation


def _cfg(micro_cfg, **onpolicy):
    from methods.core.config import deep_merge, validate_config

    return validate_config(deep_merge(micro_cfg, {
        "constraints": [{"reward": "length", "band": [0, 3]}],
        "l3m": {"steps": 6, "lr": 0.01, "logging_steps": 1, "save_steps": 100},
        "onpolicy": {"batch_size": 8, "sample_prompts": 4, "samples_per_prompt": 2, "max_new_tokens": 12,
                     "max_length": 96, **onpolicy},
        "mm": {"steps": 4, "lr": 0.01, "logging_steps": 1, "beta": 0.1}}))


@pytest.fixture(scope="module")
def task_data(tmp_path_factory, micro_cfg):
    from methods.core.data import build_task_splits

    d = tmp_path_factory.mktemp("task")
    build_task_splits(dict(micro_cfg["data"], n_train=200), d)
    return d


def test_heldout_evaluation_logs_estimates_and_leaves_training_unchanged(tmp_path, micro_cfg, micro_model_dir,
                                                                         task_data):
    from methods.l3m import train

    rec = train(_cfg(micro_cfg, eval_every=4, eval_prompts=8), str(micro_model_dir), str(tmp_path / "ev"),
                str(task_data))
    train(_cfg(micro_cfg), str(micro_model_dir), str(tmp_path / "plain"), str(task_data))
    # the evaluation samples with its own seed inside a forked RNG: the training run is the same
    assert (tmp_path / "ev" / "train_log.jsonl").read_text() == (tmp_path / "plain" / "train_log.jsonl").read_text()
    assert not (tmp_path / "plain" / "eval_log.jsonl").exists()
    ev = [json.loads(x) for x in open(tmp_path / "ev" / "eval_log.jsonl")]
    assert [e["step"] for e in ev] == [0, 4, 6]  # before step 0, every 4 steps, after the last
    for a, b in zip(ev, ev[1:]):
        assert b["elapsed_s"] > a["elapsed_s"] >= 0
    for e in ev:
        cs = [e["C_heldout[length>=0]"], e["C_heldout[length<=3]"]]
        assert all(math.isfinite(c) for c in cs) and 0 < e["heldout_nll"] < 20
        assert e["feasible"] == all(c <= 0 for c in cs)
        # length <= 3 normalised by 3: C = mean length / 3 - 1
        assert e["C_heldout[length<=3]"] == pytest.approx(e["mean_length"] / 3 - 1, rel=1e-5)
    assert rec["heldout"]["prompts"] == 8 and rec["heldout"]["final"] == ev[-1]
    assert rec["heldout"]["first_feasible_step"] in (None, *[e["step"] for e in ev if e["feasible"]])


def test_mm_logs_heldout_estimates(tmp_path, micro_cfg, micro_model_dir, task_data):
    from methods.minimax import train

    rec = train(_cfg(micro_cfg, eval_every=2, eval_prompts=4), str(micro_model_dir), str(tmp_path / "mm"),
                str(task_data))
    ev = [json.loads(x) for x in open(tmp_path / "mm" / "eval_log.jsonl")]
    assert [e["step"] for e in ev] == [0, 2, 4] and rec["heldout"]["every"] == 2
