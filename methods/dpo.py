"""DPO from the SFT model on preference pairs (TRL DPOTrainer), the frozen reference being SFT.

The pairs are the union of the pair sets listed in ``dpo.pairs`` (by default both reward axes'
sets), conversational prompt/chosen/rejected, so TRL applies the chat template.
"""
from __future__ import annotations

import time
from pathlib import Path

from methods.core.io import pairs_dir, read_jsonl
from methods.core.models import load_model, prepare_work_dir, save_trained, trainer_hardware
from methods.core.preempt import run_trainer
from methods.core.record import run_record, seed_everything, tracking


def conversational_pairs(rows: list[dict]) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]


def train(cfg: dict, init_dir: str, out_dir: str, data_dir: str) -> dict:
    import datasets
    from trl import DPOConfig, DPOTrainer

    t0 = time.time()
    d = cfg["dpo"]
    seed_everything(cfg["seed"])
    out_dir = Path(out_dir)
    work = prepare_work_dir(Path(str(out_dir) + ".work"), cfg)
    model, tok = load_model(init_dir, for_training=True)
    rows = [r for name in d["pairs"] for r in read_jsonl(pairs_dir(data_dir, name) / "train.jsonl")]
    ds = datasets.Dataset.from_list(conversational_pairs(rows))
    args = DPOConfig(
        output_dir=str(work), num_train_epochs=d["epochs"], max_steps=d["max_steps"],
        per_device_train_batch_size=d["batch_size"], learning_rate=d["lr"], beta=d["beta"],
        max_length=d["max_length"], lr_scheduler_type="cosine", warmup_steps=0.05,
        max_grad_norm=1.0, logging_steps=d["logging_steps"], logging_first_step=True, save_steps=d["save_steps"],
        save_total_limit=1, seed=cfg["seed"], data_seed=cfg["seed"], report_to=tracking(cfg, work),
        **trainer_hardware(cfg["hardware"]))
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    resumed = run_trainer(trainer, work)
    record = run_record(cfg, cfg["seed"], started=t0, method="dpo", init=str(init_dir), resumed_from=resumed,
                        steps=trainer.state.global_step, n_pairs=len(rows), pairs=d["pairs"],
                        log_history=trainer.state.log_history)
    return save_trained(trainer.model, tok, out_dir, record, work)
