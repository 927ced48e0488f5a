"""CPO: constrained preference optimisation, as l3m-method.md section 6 defines it.

From SFT (also the frozen reference), minimise the DPO loss on the ``objective`` pairs subject to
the mean margin on the ``constraint`` pairs staying at least tau:

    m(x, y_w, y_l) = [log pi(y_w|x) - log pi(y_l|x)] - [log pi_ref(y_w|x) - log pi_ref(y_l|x)]
    min_theta  DPO(theta) + lambda * (tau - mean m),     lambda <- max(0, lambda + eta * (tau - mean m))

Log-probabilities are summed over the response tokens, as TRL's DPOTrainer sums them, so with
lambda = 0 the loss is TRL's DPO loss at the same beta (tested against TRL's own trainer) and tau
is in nats per pair. Gradients flow through the policy's log-probabilities (only the reference's
are computed without gradient).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.core.constraints import dual_ascent


def margins(lp_w, lp_l, ref_w, ref_l) -> torch.Tensor:
    """Implicit-reward margins of DPO: policy log-ratio of winner over loser minus the reference's."""
    return (lp_w - lp_l) - (ref_w - ref_l)


def cpo_loss(m_obj: torch.Tensor, m_con: torch.Tensor, beta: float, tau: float, lam: float):
    """(loss, dpo, violation): DPO loss on the objective margins plus lambda * (tau - mean constraint margin)."""
    dpo = -F.logsigmoid(beta * m_obj).mean()
    violation = tau - m_con.mean()
    return dpo + lam * violation, dpo, violation


def pair_logps(model, tok, rows, ctx, device) -> list[torch.Tensor]:
    """Summed log-probabilities of the chosen and of the rejected responses (TRL DPO's convention)."""
    from methods.core.models import encode_target
    from methods.core.onpolicy import seq_logprob

    return [seq_logprob(model, *encode_target(tok, rows, key, ctx), tok.pad_token_id, False, device)
            for key in ("chosen", "rejected")]


def train(cfg: dict, init_dir: str, out_dir: str, data_dir: str) -> dict:
    import random

    from tqdm.auto import tqdm

    from methods.core.io import pairs_dir, read_jsonl
    from methods.core.models import load_model
    from methods.core.onpolicy import OnPolicyRun

    p = cfg["cpo"]
    run = OnPolicyRun(cfg, "cpo", init_dir, out_dir, data_dir, steps=p["steps"], lr=p["lr"], warmup=p["warmup"],
                      reward_names=[], extra_state={"lambda": 0.0}, weight_decay=p["weight_decay"],
                      scheduler=p["scheduler"])
    ref, tok = load_model(init_dir, device=run.device)
    ref.requires_grad_(False)
    sets = {k: read_jsonl(pairs_dir(data_dir, p[k]) / "train.jsonl") for k in ("objective", "constraint")}
    ctx = min(run.ctx, p["max_length"])
    state, bs = run.state, p["batch_size"]

    bar = tqdm(total=p["steps"], initial=state["step"], desc="cpo", mininterval=5)
    while state["step"] < p["steps"]:
        step = state["step"]
        rng = random.Random(cfg["seed"] * 7919 + step)
        batch = {k: rng.sample(v, min(bs, len(v))) for k, v in sets.items()}
        run.model.train()
        m = {}
        for k, rows in batch.items():
            with torch.no_grad():
                ref_w, ref_l = pair_logps(ref, tok, rows, ctx, run.device)
            lp_w, lp_l = pair_logps(run.model, tok, rows, ctx, run.device)
            m[k] = margins(lp_w, lp_l, ref_w, ref_l)
        loss, dpo, violation = cpo_loss(m["objective"], m["constraint"], p["beta"], p["tau"], state["lambda"])
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.sync_grads()  # several processes (replicated): the averaged gradient (every process has the same batch)
        gnorm = torch.nn.utils.clip_grad_norm_(run.params, p["max_grad_norm"]).item()
        run.check_finite(step, {"grad_norm": gnorm, "loss": loss.item()})
        run.opt.step()
        run.sched.step()
        lam = state["lambda"]
        state["lambda"] = dual_ascent(torch.tensor(lam), violation.detach().cpu(), p["dual_lr"]).item()
        state["step"] += 1
        if run.should_log(step, p["logging_steps"]):
            run.log({"step": step, "loss": loss.item(), "dpo_loss": dpo.item(),
                     "margin_objective": m["objective"].mean().item(), "margin_constraint": m["constraint"].mean().item(),
                     "violation": violation.item(), "lambda": lam, "grad_norm": gnorm, "lr": run.sched.get_last_lr()[0]})
            bar.set_postfix(dpo=f"{dpo.item():.3f}", viol=f"{violation.item():.3f}", lam=f"{lam:.2f}")
        run.maybe_checkpoint(p["save_steps"])
        bar.update(1)
    bar.close()
    return run.finish(tau=p["tau"], final_lambda=state["lambda"], objective=p["objective"], constraint=p["constraint"])
