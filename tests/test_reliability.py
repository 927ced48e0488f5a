"""Reliability: pre-emption and kills resume bit-identically, outputs are atomic, runs are
deterministic, bad input stops with a clear message or is counted and skipped, never silently."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from .conftest import REPO

L3M_STEPS = 24


def _l3m_cfg(micro_cfg, **l3m):
    from methods.core.config import deep_merge, validate_config

    return validate_config(deep_merge(micro_cfg, {
        "constraints": [{"reward": "length", "band": [0, 3]}],
        "l3m": {"steps": L3M_STEPS, "lr": 0.01, "mu_every": 4, "logging_steps": 1, "save_steps": 4, **l3m},
        "onpolicy": {"batch_size": 8, "sample_prompts": 4, "samples_per_prompt": 2, "max_new_tokens": 12,
                     "max_length": 96}}))


@pytest.fixture(scope="module")
def l3m_setup(tmp_path_factory, micro_cfg, micro_model_dir):
    from methods.core.data import build_task_splits

    root = tmp_path_factory.mktemp("resume")
    build_task_splits(dict(micro_cfg["data"], n_train=200), root / "data")
    cfg_path = root / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(_l3m_cfg(micro_cfg)))
    return root, cfg_path, micro_model_dir


def _train_cmd(cfg_path, init, data, out):
    return [sys.executable, "-m", "methods.cli", "train", "--config", str(cfg_path), "--method", "l3m",
            "--init", str(init), "--data", str(data), "--out", str(out)]


def _env():
    return dict(os.environ, L3M_THREADS="1", PYTHONPATH=str(REPO))


def _run_l3m(setup, out):
    root, cfg_path, init = setup
    p = subprocess.run(_train_cmd(cfg_path, init, root / "data", out), env=_env(), capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def _logged_steps(work: Path) -> int:
    log = work / "train_log.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def _final(out: Path):
    from safetensors.torch import load_file

    return ((out / "train_log.jsonl").read_text(), load_file(out / "model.safetensors"),
            {k: v for k, v in json.loads((out / "l3m_run.json").read_text()).items()
             if k in ("steps", "final_C_hat", "final_lambda", "final_mu", "feasible")})


@pytest.fixture(scope="module")
def uninterrupted(l3m_setup):
    out = l3m_setup[0] / "straight"
    _run_l3m(l3m_setup, out)
    return _final(out)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_l3m_run_resumes_bit_identically(l3m_setup, uninterrupted, sig):
    root, cfg_path, init = l3m_setup
    out = root / f"killed_{sig.name}"
    work = Path(str(out) + ".work")
    proc = subprocess.Popen(_train_cmd(cfg_path, init, root / "data", out), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while _logged_steps(work) < 10 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "pre-empted" in err, err[-2000:]
        stopped = torch.load(work / "state.pt", weights_only=False)["state"]["step"]
        assert 10 <= stopped < L3M_STEPS  # checkpointed at the step boundary after the signal, not the last period
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # no complete-looking output
    assert (work / "state.pt").exists()
    _run_l3m(l3m_setup, out)  # the same command again resumes
    log, weights, rec = _final(out)
    ref_log, ref_weights, ref_rec = uninterrupted
    assert log == ref_log  # every logged number, bit for bit
    assert rec == ref_rec
    assert weights.keys() == ref_weights.keys() and all(torch.equal(weights[k], ref_weights[k]) for k in weights)
    assert not work.exists()


def test_same_seed_gives_identical_metrics_files(tmp_path, micro_cfg, micro_model_dir):
    """The evaluate rule's command twice: samples, perplexity, lengths and reward files byte-identical."""
    from methods.core.data import build_task_splits

    build_task_splits(micro_cfg["data"], tmp_path / "data")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(micro_cfg))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "evaluation.cli", "evaluate", "--config", str(cfg_path), "--model",
           str(micro_model_dir), "--data", str(tmp_path / "data"), "--samples", str(out / "samples.jsonl"),
           "--out", str(out / "metrics"), "--rewards", "length"]
    snapshots = []
    for _ in range(2):  # the same rule twice, at the same paths
        p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        snapshots.append({f.relative_to(out): f.read_bytes() for f in out.rglob("*") if f.is_file()})
        import shutil

        shutil.rmtree(out)
    assert len(snapshots[0]) >= 4 and snapshots[0].keys() == snapshots[1].keys()
    for f, content in snapshots[0].items():
        assert content == snapshots[1][f], f


