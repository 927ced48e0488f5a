"""The one list of training methods. The DAG, the CLI and the tests read it, so adding a method is
one module, one line here and its config section.

Each entry: the module with ``train(cfg, init_dir, out_dir, data_dir, ...)``, the model it
starts from ("base": the initialisation model, "sft": the SFT model) and the config sections it reads
besides its own, data, seed and hardware: the DAG retrains a model when one of them changes, and only
then (changing an L3M setting does not retrain SFT and everything built on it).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


def _no_inputs(cfg: dict) -> dict:
    return {}


def _constraint_rewards(cfg: dict) -> dict:
    return {"rewards": [c["reward"] for c in cfg["constraints"]]}


def _mixture_rewards(cfg: dict) -> dict:
    return {"rewards": cfg["mixture"]["rewards"] or cfg["experiments"]["two_reward"]["rewards"]}


@dataclass(frozen=True)
class Method:
    name: str
    module: str
    init_from: str  # "base" or another method's name
    description: str
    # further config sections (or "section.key") the method's training reads; SFT's use of
    # evaluation.batch_size (its validation loss only) leaves the weights alone and is not listed
    reads: tuple[str, ...] = ()
    # what a run reads besides its init model and the task data, from its resolved config:
    # {"rewards": reward names (the DAG adds the reward models among them as inputs), "pairs": pair sets}
    needs: Callable[[dict], dict] = _no_inputs

    def load(self):
        return importlib.import_module(self.module)


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("sft", "methods.sft", "base", "supervised fine-tuning on the task data (TRL SFTTrainer)"),
        Method("l3m", "methods.l3m", "base", "L3M: task NLL + relaxed log-barrier of the constraints, one stage",
               reads=("onpolicy", "constraints", "rewards", "generation"), needs=_constraint_rewards),
        Method("mm", "methods.minimax", "sft", "minimax: Lagrangian saddle point with dual ascent and KL to SFT",
               reads=("onpolicy", "constraints", "rewards", "generation"), needs=_constraint_rewards),
        Method("mixture", "methods.mixture", "sft", "mixture-of-rewards RLHF with KL to SFT (TRL RLOOTrainer)",
               reads=("onpolicy.temperature", "rewards", "experiments.two_reward"), needs=_mixture_rewards),
        Method("dpo", "methods.dpo", "sft", "DPO on the preference pairs (TRL DPOTrainer)",
               needs=lambda cfg: {"pairs": cfg["dpo"]["pairs"]}),
        Method("cpo", "methods.cpo", "sft", "constrained preference optimisation: DPO s.t. a margin constraint",
               needs=lambda cfg: {"pairs": [cfg["cpo"]["objective"], cfg["cpo"]["constraint"]]}),
    ]
}


def get(name: str) -> Method:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]
