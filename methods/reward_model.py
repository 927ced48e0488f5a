"""Bradley-Terry reward models (TRL RewardTrainer) on preference pairs, one per reward axis.

The backbone is the initialisation model with a fresh scalar head (sequence classification).
Inputs are built by ``rm_encode`` (methods/core/rewards.py), the one function scoring uses too,
so training and scoring see the same chat-formatted, left-truncated ids. After training:
- held-out pair accuracy (chosen scored above rejected) on the pair set's test split;
- the normalisation stored beside the model (``reward_norm.json``): mean and std of the raw score
  on a reference set, the human replies of the task val split, so a normalised reward of 0 means
  "as good as the average human reply" and 1 one reference std better.
"""
from __future__ import annotations

import time
from pathlib import Path

from methods.core.io import read_jsonl
from methods.core.models import (load_tokenizer, prepare_work_dir, save_trained,
                                 trainer_hardware)
from methods.core.preempt import run_trainer
from methods.core.record import run_record, seed_everything, tracking
from methods.core.rewards import rm_encode, score_ids


def pair_accuracy(model, tok, pairs: list[dict], max_length: int) -> dict:
    """Share of pairs whose chosen response scores above the rejected one (ties count half)."""
    ch = score_ids(model, [rm_encode(tok, p["prompt"], p["chosen"], max_length) for p in pairs], tok.pad_token_id)
    rj = score_ids(model, [rm_encode(tok, p["prompt"], p["rejected"], max_length) for p in pairs], tok.pad_token_id)
    acc = ((ch > rj).float() + 0.5 * (ch == rj).float()).mean().item() if pairs else float("nan")
    return {"n": len(pairs), "accuracy": acc, "mean_margin": (ch - rj).mean().item() if pairs else float("nan")}


def train(cfg: dict, name: str, init_dir: str, pairs_dir: str, reference: str, out_dir: str) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    t0 = time.time()
    rm = cfg["reward_model"]
    spec = cfg["rewards"][name]
    seed_everything(cfg["seed"])
    out_dir = Path(out_dir)
    work = prepare_work_dir(Path(str(out_dir) + ".work"), {"cfg": cfg, "reward": name})
    tok = load_tokenizer(init_dir)
    model = AutoModelForSequenceClassification.from_pretrained(init_dir, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    ctx = getattr(model.config, "max_position_embeddings", None) or spec["max_length"]
    max_length = min(spec["max_length"], ctx)
    train_pairs = read_jsonl(Path(pairs_dir) / "train.jsonl")
    train_pairs = train_pairs[: rm["max_pairs"]] if rm["max_pairs"] else train_pairs
    test_pairs = read_jsonl(Path(pairs_dir) / "test.jsonl")
    if not train_pairs:
        raise ValueError(f"reward {name!r}: no training pairs in {pairs_dir}/train.jsonl")
    ds = datasets.Dataset.from_list([{"chosen_ids": rm_encode(tok, p["prompt"], p["chosen"], max_length),
                                      "rejected_ids": rm_encode(tok, p["prompt"], p["rejected"], max_length)}
                                     for p in train_pairs])
    args = RewardConfig(
        output_dir=str(work), num_train_epochs=rm["epochs"], per_device_train_batch_size=rm["batch_size"],
        learning_rate=rm["lr"], lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=rm["weight_decay"],
        max_length=None, center_rewards_coefficient=rm["center_rewards"], logging_steps=rm["logging_steps"],
        logging_first_step=True, save_steps=rm["save_steps"], save_total_limit=1, seed=cfg["seed"],
        data_seed=cfg["seed"], report_to=tracking(cfg, work), disable_tqdm=False, **trainer_hardware(cfg["hardware"]))
    before = pair_accuracy(model, tok, test_pairs, max_length)
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    resumed = run_trainer(trainer, work)
    model = trainer.model
    acc = pair_accuracy(model, tok, test_pairs, max_length)
    acc_train = pair_accuracy(model, tok, train_pairs[:500], max_length)
    ref = read_jsonl(reference)
    raw = score_ids(model, [rm_encode(tok, r["prompt"], r["response"], max_length) for r in ref], tok.pad_token_id)
    norm = {"mean": raw.mean().item(), "std": raw.std().item(), "n": len(ref),
            "reference": f"human replies of {reference}"}
    if not torch.isfinite(raw).all():
        raise FloatingPointError(f"reward model {name!r}: non-finite scores on the reference set")
    record = run_record(cfg, cfg["seed"], started=t0, method="reward_model", reward=name, init=str(init_dir),
                        pairs=str(pairs_dir), resumed_from=resumed, steps=trainer.state.global_step,
                        max_length=max_length, heldout=acc, heldout_before_training=before,
                        train_subset=acc_train, normalisation=norm, log_history=trainer.state.log_history)
    return save_trained(model, tok, out_dir, record, work, json_files={"reward_norm.json": norm})