def test_sigterm_stops_a_trl_trainer_with_a_checkpoint_and_the_rerun_resumes(tmp_path, micro_cfg, micro_model_dir,
                                                                               monkeypatch):
    from methods.core import preempt
    from methods.core.config import deep_merge, validate_config
    from methods.core.data import build_task_splits
    from methods.sft import train

    build_task_splits(dict(micro_cfg["data"], n_train=80), tmp_path / "data")
    cfg = validate_config(deep_merge(micro_cfg, {"sft": {"max_steps": 8, "save_steps": 100, "logging_steps": 1}}))
    calls = {"n": 0}

    def signal_at_step_3():
        calls["n"] += 1
        return calls["n"] >= 3

    monkeypatch.setattr(preempt, "requested", signal_at_step_3)
    out = tmp_path / "sft"
    with pytest.raises(preempt.Preempted, match="step 3"):
        train(cfg, str(micro_model_dir), str(out), str(tmp_path / "data"))
    assert not out.exists() and (tmp_path / "sft.work" / "checkpoint-3").is_dir()
    monkeypatch.setattr(preempt, "requested", lambda: False)
    rec = train(cfg, str(micro_model_dir), str(out), str(tmp_path / "data"))
    assert rec["steps"] == 8 and rec["resumed_from"].endswith("checkpoint-3")


def test_non_finite_loss_in_a_trl_trainer_stops_with_a_message():
    from methods.core.preempt import guard_callbacks

    _, finite = guard_callbacks()
    args = type("A", (), {"output_dir": "/x/sft.work"})()
    state = type("S", (), {"global_step": 12})()
    finite.on_log(args, state, None, logs={"loss": 2.5, "grad_norm": 1.0})
    with pytest.raises(FloatingPointError, match=r"step 12: non-finite \{'loss': nan\}.*kept in /x/sft.work"):
        finite.on_log(args, state, None, logs={"loss": float("nan"), "grad_norm": 1.0})


def test_nan_reward_stops_l3m_naming_the_sample_and_keeps_the_checkpoint(tmp_path, micro_cfg, micro_model_dir,
                                                                           monkeypatch):
    import methods.core.rewards as rewards
    from methods.core.data import build_task_splits
    from methods.l3m import train

    build_task_splits(dict(micro_cfg["data"], n_train=80), tmp_path / "data")
    real = rewards.build_reward
    calls = {"n": 0}

    class NanOnStep6(rewards.Reward):
        name = "length"

        def __init__(self, inner):
            self.inner = inner

        def score(self, prompts, responses, response_ids=None):
            calls["n"] += 1
            s = self.inner.score(prompts, responses, response_ids)
            if calls["n"] == 6:
                s[5] = float("nan")
            return s

    monkeypatch.setattr(rewards, "build_reward", lambda *a, **k: NanOnStep6(real(*a, **k)))
    out = tmp_path / "l3m"
    with pytest.raises(FloatingPointError, match=r"l3m step 5: reward 'length' returned nan for sample 5 "
                                                 r"\(prompt .*checkpoint is kept"):
        train(_l3m_cfg(micro_cfg), str(micro_model_dir), str(out), str(tmp_path / "data"))
    assert not out.exists()
    assert torch.load(tmp_path / "l3m.work" / "state.pt", weights_only=False)["state"]["step"] == 4


def test_infeasible_constraint_finishes_and_is_flagged(tmp_path, micro_cfg, micro_model_dir, capsys):
    from methods.core.config import deep_merge
    from methods.core.data import build_task_splits
    from methods.l3m import train

    build_task_splits(dict(micro_cfg["data"], n_train=80), tmp_path / "data")
    cfg = _l3m_cfg(micro_cfg, steps=6)
    cfg = deep_merge(cfg, {"constraints": [{"reward": "length", "bound": 100, "direction": ">="}]})  # > 12 new tokens
    rec = train(cfg, str(micro_model_dir), str(tmp_path / "l3m"), str(tmp_path / "data"))
    assert rec["steps"] == 6 and rec["feasible"] is False and rec["final_C_hat"][0] > 0
    assert "flagged feasible: false" in capsys.readouterr().out
    saved = json.loads((tmp_path / "l3m" / "l3m_run.json").read_text())
    assert saved["feasible"] is False


