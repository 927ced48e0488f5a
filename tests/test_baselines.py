"""The baselines (MM, mixture RLHF, DPO, CPO) and the reward models: closed forms, and a few real
optimisation steps on a micro model that must move the targeted quantity the right way."""
import json
import math

import pytest
import torch

from methods.cpo import cpo_loss, margins
from methods.core.constraints import dual_ascent
from methods.minimax import lagrangian_cost


def test_dual_ascent_is_projected():
    lam = dual_ascent(torch.tensor([0.0, 1.0, 0.2]), torch.tensor([0.5, -0.3, -1.0]), lr=2.0)
    assert lam.tolist() == pytest.approx([1.0, 0.4, 0.0])  # violated grows, satisfied shrinks, floored at 0


def test_lagrangian_cost_closed_form():
    g = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    cost = lagrangian_cost(g, torch.tensor([2.0, 4.0]), torch.tensor([0.1, 0.3]), beta=0.5)
    assert cost.tolist() == pytest.approx([2 * 1 + 4 * 0.5 + 0.05, 2 * -1 + 0 + 0.15])


def test_cpo_loss_closed_form_and_gradient_flows():
    lp_w = torch.tensor([-1.0, -2.0], requires_grad=True)
    lp_l = torch.tensor([-1.5, -1.0], requires_grad=True)
    m = margins(lp_w, lp_l, torch.tensor([-1.2, -2.0]), torch.tensor([-1.2, -1.5]))
    assert m.tolist() == pytest.approx([0.5, -0.5])
    loss, dpo, viol = cpo_loss(m, m, beta=2.0, tau=0.25, lam=3.0)
    expect_dpo = -(math.log(1 / (1 + math.exp(-1.0))) + math.log(1 / (1 + math.exp(1.0)))) / 2
    assert dpo.item() == pytest.approx(expect_dpo) and viol.item() == pytest.approx(0.25)
    assert loss.item() == pytest.approx(expect_dpo + 3.0 * 0.25)
    loss.backward()  # through the policy's log-probabilities: the constraint pushes winners up
    assert lp_w.grad is not None and (lp_w.grad < 0).all() and (lp_l.grad > 0).all()


@pytest.fixture(scope="module")
def micro_data(tmp_path_factory, micro_cfg):
    from methods.core.data import build_contrast_pairs, build_preferences, build_task_splits

    d = tmp_path_factory.mktemp("data")
    build_task_splits(dict(micro_cfg["data"], n_train=200), d / "task")
    build_preferences(micro_cfg["preferences"], d / "preferences")
    build_contrast_pairs(micro_cfg["contrast"], d / "task", d / "contrast")
    return d


def _cfg(micro_cfg, tmp_path, **over):
    from methods.core.config import deep_merge, validate_config

    return validate_config(deep_merge(micro_cfg, {"name": f"t{abs(hash(str(tmp_path))) % 10**8}", **over}))


def _changed(a_dir, b_dir):
    from methods.core.models import load_model

    a, _ = load_model(a_dir)
    b, _ = load_model(b_dir)
    return any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_mm_lambda_rises_while_violated(tmp_path, micro_cfg, micro_model_dir, micro_data):
    from methods.minimax import train

    cfg = _cfg(micro_cfg, tmp_path, constraints=[{"reward": "length", "bound": 1, "direction": "<="}],
               mm={"steps": 6, "lr": 0.01, "dual_lr": 0.5, "logging_steps": 1, "beta": 0.1},
               onpolicy={"sample_prompts": 4, "samples_per_prompt": 2, "max_new_tokens": 12, "batch_size": 8})
    rec = train(cfg, str(micro_model_dir), str(tmp_path / "mm"), str(micro_data / "task"))
    log = [json.loads(x) for x in open(tmp_path / "mm" / "train_log.jsonl")]
    lam = [r["lambda[length<=1]"] for r in log]
    assert len(log) == 6 and lam[0] == 0.0
    for r, a, b in zip(log, lam, lam[1:]):  # a violated constraint (C > 0) raises lambda by dual_lr * C
        assert r["C_batch[length<=1]"] > 0 and b == pytest.approx(a + 0.5 * r["C_batch[length<=1]"], rel=1e-5)
    assert all(math.isfinite(r["kl"]) for r in log) and rec["final_lambda"][0] > lam[-1]
    assert _changed(tmp_path / "mm", micro_model_dir)


def test_mixture_raises_the_mixed_reward(tmp_path, micro_cfg, micro_model_dir, micro_data):
    """RLOO on -length (a negative weight penalises a reward): the mixed reward goes up."""
    from methods.mixture import train

    cfg = _cfg(micro_cfg, tmp_path, mixture={"rewards": ["length", "length"], "weights": [[-1.0, 0.0]], "steps": 12,
                                             "lr": 0.02, "beta": 0.0, "prompts_per_step": 4, "samples_per_prompt": 4,
                                             "max_new_tokens": 16, "logging_steps": 1})
    rec = train(cfg, str(micro_model_dir), str(tmp_path / "mix"), str(micro_data / "task"))
    rewards = [h["reward"] for h in rec["log_history"] if "reward" in h]
    assert len(rewards) >= 10 and rec["trainer"] == "trl.RLOOTrainer"
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3  # shorter responses: -length up
    assert _changed(tmp_path / "mix", micro_model_dir)


def _mean_margin(policy_dir, ref_dir, pairs):
    """Mean DPO margin (summed log-ratios, TRL's convention) of ``pairs`` under a policy against a reference."""
    from methods.core.models import load_model
    from methods.cpo import pair_logps

    out = []
    for d in (policy_dir, ref_dir):
        model, tok = load_model(d)
        with torch.no_grad():
            out += pair_logps(model, tok, pairs, 96, "cpu")
    return margins(*out).mean().item()


