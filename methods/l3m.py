"""L3M: Lagrange Large Language Models (l3m-method.md sections 1-5).

One stage from the initialisation model: no SFT model, no reference model, no KL. Each step
minimises the task NLL plus the relaxed log-barrier of every constraint estimate:

    grad G = grad L + sum_i lambda_i * grad C_i,   lambda_i = mu / (k * max(-C_i, s)),  s = mu^2
    grad C_i = E[(g_i - baseline_i) * grad log pi(y|x)],  g_i = (b_i - r_i) / scale_i  (">=" constraint)

The maths lives in small pure functions below (checked against closed forms in the tests); the
loop is plain PyTorch over the shared pieces (sampling, log-probs, rewards).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.barrier import multipliers, relaxed_log_barrier

# ---------------------------------------------------------------------------------------------
# pure functions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Constraint:
    """r (reward ``reward``) must satisfy ``r >= bound`` (direction ">=") or ``r <= bound`` ("<=") on average.

    ``scale`` divides the constraint value so that one mu schedule means the same for every
    constraint (|bound| by default, l3m-method.md section 3)."""

    name: str
    reward: str
    bound: float
    direction: str
    scale: float = 1.0

    def value(self, r: torch.Tensor) -> torch.Tensor:
        """Per-sample constraint value g: <= 0 when the sample satisfies the constraint."""
        g = (self.bound - r) if self.direction == ">=" else (r - self.bound)
        return g / self.scale


def expand_constraints(specs: list[dict], normalize: bool = True, scales: dict | None = None) -> list[Constraint]:
    """Config constraints -> Constraint objects; a band [lo, hi] becomes r >= lo and r <= hi.

    Normalised, a constraint is divided by |bound| unless ``scales`` gives its reward a fixed scale
    (rewards already in reference-std units, whose bounds may be 0)."""
    out = []
    for spec in specs:
        pieces = ([(spec["band"][0], ">="), (spec["band"][1], "<=")] if "band" in spec
                  else [(spec["bound"], spec.get("direction", ">="))])
        for bound, direction in pieces:
            fixed = (scales or {}).get(spec["reward"])
            scale = (fixed if fixed is not None else abs(bound) if bound != 0 else 1.0) if normalize else 1.0
            name = f"{spec['reward']}{direction}{bound:g}"
            out.append(Constraint(name, spec["reward"], float(bound), direction, float(scale)))
    return out


def mu_at(step: int, mu0: float, mu_min: float, decay: float, every: int) -> float:
    """Exponential decay: mu0 * decay^(step // every), floored at mu_min (decay 1: fixed mu)."""
    return max(mu_min, mu0 * decay ** (step // every))


def ema_update(prev: torch.Tensor | None, batch: torch.Tensor, ema: float) -> torch.Tensor:
    """Exponential moving average of the constraint estimates; the first batch initialises it."""
    return batch.clone() if prev is None or ema == 0 else ema * prev + (1 - ema) * batch


def loo_baseline(values: torch.Tensor, group: int) -> torch.Tensor:
    """Leave-one-out mean over the other samples of the same prompt (``group`` samples each).

    values: (k, n) with n = prompts * group, samples of one prompt adjacent. With group 1 the
    leave-one-out mean runs over the whole batch instead."""
    k, n = values.shape
    if group > 1:
        v = values.view(k, n // group, group)
        return ((v.sum(-1, keepdim=True) - v) / (group - 1)).view(k, n)
    if n == 1:
        return torch.zeros_like(values)
    return (values.sum(-1, keepdim=True) - values) / (n - 1)


def pg_surrogate(logp: torch.Tensor, values: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """(k,) surrogates whose gradients are the REINFORCE estimates of grad C_i:
    mean_j (g_ij - b_ij) * grad log pi(y_j | x_j)."""
    adv = (values - baseline).detach()
    return (adv * logp.unsqueeze(0)).mean(-1)


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

    from methods.core.onpolicy import OnPolicyRun, clip_and_get, constraint_scales

    c = cfg["l3m"]
    cons = expand_constraints(cfg["constraints"], c["normalize_constraints"], constraint_scales(cfg))
    if not cons:
        raise ValueError("l3m: no constraints; add config.constraints (or run sft for the task alone)")
    run = OnPolicyRun(cfg, "l3m", init_dir, out_dir, data_dir, steps=c["steps"], lr=c["lr"], warmup=c["warmup"],
                      reward_names=[x.reward for x in cons], extra_state={"ema": None})
    state, s_fixed = run.state, c["relax"]
    bar = tqdm(total=c["steps"], initial=state["step"], desc="l3m", mininterval=5)
    mu, lam = c["mu0"], torch.zeros(len(cons))
    while state["step"] < c["steps"]:
        run.evaluate_heldout(cons)
        step = state["step"]
        mu = mu_at(step, c["mu0"], c["mu_min"], c["mu_decay"], c["mu_every"])
        s = s_fixed if s_fixed is not None else mu * mu
        batch = run.batch(step)
        task_loss = run.task_loss(batch)  # 1. task NLL on the mini-batch
        _, samples, r_by = run.sample_and_score(batch, step)  # 2. samples of the current policy, rewards
        # 3. constraint values (k, n), their EMA estimates and the multipliers
        g = torch.stack([con.value(r_by[con.reward]) for con in cons])
        c_batch = run.global_mean(g.mean(-1).detach())  # the estimate over the global batch
        state["ema"] = ema_update(state["ema"], c_batch.cpu(), c["ema"])
        c_hat = state["ema"]
        lam = multipliers(c_hat, mu, s).float()
        run.stats.update(c_batch=c_batch.tolist(), c_hat=c_hat.tolist(), lam=lam.tolist())
        # 4. policy-gradient surrogate for grad C_i
        logp = run.sample_logprob(run.model, samples)
        base = loo_baseline(g, c["samples_per_prompt"]) if c["baseline"] == "loo" else (
            torch.zeros_like(g) if c["baseline"] == "none" else c_hat.to(g).unsqueeze(-1).expand_as(g))
        barrier_loss = (lam.to(run.device) * pg_surrogate(logp, g, base)).sum()
        # 5. combined gradient, clipped jointly or each part separately
        run.opt.zero_grad(set_to_none=True)
        if c["clip"] == "joint":
            (task_loss + barrier_loss).backward()
            run.sync_grads()
            norms = {"grad_norm": torch.nn.utils.clip_grad_norm_(run.params, c["max_grad_norm"]).item()}
        else:
            task_loss.backward()
            run.sync_grads()
            g_task, n_task = clip_and_get(run.params, c["max_grad_norm"])
            run.opt.zero_grad(set_to_none=True)
            barrier_loss.backward()
            run.sync_grads()
            g_bar, n_bar = clip_and_get(run.params, c["barrier_max_norm"] or c["max_grad_norm"])
            for p, a, b in zip(run.params, g_task, g_bar):
                p.grad = a + b
            norms = {"grad_norm_task": n_task, "grad_norm_barrier": n_bar}
        run.check_finite(step, {**norms, "task_loss": task_loss.item()})
        run.opt.step()
        run.sched.step()
        state["step"] += 1
        if run.should_log(step, c["logging_steps"]):
            lengths = torch.tensor([float(x["n_tokens"]) for x in samples], dtype=torch.float64)
            rec = {"step": step, "mu": mu, "s": s, "task_loss": run.global_mean(task_loss.detach()).item(),
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