def test_missing_or_corrupt_model_folder_fails_before_training(tmp_path, micro_cfg, micro_model_dir):
    import shutil

    from methods.core.models import load_model

    with pytest.raises(FileNotFoundError, match="missing or incomplete.*rerun the rule"):
        load_model(tmp_path / "nope")
    bad = tmp_path / "corrupt"
    shutil.copytree(micro_model_dir, bad)
    (bad / "model.safetensors").write_bytes(b"\0" * 100)  # truncated weights
    with pytest.raises(RuntimeError, match="corrupt or incomplete.*delete it and rerun"):
        load_model(bad)


def test_empty_responses_are_scored_and_add_no_gradient_terms(micro_tok):
    from methods.core.onpolicy import seq_logprob, sequences
    from methods.core.rewards import LengthReward

    assert LengthReward(tokenizer=micro_tok)(["hi", "yo"], ["", "a b"]).tolist()[0] == 0
    samples = [{"prompt_ids": [5, 6, 7], "response_ids": [], "finished": False},
               {"prompt_ids": [5, 6], "response_ids": [], "finished": True}]
    seqs, starts = sequences(micro_tok, samples, ctx=32)
    assert len(seqs[0]) - starts[0] == 0 and len(seqs[1]) - starts[1] == 1  # an empty finished reply still chose to stop (EOS)
    import torch as t

    from methods.core.models import micro_llama
    m = micro_llama(micro_tok, {"hidden_size": 16, "intermediate_size": 32, "num_layers": 1, "num_heads": 2,
                                "max_length": 32})
    lp = seq_logprob(m, seqs, starts, micro_tok.pad_token_id, True, "cpu")
    assert lp[0].item() == 0 and t.isfinite(lp).all()


def _write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def test_bad_jsonl_rows_are_rejected_or_counted_and_skipped(tmp_path):
    from methods.core.data import build_task_splits

    good = [json.dumps({"id": f"c{i}", "prompt": f"hello number {i}", "response": f"hi there {i}"}) for i in range(40)]
    _write_lines(tmp_path / "local" / "train.jsonl",
                 good[:10] + ['{"prompt": "broken', "", json.dumps({"prompt": "no reply", "response": ""}), "[1, 2]"]
                 + good[10:])
    cfg = {"source": "hf", "hf": {"path": str(tmp_path / "local"), "bad_rows": "error"}, "context_turns": 1,
           "max_chars": 300, "n_train": 0, "n_val": 5, "n_test": 5, "split_seed": 0}
    with pytest.raises(ValueError, match=r"train.jsonl:11: malformed jsonl row \(not JSON: .*column 19\); .*bad_rows: skip"):
        build_task_splits(cfg, tmp_path / "out_err")
    assert not (tmp_path / "out_err" / "train.jsonl").exists()
    card = build_task_splits(dict(cfg, hf=dict(cfg["hf"], bad_rows="skip")), tmp_path / "out")
    bad = card["bad_rows"]
    assert bad["n_malformed"] == 2 and bad["n_empty"] == 2 and bad["n_kept"] == 40
    assert [x.rsplit(":", 1)[1] for x in bad["malformed"]] == ["11", "14"]
    assert [x.rsplit(":", 1)[1] for x in bad["empty"]] == ["12", "13"]  # a blank line; an empty response
    assert sum(card["counts"].values()) == 40
    _write_lines(tmp_path / "local2" / "train.jsonl", good[:10] + [json.dumps({"prompt": "x", "response": " "})])
    with pytest.raises(ValueError, match=r"local2/train.jsonl:11 has none of the fields messages or prompt/response"):
        build_task_splits(dict(cfg, hf=dict(cfg["hf"], path=str(tmp_path / "local2"))), tmp_path / "out2")


