"""SFT: minimise the task NLL alone, from the initialisation model (TRL SFTTrainer).

Conversational prompt-completion data, so TRL applies the chat template and the loss covers only
the response tokens (completion_only_loss). Checkpoints go to ``<out>.work/`` and a rerun resumes
from the last one; the final folder appears atomically with ``l3m_run.json`` (full config, seed,
versions, log history) beside the weights.
"""
from __future__ import annotations

import time
from pathlib import Path

from methods.core.data import to_conversational
from methods.core.io import read_jsonl
from methods.core.models import load_model, prepare_work_dir, save_trained, trainer_hardware
from methods.core.preempt import run_trainer
from methods.core.record import run_record, seed_everything, tracking


def sft_config(cfg: dict, work: Path):
    from trl import SFTConfig

    s = cfg["sft"]
    return SFTConfig(
        output_dir=str(work), num_train_epochs=s["epochs"], max_steps=s["max_steps"],
        per_device_train_batch_size=s["batch_size"], gradient_accumulation_steps=s["grad_accum"],
        per_device_eval_batch_size=cfg["evaluation"]["batch_size"],
        learning_rate=s["lr"], lr_scheduler_type=s["scheduler"], warmup_steps=s["warmup"],
        weight_decay=s["weight_decay"], max_grad_norm=1.0, max_length=s["max_length"],
        completion_only_loss=True, packing=False, logging_steps=s["logging_steps"], logging_first_step=True,
        save_steps=s["save_steps"], save_total_limit=1, eval_strategy="steps",
        eval_steps=max(s["logging_steps"], s["save_steps"]), seed=cfg["seed"], data_seed=cfg["seed"],
        report_to=tracking(cfg, work), **trainer_hardware(cfg["hardware"]),
    )


def train(cfg: dict, init_dir: str, out_dir: str, data_dir: str) -> dict:
    import datasets
    from trl import SFTTrainer

    t0 = time.time()
    seed_everything(cfg["seed"])
    out_dir = Path(out_dir)
    work = prepare_work_dir(Path(str(out_dir) + ".work"), cfg)
    model, tok = load_model(init_dir, for_training=True)
    train_rows = read_jsonl(Path(data_dir) / "train.jsonl")
    val_rows = read_jsonl(Path(data_dir) / "val.jsonl")
    train_ds = datasets.Dataset.from_list(to_conversational(train_rows))
    val_ds = datasets.Dataset.from_list(to_conversational(val_rows))
    trainer = SFTTrainer(model=model, args=sft_config(cfg, work), train_dataset=train_ds,
                         eval_dataset=val_ds, processing_class=tok)
    resumed = run_trainer(trainer, work)
    record = run_record(cfg, cfg["seed"], started=t0, method="sft", init=str(init_dir), resumed_from=resumed,
                        steps=trainer.state.global_step, log_history=trainer.state.log_history)
    return save_trained(trainer.model, tok, out_dir, record, work)
