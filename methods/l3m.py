"""L3M: Lagrange Large Language Models (l3m-method.md sections 1-5).

One stage from the initialisation model: no SFT model, no reference model, no KL. Each step
minimises the task NLL plus the relaxed log-barrier of every constraint estimate:

    grad G = grad L + sum_i lambda_i * grad C_i,   lambda_i = mu / (k * max(-C_i, s)),  s = mu^2
    grad C_i = E[(g_i - baseline_i) * grad log pi(y|x)],  g_i = (b_i - r_i) / scale_i  (">=" constraint)

The maths lives in small pure functions below (checked against closed forms in the tests); the
loop is plain PyTorch over the shared pieces (sampling, log-probs, rewards).
"""
from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

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


def expand_constraints(specs: list[dict], normalize: bool = True) -> list[Constraint]:
    """Config constraints -> Constraint objects; a band [lo, hi] becomes r >= lo and r <= hi."""
    out = []
    for spec in specs:
        pieces = ([(spec["band"][0], ">="), (spec["band"][1], "<=")] if "band" in spec
                  else [(spec["bound"], spec.get("direction", ">="))])
        for bound, direction in pieces:
            scale = abs(bound) if normalize and bound != 0 else 1.0
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


def _sequences(tok, prompt_ids: list[list[int]], samples: list[dict], ctx: int):
    """prompt + sampled response (+ EOS when the model ended its turn: the stop decision is what a
    length constraint acts on), with the response marked as target."""
    seqs, masks = [], []
    for p, s in zip(prompt_ids, samples):
        resp = s["response_ids"] + ([tok.eos_token_id] if s["finished"] else [])
        p = p[-max(1, ctx - len(resp)):]
        seqs.append(p + resp)
        masks.append([0] * len(p) + [1] * len(resp))
    return seqs, masks


def _seq_logprob(model, seqs, masks, pad_id, length_normalize: bool, device) -> torch.Tensor:
    from methods.core.logprobs import pad_right, target_logprobs

    ids, att, tgt = (t.to(device) for t in pad_right(seqs, pad_id, masks))
    lp = target_logprobs(model, ids, att, tgt)
    total = (lp * tgt).sum(-1)
    return total / tgt.sum(-1).clamp(min=1) if length_normalize else total


def _clip_and_get(params, max_norm: float) -> tuple[list[torch.Tensor], float]:
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm).item()
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params], norm