def test_bad_data_names_its_file_line_and_fix(tmp_path):
    """Non-UTF-8 bytes, a number where text belongs, an empty file and an over-long prompt: each is
    named by file and line (or counted in the data card), never a raw Python error."""
    from methods.core.data import build_task_splits

    good = [json.dumps({"id": f"c{i}", "prompt": f"hello number {i}", "response": f"hi there {i}"}) for i in range(30)]
    cfg = {"source": "hf", "hf": {"bad_rows": "error"}, "context_turns": 1, "max_chars": 300, "n_train": 0,
           "n_val": 5, "n_test": 5, "split_seed": 0}

    def build(name, lines, policy="error", raw=None):
        f = tmp_path / name / "train.jsonl"
        _write_lines(f, lines)
        if raw is not None:
            f.write_bytes(f.read_bytes() + raw)
        return build_task_splits(dict(cfg, hf={"path": str(f.parent), "bad_rows": policy}), tmp_path / f"{name}_out")

    latin1 = json.dumps({"prompt": "caf\u00e9", "response": "ok"}).replace("\\u00e9", "\xe9").encode("latin-1") + b"\n"
    with pytest.raises(ValueError, match=r"utf/train.jsonl:31: malformed jsonl row \(not UTF-8 text: byte 0xe9 "
                                         r"at column \d+\); fix the file or set bad_rows: skip"):
        build("utf", good, raw=latin1)
    card = build("utf_skip", good, "skip", raw=latin1)  # skip skips it, and counts it
    assert [x.rsplit(":", 1)[1] for x in card["bad_rows"]["malformed"]] == ["31"] and card["bad_rows"]["n_kept"] == 30
    with pytest.raises(ValueError, match=r"num/train.jsonl:3: field 'prompt' holds '123' \(int\), expected text; "
                                         r"fix the data or set bad_rows: skip"):
        build("num", good[:2] + [json.dumps({"prompt": 123, "response": "hi"})] + good[2:])
    assert build("num_skip", good[:2] + [json.dumps({"prompt": 123, "response": "hi"})] + good[2:],
                 "skip")["bad_rows"]["n_malformed"] == 1
    with pytest.raises(ValueError, match=r"data.hf.path: .*empty holds no usable rows \(0 malformed, 1 empty\); "
                                         r"point data.hf.path at"):
        build("empty", [""], "skip")
    long = good + [json.dumps({"prompt": "x" * 100_000, "response": "hi"})]
    card = build("long", long)
    assert card["pairs_left_out"]["too_long"] == 1 and sum(card["counts"].values()) == 30
    with pytest.raises(ValueError, match=r"data.n_test: 50 held-out conversations asked for, but .* has 30 usable "
                                         r"conversations in all \(31 read; .*1 over data.max_chars = 300\); lower data.n_test"):
        build_task_splits(dict(cfg, n_test=50, hf={"path": str(tmp_path / "long"), "bad_rows": "error"}),
                          tmp_path / "long_out2")


def test_validator_never_crashes_on_fuzzed_configs(micro_cfg):
    """Whatever YAML can express, the validator answers with a ConfigError message or a config."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from methods.core.config import ConfigError, deep_merge, validate_config

    scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8)
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=8), inner, max_size=3), max_leaves=8)
    keys = st.sampled_from(sorted(micro_cfg)) | st.text(max_size=8)
    sections = st.sampled_from(["data", "l3m", "rewards", "experiments", "constraints", "generation", "mm", "sft",
                                "base_model", "hardware", "mixture", "two_reward", "band", "weights", "points"])

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(top=st.dictionaries(keys, values, max_size=3),
           nested=st.dictionaries(sections, st.dictionaries(st.text(max_size=10) | sections, values, max_size=3),
                                  max_size=2),
           whole=values)
    def check(top, nested, whole):
        for cfg in (whole, top, deep_merge(micro_cfg, top), deep_merge(micro_cfg, nested)):
            try:
                validate_config(cfg, check_paths=False)
            except ConfigError as e:
                assert str(e).strip()

    check()
