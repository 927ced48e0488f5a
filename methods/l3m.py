"""L3M: Lagrange Large Language Models (l3m-method.md sections 1-5).

One stage from the initialisation model: no SFT model, no reference model, no KL. Each step
minimises the task NLL plus the relaxed log-barrier of every constraint estimate:

    grad G = grad L + sum_i lambda_i * grad C_i,   lambda_i = mu / (k * max(-C_i, s)),  s = mu^2
    grad C_i = E[(g_i - baseline_i) * grad log pi(y|x)],  g_i = (b_i - r_i) / scale_i  (">=" constraint)

What the policy-gradient estimate estimates (``onpolicy.pg_estimator``; checked by exact enumeration
of every response of a tiny Llama in tests/test_estimators.py):

- ``sequence`` (default): log pi(y|x) is the summed log-probability of the response tokens (and
  EOS), at the sampling temperature, behind the prompt ids it was sampled from. With a baseline
  that does not depend on the sample it multiplies (leave-one-out over the prompt's other samples;
  the EMA of earlier steps; none), the expectation of the estimate is exactly grad C_i.
- ``length_normalized`` (the paper-style form): log pi(y|x) / |y| (|y| = response tokens + EOS).
  Its expectation is grad E[g_i/|y|] - E[baseline] * grad E[1/|y|] with g and |y| held fixed,
  which is not grad C_i: it can point away from it (cosine -0.3 on a flexible policy).

The barrier enters the step with a weight w (``l3m.barrier_weight``): grad L + w * sum_i lambda_i
grad C_i, the gradient of L + w * (1/k) sum_i B_mu(C_i). w = 1 is the paper's G_mu; the default,
``auto``, is 1 / (onpolicy.max_new_tokens + 1). For the log part of the barrier w * B_mu = B_{w mu},
so w only rescales the mu schedule (not the relaxation s = mu^2). Chosen by the ablation in
results/README.md: with w = 1 the barrier gradient hits barrier_max_norm in half the steps and the
bands cost 0.14-0.28 nats/token of task NLL, with w = 1/65 0.08-0.22 less.

The maths lives in small pure functions below (checked against closed forms in the tests); the
loop is plain PyTorch over the shared pieces (sampling, log-probs, rewards).
"""
from __future__ import annotations

import torch

from methods.barrier import multipliers, relaxed_log_barrier
from methods.core.constraints import constraint_scales, ema_update, expand_constraints, pg_baseline, pg_surrogate

# ---------------------------------------------------------------------------------------------
# pure functions
# ---------------------------------------------------------------------------------------------


