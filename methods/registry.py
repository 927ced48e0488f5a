"""The one list of training methods. The DAG, the CLI, the evaluation and the tests read it, so adding
a method is one module, one entry here and its config section.

Each entry: the module with ``train(cfg, init_dir, out_dir, data_dir, ...)``, the model it
starts from ("base": the initialisation model, "sft": the SFT model), the config sections it reads
besides its own, data, seed and hardware (the DAG retrains a model when one of them changes, and only
then: changing an L3M setting does not retrain SFT and everything built on it), what else its runs
read (reward models, pair sets), how it enters the experiments (``grid``) and how figures draw it.

``variants(cfg)`` turns the entries and a resolved config into the experiments' models, by name: the
DAG trains exactly these, and the tables and figures read their band, point or weights from here,
never from the model's name.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
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
    # How the method enters the experiments (experiments.length / experiments.two_reward; a method takes
    # part in two_reward unless its flag there, experiments.two_reward.<name>, is false):
    #   "constraints": one model per length band (<name>_len<i>) and per constraint point (<name>_pt<i>),
    #                  trained with the band's or the point's constraints
    #   "weights":     one model per entry of <name>.weights (<prefix><j>), trained with that weight vector
    #   "single":      one model under the method's own name
    #   None:          in no experiment (sft is the reference every figure draws anyway)
    grid: str | None = None
    lengths: bool = False  # "constraints" methods: also one model per length band (Figure 2)
    prefix: str = ""  # model-name prefix of the variants (default: the name)
    # plot style: legend label, matplotlib marker, colour
    style: tuple[str, str, str] = ("", "o", "gray")

    def load(self):
        return importlib.import_module(self.module)

    @property
    def label(self) -> str:
        return self.style[0] or self.name


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("sft", "methods.sft", "base", "supervised fine-tuning on the task data (TRL SFTTrainer)",
               style=("SFT", "*", "black")),
        Method("l3m", "methods.l3m", "base", "L3M: task NLL + relaxed log-barrier of the constraints, one stage",
               reads=("onpolicy", "constraints", "rewards", "generation"), needs=_constraint_rewards,
               grid="constraints", lengths=True, style=("L3M", "o", "tab:red")),
        Method("mm", "methods.minimax", "sft", "minimax: Lagrangian saddle point with dual ascent and KL to SFT",
               reads=("onpolicy", "constraints", "rewards", "generation"), needs=_constraint_rewards,
               grid="constraints", style=("MM", "s", "tab:blue")),
        Method("mixture", "methods.mixture", "sft", "mixture-of-rewards RLHF with KL to SFT (TRL RLOOTrainer)",
               reads=("onpolicy.temperature", "rewards", "experiments.two_reward"), needs=_mixture_rewards,
               grid="weights", prefix="mix", style=("mixture RLHF", "^", "tab:green")),
        Method("dpo", "methods.dpo", "sft", "DPO on the preference pairs (TRL DPOTrainer)",
               needs=lambda cfg: {"pairs": cfg["dpo"]["pairs"]}, grid="single", style=("DPO", "D", "tab:purple")),
        Method("cpo", "methods.cpo", "sft", "constrained preference optimisation: DPO s.t. a margin constraint",
               needs=lambda cfg: {"pairs": [cfg["cpo"]["objective"], cfg["cpo"]["constraint"]]}, grid="single",
               style=("CPO", "P", "tab:orange")),
    ]
}


def register(method: Method) -> Method:
    """Add a method from outside the package: a module named in the environment variable
    ``L3M_BENCH_METHODS`` (comma-separated module names, imported when this registry is) calls this
    with its entry. Every process of a run (Snakemake, its jobs) inherits the variable, so the DAG,
    the CLI and the evaluation see the same registry."""
    if method.name in METHODS and METHODS[method.name] != method:
        raise ValueError(f"method {method.name!r} is registered twice ({METHODS[method.name].module}, {method.module})")
    METHODS[method.name] = method
    return method


def _load_plugins() -> None:
    import os

    for module in filter(None, (m.strip() for m in os.environ.get("L3M_BENCH_METHODS", "").split(","))):
        importlib.import_module(module)


# The initialisation model is no method, but tables and figures show it beside them.
BASE_STYLE = ("init (base)", "X", "0.5")


def get(name: str) -> Method:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]


def style(method: str) -> tuple[str, str, str]:
    """(label, marker, colour) of a method, or of the initialisation model ("base")."""
    if method == "base":
        return BASE_STYLE
    m = get(method)
    return (m.label, *m.style[1:])


@dataclass(frozen=True)
class Variant:
    """One model of an experiment: the method that trains it and the config overrides it is trained with
    (None: the method's own run under its own name, trained by the DAG's plain ``train`` rule)."""

    name: str
    method: str
    experiment: str  # "length" or "two_reward"
    overrides: dict | None = None
    band: list | None = None  # length: the band
    point: int | None = None  # two_reward: the constraint point's index
    weights: list | None = field(default=None)  # two_reward, "weights" methods: the weight vector


def variants(cfg: dict) -> dict[str, Variant]:
    """Every model of the configured experiments, by name, from the registry: first the length
    experiment's (per band), then the two-reward one's, method by method in registry order."""
    out: dict[str, Variant] = {}
    length, two = cfg["experiments"]["length"], cfg["experiments"]["two_reward"]
    def add(v: Variant) -> None:
        out[v.name] = v

    if length["enabled"]:
        for m in METHODS.values():
            if m.grid == "constraints" and m.lengths:
                for i, band in enumerate(length["bands"]):
                    cons = {"constraints": [{"reward": length["reward"], "band": band}]}
                    add(Variant(f"{m.prefix or m.name}_len{i}", m.name, "length", cons, band=band))
    if two["enabled"]:
        for m in METHODS.values():
            if m.grid is None or not two.get(m.name, True):
                continue
            pre = m.prefix or m.name
            if m.grid == "constraints":
                for i, pt in enumerate(two["points"]):
                    cons = {"constraints": [{"reward": r, "bound": b, "direction": ">="}
                                            for r, b in zip(two["rewards"], pt)]}
                    add(Variant(f"{pre}_pt{i}", m.name, "two_reward", cons, point=i))
            elif m.grid == "weights":
                for j, w in enumerate(cfg[m.name]["weights"]):
                    add(Variant(f"{pre}{j}", m.name, "two_reward", {m.name: {"weight": w}}, weights=w))
            elif m.grid == "single":
                add(Variant(m.name, m.name, "two_reward"))
            else:
                raise ValueError(f"method {m.name}: unknown grid {m.grid!r} (constraints, weights, single or None)")
    return out


_load_plugins()
