"""L3M's maths against closed forms, and a few real steps on a micro model."""
import json
import math

import torch

from methods.barrier import multipliers, relaxed_log_barrier
from methods.core.constraints import ema_update, expand_constraints, loo_baseline, pg_surrogate
from methods.l3m import l3m_direction, mu_at


def test_band_expands_to_two_normalised_constraints():
    cons = expand_constraints([{"reward": "length", "band": [8, 16]}, {"reward": "helpful", "bound": -0.5}])
    assert [(c.bound, c.direction, c.scale) for c in cons] == [(8, ">=", 8), (16, "<=", 16), (-0.5, ">=", 0.5)]
    r = torch.tensor([4.0, 12.0, 20.0])
    assert cons[0].value(r).tolist() == [0.5, -0.5, -1.5]  # (8 - r) / 8: only 4 tokens violates
    assert cons[1].value(r).tolist() == [-0.75, -0.25, 0.25]  # (r - 16) / 16: only 20 violates
    raw = expand_constraints([{"reward": "length", "band": [8, 16]}], normalize=False)
    assert raw[1].value(r).tolist() == [-12.0, -4.0, 4.0]


def test_mu_schedule():
    assert mu_at(0, 1.0, 0.01, 0.5, 10) == 1.0
    assert mu_at(9, 1.0, 0.01, 0.5, 10) == 1.0
    assert mu_at(10, 1.0, 0.01, 0.5, 10) == 0.5
    assert mu_at(35, 1.0, 0.01, 0.5, 10) == 0.125
    assert mu_at(10_000, 1.0, 0.01, 0.5, 10) == 0.01  # floored
    assert mu_at(500, 0.3, 0.01, 1.0, 10) == 0.3  # decay 1: fixed mu


def test_ema():
    a = ema_update(None, torch.tensor([2.0]), 0.9)
    assert a.item() == 2.0
    assert torch.isclose(ema_update(a, torch.tensor([0.0]), 0.9), torch.tensor([1.8]))
    assert ema_update(a, torch.tensor([5.0]), 0.0).item() == 5.0  # off


def test_multiplier_limits():
    # active constraint (C >= -mu^2): 1/(k mu); inactive: -mu/(k C) -> 0 as mu -> 0
    for mu in (1.0, 0.1, 0.01):
        lam = multipliers([0.3, -0.5], mu)
        assert math.isclose(lam[0].item(), 1 / (2 * mu), rel_tol=1e-12)
        assert math.isclose(lam[1].item(), mu / (2 * max(0.5, mu * mu)), rel_tol=1e-12)
    assert multipliers([-0.5], 1e-4)[0] < 1e-3


def test_barrier_convex_increasing_and_tends_to_indicator():
    z = torch.linspace(-3, 1, 801, dtype=torch.float64)
    for mu in (1.0, 0.2, 0.05):
        b = relaxed_log_barrier(z, mu)
        d = b.diff()
        assert (d >= -1e-12).all()  # increasing
        assert (d.diff() >= -1e-9).all()  # convex
    # feasible points -> 0, infeasible -> +inf as mu -> 0
    assert abs(relaxed_log_barrier(-0.5, 1e-4)) < 1e-3
    assert relaxed_log_barrier(0.1, 1e-4) > 1e3 and relaxed_log_barrier(-1e-3, 1e-6) < 1e-4


def test_toy_kkt_point_is_reached_as_mu_decreases():
    """min (theta-2)^2 s.t. theta - 1 <= 0: theta* = 1, lambda* = 2 (KKT)."""
    theta = torch.tensor([0.0], dtype=torch.float64)
    for mu in [1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001]:
        for _ in range(2000):  # gradient descent on G_mu to (near) stationarity; the barrier's
            c = theta - 1.0  # curvature near the central path is ~4/mu, so the step is 0.1*mu
            d = l3m_direction(2 * (theta - 2), torch.ones(1, 1, dtype=torch.float64), c, mu)
            theta = theta - 0.1 * mu * d
        lam = multipliers(theta - 1.0, mu)
    assert abs(theta.item() - 1.0) < 2e-3
    assert abs(lam.item() - 2.0) < 2e-2


def test_loo_baseline_closed_form():
    v = torch.tensor([[1.0, 3.0, 10.0, 20.0]])
    assert loo_baseline(v, 2).tolist() == [[3.0, 1.0, 20.0, 10.0]]
    assert torch.allclose(loo_baseline(v, 1), torch.tensor([[11.0, 31 / 3, 8.0, 14 / 3]]))


def test_policy_gradient_estimator_is_unbiased():
    """On a categorical policy softmax(theta) over 5 outcomes, the average of the estimator matches the
    exact gradient of E[g(y)] (grad C = sum_y g(y) grad p(y))."""
    torch.manual_seed(0)
    theta = torch.tensor([0.3, -0.2, 0.8, 0.0, -1.0], requires_grad=True)
    g = torch.tensor([[2.0, -1.0, 0.5, 3.0, -2.0]])  # constraint value of each outcome
    exact = torch.autograd.grad((torch.softmax(theta, 0) * g[0]).sum(), theta)[0]
    est, n_rep, group, prompts = torch.zeros(5), 4000, 2, 8
    for _ in range(n_rep):
        y = torch.multinomial(torch.softmax(theta.detach(), 0), prompts * group, replacement=True)
        logp = torch.log_softmax(theta, 0)[y]
        vals = g[:, y]
        surr = pg_surrogate(logp, vals, loo_baseline(vals, group))
        est += torch.autograd.grad(surr.sum(), theta)[0]
    est /= n_rep
    assert torch.allclose(est, exact, atol=0.02), (est, exact)


def test_l3m_micro_run_moves_length_toward_band(tmp_path, micro_cfg, micro_model_dir):
    """Real steps on a micro model: weights change, the log has every field, the constraint
    estimate of an active upper bound drops."""
    from methods.core.config import deep_merge, validate_config
    from methods.core.data import build_task_splits
    from methods.l3m import train

    data = tmp_path / "data"
    build_task_splits(dict(micro_cfg["data"], n_train=200), data)
    cfg = validate_config(deep_merge(micro_cfg, {
        "constraints": [{"reward": "length", "band": [0, 3]}],
        "l3m": {"steps": 30, "lr": 0.01, "mu0": 1.0, "mu_decay": "auto", "mu_every": 5, "logging_steps": 1,
                "save_steps": 10},
        "onpolicy": {"batch_size": 8, "sample_prompts": 8, "samples_per_prompt": 2, "max_new_tokens": 24,
                     "max_length": 96}}))
    rec = train(cfg, str(micro_model_dir), str(tmp_path / "l3m"), str(data))
    log = [json.loads(x) for x in open(tmp_path / "l3m" / "train_log.jsonl")]
    assert rec["steps"] == 30 and len(log) == 30
    for key in ("task_loss", "mu", "barrier", "mean_length", "C_hat[length<=3]", "lambda[length<=3]"):
        assert all(math.isfinite(r[key]) for r in log), key
    assert log[-1]["mu"] < log[0]["mu"]
    early = sum(r["mean_length"] for r in log[:5]) / 5
    late = sum(r["mean_length"] for r in log[-5:]) / 5
    assert late < early  # shorter responses (the band is [0, 3] tokens)
    from methods.core.models import load_model

    new, _ = load_model(tmp_path / "l3m")
    old, _ = load_model(micro_model_dir)
    assert any(not torch.equal(a, b) for a, b in zip(new.state_dict().values(), old.state_dict().values()))
