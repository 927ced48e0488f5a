"""Command line of the training side; every Snakemake rule calls one subcommand.

    python -m methods.cli data        --config CFG --out DIR --card JSON
    python -m methods.cli preferences --config CFG --out DIR --card JSON
    python -m methods.cli contrast    --config CFG --data DIR --out DIR --card JSON
    python -m methods.cli base        --config CFG --data DIR --out DIR
    python -m methods.cli reward-model --config CFG --name REWARD --init DIR --pairs DIR --data DIR --out DIR --card JSON
    python -m methods.cli train       --config CFG --method NAME --init DIR --data DIR --out DIR [--set JSON]

CFG is a YAML/JSON config; it is validated (with defaults filled in) before anything runs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _cfg(path, overrides: str | None = None):
    import json

    from methods.core.config import load_config

    return load_config(path, json.loads(overrides) if overrides else None)


def cmd_data(a):
    from methods.core.data import build_task_splits

    card = build_task_splits(_cfg(a.config)["data"], a.out)
    _copy(Path(a.out) / "data_card.json", a.card)
    print(card["counts"])


def cmd_preferences(a):
    from methods.core.data import build_preferences

    card = build_preferences(_cfg(a.config)["preferences"], a.out)
    _copy(Path(a.out) / "data_card.json", a.card)
    print(card["counts"])


def cmd_contrast(a):
    from methods.core.data import build_contrast_pairs

    card = build_contrast_pairs(_cfg(a.config)["contrast"], a.data, a.out)
    _copy(Path(a.out) / "data_card.json", a.card)
    print(card["counts"])


def cmd_reward_model(a):
    """A reward the DAG builds: a trained reward model (type reward_model) or a shipped scorer's folder
    (type sentiment or harmless); either way its card with the held-out pair accuracy."""
    import json

    from methods import reward_model
    from methods.core.distributed import init_distributed, rank
    from methods.core.io import write_json
    from methods.core.models import set_threads
    from methods.core.rewards import SCORERS

    cfg = _cfg(a.config)
    spec = cfg["rewards"][a.name]
    set_threads(cfg["hardware"])
    reference = str(Path(a.data) / "val.jsonl")
    pair_card = json.loads((Path(a.pairs) / "data_card.json").read_text())
    if spec["type"] in SCORERS:
        if int(os.environ.get("RANK", "0")) > 0:  # under `accelerate launch` one process writes the folder
            return
        rec = reward_model.build_scorer(cfg, a.name, a.pairs, reference, a.out)
        write_json(a.card, {"reward": a.name, "pairs": pair_card, "scorer": rec["scorer"],
                            "heldout_pair_accuracy": rec["heldout"], "agreement": rec["agreement"],
                            "normalisation": rec["normalisation"], "wall_clock_s": rec["wall_clock_s"]})
        print(f"scorer {a.name}: held-out accuracy {rec['heldout']['accuracy']:.3f} {rec['heldout']['ci95']}")
        return
    init_distributed(cfg["hardware"]["device"])
    rec = reward_model.train(cfg, a.name, a.init, a.pairs, reference, a.out)
    if rank() > 0:
        return
    backbone = "the base model" if spec["backbone"] == "base" else spec["backbone"]
    write_json(a.card, {"reward": a.name, "pairs": pair_card, "trainer": "trl.RewardTrainer (Bradley-Terry)",
                        "backbone": f"{backbone} + a scalar head", "steps": rec["steps"],
                        "heldout_pair_accuracy": rec["heldout"], "heldout_before_training": rec["heldout_before_training"],
                        "train_subset_accuracy": rec["train_subset"], "agreement": rec["agreement"],
                        "normalisation": rec["normalisation"], "max_length": rec["max_length"],
                        "wall_clock_s": rec.get("wall_clock_s"),
                        "reward_model_config": {**cfg["reward_model"], **{k: spec.get(k) or cfg["reward_model"][k]
                                                                             for k in ("lr", "epochs")}}})
    print(f"reward model {a.name}: held-out accuracy {rec['heldout']['accuracy']:.3f} {rec['heldout']['ci95']}")


def cmd_base(a):
    from methods.core import models
    from methods.core.data import pretraining_texts

    cfg = _cfg(a.config)
    models.set_threads(cfg["hardware"])
    src = cfg["base_model"]["source"]
    if src == "pretrain":
        texts = pretraining_texts(cfg["data"], a.data)
        info = models.pretrain_base(cfg["base_model"], texts, a.out, cfg["hardware"], cfg["seed"])
    elif src == "gguf":
        info = models.gguf_base(cfg["base_model"], a.out)
    else:
        info = models.hf_base(cfg["base_model"], a.out)
    print(info)


def cmd_train(a):
    from methods import registry
    from methods.core.distributed import init_distributed
    from methods.core.models import set_threads

    cfg = _cfg(a.config, a.set)
    set_threads(cfg["hardware"])
    init_distributed(cfg["hardware"]["device"])  # several processes (hardware.processes > 1): one group
    rec = registry.get(a.method).load().train(cfg, a.init, a.out, a.data)
    print(f"{a.method}: {rec.get('steps')} steps in {rec.get('wall_clock_s')} s")


def _copy(src, dst):
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def check(argv: list[str]) -> None:
    """``python -m methods.cli check FILE [FILE ...]``: read the config files as Snakemake merges them
    (later files override earlier ones) and validate the result, naming the file and line of a YAML
    error (Snakemake's own message for one names neither)."""
    from methods.core.config import ConfigError, read_config_files, validate_config

    try:
        merged = read_config_files(argv)
        validate_config(merged)
    except ConfigError as e:
        print(e, file=sys.stderr)
        sys.exit(2)
    print(f"{' + '.join(argv)}: valid config (name {merged['name']!r})")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        return check(argv[1:])
    p = argparse.ArgumentParser(prog="methods.cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn, args in [
        ("data", cmd_data, ["out", "card"]),
        ("preferences", cmd_preferences, ["out", "card"]),
        ("contrast", cmd_contrast, ["data", "out", "card"]),
        ("base", cmd_base, ["data", "out"]),
        ("reward-model", cmd_reward_model, ["name", "init", "pairs", "data", "out", "card"]),
        ("train", cmd_train, ["method", "init", "data", "out"]),
    ]:
        sp = sub.add_parser(name)
        sp.add_argument("--config", required=True)
        for x in args:
            sp.add_argument(f"--{x}", required=True)
        if name == "train":
            sp.add_argument("--set", default=None, help="JSON object merged into the config (a run variant)")
        sp.set_defaults(fn=fn)
    a = p.parse_args(argv)
    from methods.core import preempt
    from methods.core.config import ConfigError

    from methods.core.distributed import shutdown

    try:
        with preempt.handle_preemption():
            try:
                a.fn(a)
            finally:
                shutdown()
    except ConfigError as e:
        print(e, file=sys.stderr)
        sys.exit(2)
    except preempt.Preempted as e:
        print(f"pre-empted: {e}", file=sys.stderr)
        sys.exit(preempt.EXIT_CODE)


if __name__ == "__main__":
    main()