def test_dpo_raises_the_margin(tmp_path, micro_cfg, micro_model_dir, micro_data):
    from methods.core.io import read_jsonl
    from methods.dpo import train

    cfg = _cfg(micro_cfg, tmp_path, dpo={"pairs": ["contrast"], "max_steps": 15, "lr": 0.003, "batch_size": 8,
                                         "logging_steps": 1})
    rec = train(cfg, str(micro_model_dir), str(tmp_path / "dpo"), str(micro_data / "task"))
    assert rec["steps"] == 15 and rec["n_pairs"] == 120
    pairs = read_jsonl(micro_data / "contrast" / "train.jsonl")
    assert _mean_margin(micro_model_dir, micro_model_dir, pairs) == 0.0
    assert _mean_margin(tmp_path / "dpo", micro_model_dir, pairs) > 0.01  # chosen pulled above rejected


def test_cpo_lowers_the_violation_with_nonnegative_lambda(tmp_path, micro_cfg, micro_model_dir, micro_data):
    from methods.cpo import train

    cfg = _cfg(micro_cfg, tmp_path, cpo={"steps": 12, "lr": 0.01, "tau": 0.2, "dual_lr": 2.0, "batch_size": 8,
                                         "logging_steps": 1})
    train(cfg, str(micro_model_dir), str(tmp_path / "cpo"), str(micro_data / "task"))
    log = [json.loads(x) for x in open(tmp_path / "cpo" / "train_log.jsonl")]
    assert log[0]["violation"] == pytest.approx(0.2, abs=1e-4)  # margin 0 at the start
    assert all(r["lambda"] >= 0 for r in log) and max(r["lambda"] for r in log) > 0
    assert sum(r["violation"] for r in log[-3:]) / 3 < log[0]["violation"] - 0.05


def test_reward_model_trains_and_truncates(tmp_path, micro_cfg, micro_model_dir, micro_data):
    from methods import reward_model
    from methods.core.models import load_tokenizer
    from methods.core.rewards import HFClassifierReward, rm_encode

    cfg = _cfg(micro_cfg, tmp_path, reward_model={"epochs": 1, "max_pairs": 64, "batch_size": 16, "lr": 0.003})
    rec = reward_model.train(cfg, "coherence", str(micro_model_dir), str(micro_data / "contrast"),
                             str(micro_data / "task" / "val.jsonl"), str(tmp_path / "rm"))
    assert 0 <= rec["heldout"]["accuracy"] <= 1 and rec["heldout"]["n"] == 16 and rec["steps"] == 4
    norm = json.loads((tmp_path / "rm" / "reward_norm.json").read_text())
    assert norm["std"] > 0 and norm["n"] == 16
    tok = load_tokenizer(micro_model_dir)
    long = "word " * 2000
    ids = rm_encode(tok, long, "the end", 96)
    assert len(ids) == 96 and ids[-len(rm_encode(tok, "x", "the end", 96)) + 3:] == \
        rm_encode(tok, "x", "the end", 96)[3:]  # the response end survives, the oldest context goes
    rm = HFClassifierReward("coherence", str(tmp_path / "rm"), max_length=10_000)
    assert rm.max_length == 96  # capped at the model's context
    s = rm([long, "hi"], [long, "hello"])
    assert s.shape == (2,) and torch.isfinite(s).all() and rm.normalized


def _scalars(model_dir):
    """Every TensorBoard scalar tag in a model folder -> its values, read by tensorboard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in (model_dir / "tensorboard").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out[tag] = [e.value for e in acc.Scalars(tag)]
    return out


def test_live_tracking_writes_tensorboard_events_only_when_asked(tmp_path, micro_cfg, micro_model_dir, micro_data):
    """logging.report_to: tensorboard: a TRL trainer (DPO) and an on-policy one (L3M) write the scalars
    they log per step; with the default (none) no events are written."""
    from methods import dpo, l3m

    track = {"logging": {"report_to": "tensorboard"}}
    dpo_over = {"dpo": {"pairs": ["contrast"], "max_steps": 3, "batch_size": 8, "logging_steps": 1}}
    dpo.train(_cfg(micro_cfg, tmp_path, **dpo_over, **track), str(micro_model_dir), str(tmp_path / "dpo"),
              str(micro_data / "task"))
    tags = _scalars(tmp_path / "dpo")
    assert len(tags["train/loss"]) == 3 and all(math.isfinite(v) for v in tags["train/loss"])
    l3m_over = {"constraints": [{"reward": "length", "band": [0, 3]}], "l3m": {"steps": 3, "logging_steps": 1},
                "onpolicy": {"batch_size": 8, "sample_prompts": 4, "samples_per_prompt": 2, "max_new_tokens": 12}}
    l3m.train(_cfg(micro_cfg, tmp_path, **l3m_over, **track), str(micro_model_dir), str(tmp_path / "l3m"),
              str(micro_data / "task"))
    log = [json.loads(x) for x in open(tmp_path / "l3m" / "train_log.jsonl")]
    tags = _scalars(tmp_path / "l3m")
    assert tags["C_hat[length<=3]"] == pytest.approx([r["C_hat[length<=3]"] for r in log], rel=1e-6)
    assert tags["mu"] == pytest.approx([r["mu"] for r in log])
    l3m.train(_cfg(micro_cfg, tmp_path, **l3m_over), str(micro_model_dir), str(tmp_path / "plain"),
              str(micro_data / "task"))
    assert not (tmp_path / "plain" / "tensorboard").exists()
