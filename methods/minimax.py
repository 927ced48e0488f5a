"""MM: the minimax (saddle-point Lagrangian) baseline of l3m-method.md section 6.

From the SFT model, for the same constraints as an L3M, solve max_{lambda >= 0} min_theta of

    L(theta) + sum_i lambda_i C_i(theta) + beta * KL(pi_theta || pi_SFT)

as constrained RLHF does (Moskovitz et al. 2024; Safe-RLHF's PPO-Lagrangian): each step takes a
policy step with the current lambda (REINFORCE on the per-sample cost sum_i lambda_i g_i + beta *
kl, the baseline of ``onpolicy.baseline``, the same samples and constraint values as L3M), then
projected dual ascent lambda_i <- max(0, lambda_i + eta * C_i) on the batch estimates.

With ``onpolicy.pg_estimator: sequence`` (the default) kl is the sequence log-ratio log pi(y|x) -
log pi_SFT(y|x) (summed over the response tokens, both at the sampling temperature), so the
estimate's expectation is exactly sum_i lambda_i grad C_i + beta grad KL(pi || pi_SFT) over whole
responses: the sequence-level KL and summed log-probabilities TRL's RLOOTrainer (the mixture
baseline) uses. With ``length_normalized`` both log pi and kl are per-token means (the paper-style
form, biased like L3M's: see methods/l3m.py). Needs the separate SFT stage and a frozen reference
copy: the costs L3M avoids.
"""
from __future__ import annotations

import torch

from methods.core.constraints import (constraint_scales, dual_ascent, ema_update, expand_constraints, pg_baseline,
                                      pg_surrogate)


def lagrangian_cost(g: torch.Tensor, lam: torch.Tensor, kl: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-sample cost whose expectation's policy gradient is sum_i lambda_i grad C_i + beta grad KL.

    g: (k, n) constraint values; lam: (k,); kl: (n,) per-sample log pi - log pi_ref."""
    return (lam.unsqueeze(-1) * g).sum(0) + beta * kl


def mm_surrogate(logp: torch.Tensor, ref_logp: torch.Tensor | None, g: torch.Tensor, lam: torch.Tensor, beta: float,
                 baseline: str, group: int, previous: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(surrogate, kl, per-sample cost): the surrogate's gradient is the REINFORCE estimate of
    sum_i lambda_i grad C_i + beta grad KL(pi || pi_ref), from the samples' log-probabilities
    ``logp`` (n,) (with gradient), the reference's ``ref_logp`` (None: no KL term), constraint values
    ``g`` (k, n) and the baseline of ``pg_baseline`` (``previous``: the EMA of earlier costs)."""
    kl = logp.detach() - ref_logp if ref_logp is not None else torch.zeros_like(logp)
    cost = lagrangian_cost(g, lam.to(g), kl.to(g), beta).unsqueeze(0)
    return pg_surrogate(logp, cost, pg_baseline(cost, baseline, group, previous)).sum(), kl, cost


def train(cfg: dict, init_dir: str, out_dir: str, data_dir: str) -> dict:
    from tqdm.auto import tqdm

    from methods.core.models import load_model
    from methods.core.onpolicy import OnPolicyRun

    m, c = cfg["mm"], cfg["onpolicy"]
    cons = expand_constraints(cfg["constraints"], c["normalize_constraints"], constraint_scales(cfg))
    if not cons:
        raise ValueError("mm: no constraints; add config.constraints")
    run = OnPolicyRun(cfg, "mm", init_dir, out_dir, data_dir, steps=m["steps"], lr=m["lr"], warmup=m["warmup"],
                      reward_names=[x.reward for x in cons],
                      extra_state={"lambda": torch.full((len(cons),), float(m["lambda0"])), "cost_ema": None})
    ref = None
    if m["beta"] > 0:  # the frozen SFT model the KL penalty anchors to
        ref, _ = load_model(init_dir, device=run.device)
        ref.requires_grad_(False)
        if run.fsdp:  # sharded like the policy: a 7B reference does not fit beside it otherwise
            from methods.core.fsdp import shard

            shard(ref, cfg["hardware"])
    state = run.state
    bar = tqdm(total=m["steps"], initial=state["step"], desc="mm", mininterval=5)
    while state["step"] < m["steps"]:
        run.evaluate_heldout(cons)
        step = state["step"]
        lam = state["lambda"].clone()
        batch = run.batch(step)
        task_loss = run.task_loss(batch) if m["task_weight"] > 0 else torch.zeros((), device=run.device)
        _, samples, r_by = run.sample_and_score(batch, step)
        g = torch.stack([con.value(r_by[con.reward]) for con in cons])  # (k, n), <= 0 when satisfied
        c_batch = run.global_mean(g.mean(-1).detach()).cpu()  # over the global batch
        logp = run.sample_logprob(run.model, samples)
        with torch.no_grad():
            ref_logp = run.sample_logprob(ref, samples) if ref is not None else None
        pg_loss, kl, cost = mm_surrogate(logp, ref_logp, g, lam, m["beta"], c["baseline"], c["samples_per_prompt"],
                                         state.get("cost_ema"))
        state["cost_ema"] = ema_update(state.get("cost_ema"), run.global_mean(cost.mean(-1).detach()).cpu(), c["ema"])
        run.opt.zero_grad(set_to_none=True)
        (m["task_weight"] * task_loss + pg_loss).backward()
        run.sync_grads()
        gnorm = torch.nn.utils.clip_grad_norm_(run.params, m["max_grad_norm"]).item()
        run.check_finite(step, {"grad_norm": gnorm, "task_loss": task_loss.item()})
        run.opt.step()
        run.sched.step()
        state["lambda"] = dual_ascent(lam, c_batch, m["dual_lr"])
        state["c_last"] = c_batch.tolist()
        state["step"] += 1
        if run.should_log(step, m["logging_steps"]):
            lengths = [x["n_tokens"] for x in samples]
            rec = {"step": step, "task_loss": task_loss.item(), "kl": kl.mean().item(), "grad_norm": gnorm,
                   "lr": run.sched.get_last_lr()[0], "mean_length": sum(lengths) / len(lengths)}
            for i, con in enumerate(cons):
                rec[f"C_batch[{con.name}]"] = c_batch[i].item()
                rec[f"lambda[{con.name}]"] = lam[i].item()
            for n, r in r_by.items():
                rec[f"reward[{n}]"] = r.float().mean().item()
            run.log(rec)
            bar.set_postfix(loss=f"{rec['task_loss']:.3f}", kl=f"{rec['kl']:.3f}",
                            lam=",".join(f"{x:.2f}" for x in lam.tolist()))
        run.maybe_checkpoint(m["save_steps"])
        bar.update(1)
    bar.close()
    run.evaluate_heldout(cons)
    last = {con.name: v for con, v in zip(cons, state.get("c_last") or [])}
    return run.finish(constraints=[con.__dict__ for con in cons], final_lambda=state["lambda"].tolist(),
                      final_C_batch=list(last.values()), feasible=run.flag_feasible(last) if last else None)