def train(cfg: dict, init_dir: str, out_dir: str, data_dir: str) -> dict:
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    from methods.core.generation import model_context, sample
    from methods.core.io import atomic_path, read_jsonl, write_json
    from methods.core.models import encode_pair, load_model, prepare_work_dir
    from methods.core.record import run_record, seed_everything
    from methods.core.rewards import build_reward

    t0 = time.time()
    c = cfg["l3m"]
    seed_everything(cfg["seed"])
    device = cfg["hardware"]["device"]
    out_dir = Path(out_dir)
    work = prepare_work_dir(Path(str(out_dir) + ".work"), cfg)
    model, tok = load_model(init_dir, device=device, for_training=True)
    cons = expand_constraints(cfg["constraints"], c["normalize_constraints"])
    if not cons:
        raise ValueError("l3m: no constraints; add config.constraints (or run sft for the task alone)")
    rewards = {n: build_reward(n, cfg["rewards"][n], tokenizer=tok, device=device) for n in dict.fromkeys(x.reward for x in cons)}
    rows = read_jsonl(Path(data_dir) / "train.jsonl")
    ctx = min(model_context(model), c["max_length"])
    gen = {"max_new_tokens": c["max_new_tokens"], "do_sample": True, "temperature": c["temperature"],
           "top_p": 1.0, "top_k": 0, "batch_size": c["sample_prompts"] * c["samples_per_prompt"]}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=c["lr"], weight_decay=c["weight_decay"])
    warm = int(c["warmup"] * c["steps"]) if c["warmup"] < 1 else int(c["warmup"])
    sched = get_scheduler(c["scheduler"], opt, num_warmup_steps=warm, num_training_steps=c["steps"])
    state = {"step": 0, "ema": None, "order": None}
    rng = random.Random(cfg["seed"])
    if (work / "state.pt").exists():  # resume
        ck = torch.load(work / "state.pt", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        state = ck["state"]
        rng.setstate(ck["py_rng"])
        torch.set_rng_state(ck["torch_rng"])
    if state["order"] is None:
        state["order"] = list(range(len(rows)))
        rng.shuffle(state["order"])
    log_path = work / "train_log.jsonl"
    if log_path.exists():  # resumed: drop rows logged after the checkpoint (they are logged again)
        kept = [x for x in open(log_path) if json.loads(x)["step"] < state["step"]]
        log_path.write_text("".join(kept))
    s_fixed = c["relax"]
    bs = c["batch_size"]
    tb = _tensorboard(work / "tensorboard")
    bar = tqdm(total=c["steps"], initial=state["step"], desc="l3m", mininterval=5)
    while state["step"] < c["steps"]:
        step = state["step"]
        mu = mu_at(step, c["mu0"], c["mu_min"], c["mu_decay"], c["mu_every"])
        s = s_fixed if s_fixed is not None else mu * mu
        i0 = (step * bs) % len(rows)
        batch = [rows[state["order"][(i0 + j) % len(rows)]] for j in range(bs)]
        # 1. task NLL on the mini-batch
        pairs = [encode_pair(tok, r["prompt"], r["response"]) for r in batch]
        seqs = [ids[-ctx:] for ids, _ in pairs]
        masks = [([0] * st + [1] * (len(ids) - st))[-ctx:] for ids, st in pairs]
        model.train()
        if c["length_normalize"]:
            task_loss = -_seq_logprob(model, seqs, masks, tok.pad_token_id, True, device).mean()
        else:
            n_tok = sum(sum(m) for m in masks)
            task_loss = -_seq_logprob(model, seqs, masks, tok.pad_token_id, False, device).sum() / n_tok
        # 2. sample from the current policy for the batch prompts
        prompts = [r["prompt"] for r in batch[: c["sample_prompts"]] for _ in range(c["samples_per_prompt"])]
        samples = sample(model, tok, prompts, gen, seed=cfg["seed"] * 100003 + step, progress=False)
        # 3. rewards and constraint values (k, n)
        r_by = {n: rw(prompts, [x["response"] for x in samples], [x["response_ids"] for x in samples]).to(device)
                for n, rw in rewards.items()}
        g = torch.stack([con.value(r_by[con.reward]) for con in cons])
        c_batch = g.mean(-1).detach()
        state["ema"] = ema_update(state["ema"], c_batch.cpu(), c["ema"])
        c_hat = state["ema"]
        lam = multipliers(c_hat, mu, s).float()
        # 4. policy-gradient surrogate for grad C_i
        sseqs, smasks = _sequences(tok, [x["prompt_ids"] for x in samples], samples, ctx)
        logp = _seq_logprob(model, sseqs, smasks, tok.pad_token_id, c["length_normalize"], device)
        base = loo_baseline(g, c["samples_per_prompt"]) if c["baseline"] == "loo" else (
            torch.zeros_like(g) if c["baseline"] == "none" else c_hat.to(g).unsqueeze(-1).expand_as(g))
        surr = pg_surrogate(logp, g, base)
        barrier_loss = (lam.to(device) * surr).sum()
        # 5. combined gradient, clipped jointly or each part separately
        opt.zero_grad(set_to_none=True)
        if c["clip"] == "joint":
            (task_loss + barrier_loss).backward()
            gnorm = torch.nn.utils.clip_grad_norm_(params, c["max_grad_norm"]).item()
            norms = {"grad_norm": gnorm}
        else:
            task_loss.backward()
            g_task, n_task = _clip_and_get(params, c["max_grad_norm"])
            opt.zero_grad(set_to_none=True)
            barrier_loss.backward()
            g_bar, n_bar = _clip_and_get(params, c["barrier_max_norm"] or c["max_grad_norm"])
            for p, a, b in zip(params, g_task, g_bar):
                p.grad = a + b
            norms = {"grad_norm_task": n_task, "grad_norm_barrier": n_bar}
        if not all(math.isfinite(v) for v in norms.values()) or not math.isfinite(task_loss.item()):
            raise FloatingPointError(f"l3m step {step}: non-finite loss or gradient ({norms}, "
                                     f"task loss {task_loss.item()}); last checkpoint kept in {work}")
        opt.step()
        sched.step()
        state["step"] += 1
        lengths = [x["n_tokens"] for x in samples]
        if step % c["logging_steps"] == 0 or state["step"] == c["steps"]:
            rec = {"step": step, "mu": mu, "s": s, "task_loss": task_loss.item(),
                   "barrier": barrier_value(c_hat, mu, s), "lr": sched.get_last_lr()[0],
                   "mean_length": sum(lengths) / len(lengths), "frac_finished": sum(x["finished"] for x in samples) / len(samples),
                   **norms}
            for i, con in enumerate(cons):
                rec[f"C_batch[{con.name}]"] = c_batch[i].item()
                rec[f"C_hat[{con.name}]"] = c_hat[i].item()
                rec[f"lambda[{con.name}]"] = lam[i].item()
            for n, r in r_by.items():
                rec[f"reward[{n}]"] = r.float().mean().item()
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if tb is not None:
                for key, val in rec.items():
                    if key != "step":
                        tb.add_scalar(key, val, step)
            bar.set_postfix(loss=f"{rec['task_loss']:.3f}", len=f"{rec['mean_length']:.1f}", mu=f"{mu:.3g}")
        if state["step"] % c["save_steps"] == 0 and state["step"] < c["steps"]:
            _checkpoint(work, model, opt, sched, state, rng)
        bar.update(1)
    bar.close()
    if tb is not None:
        tb.close()
    log = [json.loads(x) for x in open(log_path)] if log_path.exists() else []
    record = run_record(cfg, cfg["seed"], started=t0, method="l3m", init=str(init_dir), steps=state["step"],
                        constraints=[con.__dict__ for con in cons], final_C_hat=state["ema"].tolist(),
                        final_mu=mu, final_lambda=lam.tolist())
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / "l3m_run.json", record)
        if (work / "tensorboard").exists():
            shutil.copytree(work / "tensorboard", tmp / "tensorboard")
        with open(tmp / "train_log.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in log)
    shutil.rmtree(work, ignore_errors=True)
    return record


def _tensorboard(path: Path):
    """A TensorBoard writer when tensorboard is installed (optional), else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path))


def _checkpoint(work: Path, model, opt, sched, state, rng) -> None:
    from methods.core.io import atomic_path

    with atomic_path(work / "state.pt") as tmp:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "state": state, "py_rng": rng.getstate(), "torch_rng": torch.get_rng_state()}, tmp)
