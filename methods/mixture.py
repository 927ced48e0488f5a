"""Mixture-of-rewards RLHF ("MORLHF"): from SFT, maximise sum_i w_i r_i with a KL penalty to the
SFT model, one run per weight vector, the heuristic weighting L3M replaces (l3m-method.md 6).

TRL's RLOOTrainer does the RL: REINFORCE with a leave-one-out baseline over the samples of a
prompt on summed sequence log-probabilities at the sampling temperature, the KL entering the
reward as the sequence log-ratio (r - beta * sum_t log pi/pi_SFT), with no critic. That is the form
of MM's estimator with the default ``onpolicy.pg_estimator`` (read from TRL 1.16's source; our own
estimators' expectations are tested by enumeration, TRL's is not), so the comparison differs in the
objective, not in the variance reduction; GRPO's per-group std normalisation would rescale each
prompt's rewards and blur the weights. The rewards are our reward interface wrapped as TRL
reward functions; TRL's ``reward_weights`` forms the weighted sum.
"""
from __future__ import annotations

import time
from pathlib import Path

from methods.core.data import to_conversational
from methods.core.io import read_jsonl
from methods.core.models import load_model, prepare_work_dir, save_trained, trainer_hardware
from methods.core.preempt import run_trainer
from methods.core.record import run_record, seed_everything, tracking


def reward_func(reward, tok):
    """Our reward as a TRL reward function (conversational or plain prompts/completions).

    TRL passes each completion's ids up to and including its EOS (nothing after it), so the
    response scored is those ids less a final EOS: every sampled token is kept, a sampled pad
    token included, as in our own sampler."""
    eos = tok.eos_token_id

    def fn(prompts, completions, completion_ids=None, **kwargs):
        p = [x[-1]["content"] if isinstance(x, list) else x for x in prompts]
        c = [x[-1]["content"] if isinstance(x, list) else x for x in completions]
        ids = None if completion_ids is None else [strip_final(list(map(int, i)), eos) for i in completion_ids]
        return reward(p, c, ids).tolist()

    fn.__name__ = reward.name
    return fn


def strip_final(ids: list[int], eos: int) -> list[int]:
    return ids[:-1] if ids and ids[-1] == eos else ids


def mixture_rewards(cfg: dict) -> list[str]:
    return cfg["mixture"]["rewards"] or cfg["experiments"]["two_reward"]["rewards"]


def train(cfg: dict, init_dir: str, out_dir: str, data_dir: str) -> dict:
    import datasets
    from trl import RLOOConfig, RLOOTrainer

    from methods.core.rewards import build_reward

    t0 = time.time()
    m = cfg["mixture"]
    names = mixture_rewards(cfg)
    weights = m["weight"] or m["weights"][0]
    if len(weights) != len(names):
        raise ValueError(f"mixture.weight: {weights} has {len(weights)} entries for {len(names)} rewards {names}")
    seed_everything(cfg["seed"])
    out_dir = Path(out_dir)
    work = prepare_work_dir(Path(str(out_dir) + ".work"), cfg)
    device = cfg["hardware"]["device"]
    model, tok = load_model(init_dir, device=device, for_training=True)
    funcs = [reward_func(build_reward(n, cfg["rewards"][n], tokenizer=tok, device=device, cfg=cfg), tok) for n in names]
    rows = read_jsonl(Path(data_dir) / "train.jsonl")
    ds = datasets.Dataset.from_list([{"prompt": r["prompt"]} for r in to_conversational(rows)])
    per_step = m["prompts_per_step"] * m["samples_per_prompt"]
    args = RLOOConfig(
        output_dir=str(work), max_steps=m["steps"], per_device_train_batch_size=per_step,
        num_generations=m["samples_per_prompt"], max_completion_length=m["max_new_tokens"],
        temperature=cfg["onpolicy"]["temperature"], top_k=0, top_p=1.0, learning_rate=m["lr"], beta=m["beta"],
        reward_weights=[float(w) for w in weights], lr_scheduler_type="cosine", warmup_steps=0.05,
        max_grad_norm=1.0, logging_steps=m["logging_steps"], logging_first_step=True, save_steps=m["save_steps"],
        save_total_limit=1, seed=cfg["seed"], data_seed=cfg["seed"], report_to=tracking(cfg, work),
        **trainer_hardware(cfg["hardware"]))
    trainer = RLOOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=ds, processing_class=tok)
    resumed = run_trainer(trainer, work)
    log = trainer.state.log_history
    record = run_record(cfg, cfg["seed"], started=t0, method="mixture", init=str(init_dir), resumed_from=resumed,
                        steps=trainer.state.global_step, rewards=names, weights=list(weights),
                        trainer="trl.RLOOTrainer", log_history=log)
    steps = [{"step": h.get("step", i), **h} for i, h in enumerate(log) if "loss" in h]
    return save_trained(trainer.model, tok, out_dir, record, work, jsonl_files={"train_log.jsonl": steps})