def mu_at(step: int, mu0: float, mu_min: float, decay: float, every: int) -> float:
    """Exponential decay: mu0 * decay^(step // every), floored at mu_min (decay 1: fixed mu)."""
    return max(mu_min, mu0 * decay ** (step // every))


def mu_decay(c: dict) -> float:
    """The decay factor of the l3m section ``c``: ``mu_decay: auto`` reaches mu_min exactly at the
    last decay inside ``steps`` (mu0 * d^n = mu_min, n = (steps - 1) // mu_every); a number is used
    as given (the config validator rejects one that ends above mu_min, except 1: fixed mu)."""
    if c["mu_decay"] != "auto":
        return float(c["mu_decay"])
    n = (c["steps"] - 1) // c["mu_every"]
    return (c["mu_min"] / c["mu0"]) ** (1.0 / n) if n > 0 and c["mu_min"] < c["mu0"] else 1.0


def mu_schedule_error(c: dict, field: str = "config.l3m") -> str | None:
    """Why the schedule of ``c`` does not end at mu_min within its steps (None when it does)."""
    d = mu_decay(c)
    n = (c["steps"] - 1) // c["mu_every"]
    last = mu_at(c["steps"] - 1, c["mu0"], c["mu_min"], d, c["mu_every"])
    if d == 1.0 or last <= c["mu_min"] * (1 + 1e-9):
        return None
    need = (c["mu_min"] / c["mu0"]) ** (1.0 / n) if n > 0 else None
    fix = (f"use mu_decay <= {need:.6g} (or mu_decay: auto, which computes it)" if need is not None
           else "use more steps or a smaller mu_every")
    return (f"{field}.mu_decay: {d:g} every {c['mu_every']} steps ends at mu = {last:.4g} after {c['steps']} steps, "
            f"not mu_min {c['mu_min']:g}; {fix}, or mu_decay: 1 for a fixed mu")


def barrier_divisor(c: dict, op: dict) -> float:
    """1 / w of ``l3m.barrier_weight``: the barrier surrogate is divided by it (``auto``:
    onpolicy.max_new_tokens + 1; a weight w: 1 / w, so w = 1 leaves the surrogate as it is)."""
    return float(op["max_new_tokens"] + 1) if c["barrier_weight"] == "auto" else 1.0 / float(c["barrier_weight"])


def barrier_value(c: torch.Tensor, mu: float, s: float | None) -> float:
    """(1/k) sum_i B_{mu,s}(C_i)."""
    return relaxed_log_barrier(c.double(), mu, s).mean().item()


def l3m_direction(grad_task: torch.Tensor, grads_c: torch.Tensor, c: torch.Tensor, mu: float,
                  s: float | None = None) -> torch.Tensor:
    """grad L + sum_i lambda_i grad C_i for explicit gradients (used by the toy-problem test)."""
    lam = multipliers(c, mu, s).to(grads_c.dtype)
    return grad_task + (lam.unsqueeze(-1) * grads_c).sum(0)


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------


def train(cfg: dict, init_dir: str, out_dir: str, data_dir: str) -> dict:
    from tqdm.auto import tqdm

    from methods.core.distributed import phase
    from methods.core.onpolicy import OnPolicyRun, clip_and_get

    c, op = cfg["l3m"], cfg["onpolicy"]
    cons = expand_constraints(cfg["constraints"], op["normalize_constraints"], constraint_scales(cfg))
    if not cons:
        raise ValueError("l3m: no constraints; add config.constraints (or run sft for the task alone)")
    run = OnPolicyRun(cfg, "l3m", init_dir, out_dir, data_dir, steps=c["steps"], lr=c["lr"], warmup=c["warmup"],
                      reward_names=[x.reward for x in cons], extra_state={"ema": None})
    state, s_fixed = run.state, c["relax"]
    bar = tqdm(total=c["steps"], initial=state["step"], desc="l3m", mininterval=5)
    mu, lam, decay = c["mu0"], torch.zeros(len(cons)), mu_decay(c)
    while state["step"] < c["steps"]:
        with phase("heldout"):
            run.evaluate_heldout(cons)
        step = state["step"]
        mu = mu_at(step, c["mu0"], c["mu_min"], decay, c["mu_every"])
        s = s_fixed if s_fixed is not None else mu * mu
        batch = run.batch(step)
        with phase("task"):
            task_loss = run.task_loss(batch)  # 1. task NLL on the mini-batch
        with phase("sampling"):
            _, samples, r_by = run.sample_and_score(batch, step)  # 2. samples of the current policy, rewards
        with phase("barrier"):
            # 3. constraint values (k, n), their EMA estimates and the multipliers
            g = torch.stack([con.value(r_by[con.reward]) for con in cons])
            c_batch = run.global_mean(g.mean(-1).detach())  # the estimate over the global batch
            c_prev = state["ema"]  # the EMA of earlier steps: a baseline independent of this batch's samples
            state["ema"] = ema_update(state["ema"], c_batch.cpu(), op["ema"])
            c_hat = state["ema"]
            lam = multipliers(c_hat, mu, s).float()
            run.stats.update(c_batch=c_batch.tolist(), c_hat=c_hat.tolist(), lam=lam.tolist())
            # 4. policy-gradient surrogate for grad C_i
            logp = run.sample_logprob(run.model, samples)
            base = pg_baseline(g, op["baseline"], op["samples_per_prompt"], c_prev)
            barrier_loss = (lam.to(run.device) * pg_surrogate(logp, g, base)).sum() / barrier_divisor(c, op)
        # 5. combined gradient, clipped jointly or each part separately
        run.opt.zero_grad(set_to_none=True)
        if c["clip"] == "joint":
            with phase("task+barrier"):
                (task_loss + barrier_loss).backward()
                run.sync_grads()
                norms = {"grad_norm": torch.nn.utils.clip_grad_norm_(run.params, c["max_grad_norm"]).item()}
        else:
            with phase("task"):
                task_loss.backward()
                run.sync_grads()
                g_task, n_task = clip_and_get(run.params, c["max_grad_norm"])
            run.opt.zero_grad(set_to_none=True)
            with phase("barrier"):
                barrier_loss.backward()
                run.sync_grads()
                g_bar, n_bar = clip_and_get(run.params, c["barrier_max_norm"] or c["max_grad_norm"])
            for p, a, b in zip(run.params, g_task, g_bar):
                p.grad = a + b
            norms = {"grad_norm_task": n_task, "grad_norm_barrier": n_bar}
        with phase("optimiser"):  # the update, the log and the pre-emption check
            run.check_finite(step, {**norms, "task_loss": task_loss.item()})
            run.opt.step()
            run.sched.step()
            state["step"] += 1
            if run.should_log(step, c["logging_steps"]):
                lengths = torch.tensor([float(x["n_tokens"]) for x in samples], dtype=torch.float64)
                rec = {"step": step, "mu": mu, "s": s, "barrier_weight": 1.0 / barrier_divisor(c, op),
                       "task_loss": run.global_mean(task_loss.detach()).item(),
                       "barrier": barrier_value(c_hat, mu, s), "lr": run.sched.get_last_lr()[0],
                       "mean_length": run.global_mean(lengths.mean()).item(),
                       "frac_finished": run.global_mean(torch.tensor([float(x["finished"]) for x in samples], dtype=torch.float64).mean()).item(),
                       **norms}
                for i, con in enumerate(cons):
                    rec[f"C_batch[{con.name}]"] = c_batch[i].item()
                    rec[f"C_hat[{con.name}]"] = c_hat[i].item()
                    rec[f"lambda[{con.name}]"] = lam[i].item()
                for n, r in r_by.items():
                    rec[f"reward[{n}]"] = run.global_mean(r.float().mean()).item()
                run.log(rec)
                bar.set_postfix(loss=f"{rec['task_loss']:.3f}", len=f"{rec['mean_length']:.1f}", mu=f"{mu:.3g}")
            run.maybe_checkpoint(c["save_steps"])
        bar.update(1)
    bar.close()
    run.evaluate_heldout(cons)
    return run.finish(constraints=[con.__dict__ for con in cons], final_C_hat=state["ema"].tolist(),
                      final_mu=mu, final_lambda=lam.tolist(),
                      feasible=run.flag_feasible({con.name: v for con, v in zip(cons, state["ema"].tolist())}))
