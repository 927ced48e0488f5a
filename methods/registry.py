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


def _onpolicy_sequences(cfg: dict, task_weight: float = 1.0) -> int:
    """Sequences an L3M or MM step trains on: the task batch (when the task NLL is in the loss) and the
    policy samples."""
    op = cfg["onpolicy"]
    return (op["batch_size"] if task_weight > 0 else 0) + op["sample_prompts"] * op["samples_per_prompt"]


def sft_sequences(cfg: dict, steps: int | None = None) -> int:
    """Task pairs SFT trains on: ``steps`` optimizer steps (default: from its config, max_steps, or epochs
    over data.n_train) of batch_size per process x grad_accum x hardware.processes."""
    s = cfg["sft"]
    per_step = s["batch_size"] * s["grad_accum"] * cfg["hardware"]["processes"]
    if steps is None:
        steps = s["max_steps"] if s.get("max_steps", -1) > 0 else -(-int(s["epochs"] * cfg["data"]["n_train"]) // per_step)
    return steps * per_step


def _per_process(cfg: dict, n: int) -> int:
    """A TRL trainer's batch is per process: the sequences of one step on every process."""
    return n * cfg["hardware"]["processes"]


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
    # the budget (config budget.mode): the key holding the method's number of steps, and the sequences
    # it trains on per step (task pairs, policy samples, chosen + rejected responses of preference pairs),
    # or None for a method whose run is not budgeted
    budget: tuple[str, Callable[[dict], int]] | None = None
    # the sequences one unbudgeted run trains on (SFT: its task pairs), for the chains built on it
    sequences: Callable[[dict], int] | None = None

    def load(self):
        return importlib.import_module(self.module)

    @property
    def label(self) -> str:
        return self.style[0] or self.name


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("sft", "methods.sft", "base", "supervised fine-tuning on the task data (TRL SFTTrainer)",
               style=("SFT", "*", "black"), sequences=sft_sequences),
        Method("l3m", "methods.l3m", "base", "L3M: task NLL + relaxed log-barrier of the constraints, one stage",
               reads=("onpolicy", "constraints", "rewards", "generation"), needs=_constraint_rewards,
               grid="constraints", lengths=True, style=("L3M", "o", "tab:red"),
               budget=("l3m.steps", _onpolicy_sequences)),
        Method("mm", "methods.minimax", "sft", "minimax: Lagrangian saddle point with dual ascent and KL to SFT",
               reads=("onpolicy", "constraints", "rewards", "generation"), needs=_constraint_rewards,
               grid="constraints", style=("MM", "s", "tab:blue"),
               budget=("mm.steps", lambda cfg: _onpolicy_sequences(cfg, cfg["mm"]["task_weight"]))),
        Method("mixture", "methods.mixture", "sft", "mixture-of-rewards RLHF with KL to SFT (TRL RLOOTrainer)",
               reads=("onpolicy.temperature", "rewards", "experiments.two_reward.rewards"), needs=_mixture_rewards,
               grid="weights", prefix="mix", style=("mixture RLHF", "^", "tab:green"),
               budget=("mixture.steps", lambda cfg: _per_process(
                   cfg, cfg["mixture"]["prompts_per_step"] * cfg["mixture"]["samples_per_prompt"]))),
        Method("dpo", "methods.dpo", "sft", "DPO on the preference pairs (TRL DPOTrainer)",
               needs=lambda cfg: {"pairs": cfg["dpo"]["pairs"]}, grid="single", style=("DPO", "D", "tab:purple"),
               budget=("dpo.max_steps", lambda cfg: _per_process(cfg, 2 * cfg["dpo"]["batch_size"]))),
        Method("cpo", "methods.cpo", "sft", "constrained preference optimisation: DPO s.t. a margin constraint",
               needs=lambda cfg: {"pairs": [cfg["cpo"]["objective"], cfg["cpo"]["constraint"]]}, grid="single",
               style=("CPO", "P", "tab:orange"),
               budget=("cpo.steps", lambda cfg: 4 * cfg["cpo"]["batch_size"])),  # objective and constraint pairs
    ]
}


def shared_model(name: str) -> bool:
    """A model every training seed shares (it defines the task): the base model and the reward models."""
    return name == "base" or name.startswith("rm_")


def model_folder(models_root, name: str, seed="{seed}") -> str:
    """A model's folder under resources/<name>/ (the DAG's ``model_dir``): the shared ones in
    models/<model>, the trained ones in seed<seed>/models/<model> (``seed`` a number or the wildcard)."""
    return f"{models_root}/models/{name}" if shared_model(name) else f"{models_root}/seed{seed}/models/{name}"


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


def _get_key(cfg: dict, key: str):
    section, name = key.split(".")
    return cfg[section][name]


def sequences(cfg: dict, method: str) -> int:
    """The sequences one run of ``method`` trains on under ``cfg`` (its steps times its sequences per
    step), or 0 for a method that declares neither."""
    m = get(method)
    if m.budget is None:
        return m.sequences(cfg) if m.sequences else 0
    key, per = m.budget
    return max(_get_key(cfg, key), 0) * per(cfg)


def budget_of(cfg: dict, method: str) -> dict:
    """What one run of ``method`` trains on under ``cfg`` (a resolved config with the run's overrides):
    its steps and sequences, or {} for a method without a budget entry."""
    m = get(method)
    if m.budget is None:
        return {}
    return {"steps": _get_key(cfg, m.budget[0]), "sequences": sequences(cfg, method)}


def chain(method: str) -> list[str]:
    """The methods whose runs a model of ``method`` needs, in order (MM: sft, mm; L3M: l3m)."""
    out, m = [method], get(method)
    while m.init_from != "base":
        out.insert(0, m.init_from)
        m = get(m.init_from)
    return out


def budget_steps(cfg: dict) -> dict[str, int]:
    """The steps every budgeted method gets under ``cfg["budget"]`` (a resolved config), by key
    ("mm.steps": 80, ...); empty for mode none. The reference method (L3M) keeps its own steps; the
    models a method starts from (SFT) keep theirs. equal_compute: the method's whole chain (SFT, then
    the method) trains on as many sequences as the reference's run (rounded up to a whole step);
    equal_steps: the reference's number of steps."""
    mode, ref = cfg["budget"]["mode"], cfg["budget"]["reference"]
    if mode == "none":
        return {}
    ref_steps = _get_key(cfg, METHODS[ref].budget[0])
    ref_units = sequences(cfg, ref)
    out = {}
    for m in METHODS.values():
        if m.name == ref or m.budget is None:
            continue
        key, per = m.budget
        before = sum(sequences(cfg, c) for c in chain(m.name)[:-1])
        if mode == "equal_compute" and ref_units - before <= 0:
            raise ValueError(f"budget.mode equal_compute: {'+'.join(chain(m.name)[:-1])} alone trains on {before} "
                             f"sequences, at least the {ref_units} of {ref}'s run, so {m.name} would get no steps; "
                             f"give {ref} more steps, its chain fewer, or use budget.mode equal_steps or none")
        out[key] = ref_steps if mode == "equal_steps" else -(-(ref_units - before) // per(cfg))
    return out


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


def same_point(a, b) -> bool:
    """Two constraint points (b_1, b_2, ...) are the same point: equal lengths, each bound within 1e-9."""
    return len(a) == len(b) and all(abs(x - y) <= 1e-9 for x, y in zip(a, b))


def tuned_setting(two: dict, method: str, point: list) -> dict:
    """The chosen setting ({"section.key": value}) of experiments.two_reward.tuned for ``method`` at
    ``point``: the entry of that method whose reward pair is the experiment's and whose point is this
    one; {} (the method's own settings) otherwise. Keyed by the rewards and the point themselves, so an
    overlay with other rewards never inherits a setting chosen for another experiment."""
    for entry in two.get("tuned") or []:
        if entry["method"] == method and list(entry["rewards"]) == list(two["rewards"]) \
                and same_point(entry["point"], point):
            return dict(entry["set"])
    return {}


def nest(values: dict) -> dict:
    """{"section.key": value} -> {section: {key: value}}: a sweep setting as config overrides."""
    out: dict = {}
    for k, v in values.items():
        section, name = k.split(".")
        out.setdefault(section, {})[name] = v
    return out


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
                    chosen = tuned_setting(two, m.name, pt)
                    add(Variant(f"{pre}_pt{i}", m.name, "two_reward", {**nest(chosen), **cons}, point=i))
            elif m.grid == "weights":
                for j, w in enumerate(cfg[m.name]["weights"]):
                    add(Variant(f"{pre}{j}", m.name, "two_reward", {m.name: {"weight": w}}, weights=w))
            elif m.grid == "single":
                add(Variant(m.name, m.name, "two_reward"))
            else:
                raise ValueError(f"method {m.name}: unknown grid {m.grid!r} (constraints, weights, single or None)")
    return out


def swept_grids(cfg: dict) -> dict:
    """The grids of ``tune.grid`` the sweep trains: every method's, or those ``tune.methods`` names."""
    only = cfg["tune"].get("methods")
    return {m: g for m, g in cfg["tune"]["grid"].items() if only is None or m in only}


def tune_rows(cfg: dict) -> list[dict]:
    """The validation sweep's models (config ``tune.grid``): for every method with a grid, the product
    of its value lists is its settings (s0, s1, ... in product order); each setting is trained once per
    two-reward model of the method (per constraint point, per weight vector, or the single one), with
    that model's overrides and the setting's keys. Rows: variant, method, point, setting, values
    ({"section.key": value}), overrides (the --set of the run, without the seed). ``tune.methods``
    (when set) keeps the methods it names."""
    import copy
    import itertools

    rows = []
    models = [v for v in variants(cfg).values() if v.experiment == "two_reward"]
    for method, grid in swept_grids(cfg).items():
        keys = list(grid)
        for i, combo in enumerate(itertools.product(*(grid[k] for k in keys))):
            values = dict(zip(keys, combo))
            setting = nest(values)
            for v in models:
                if v.method == method:
                    over = copy.deepcopy(v.overrides or {})
                    for section, changed in setting.items():
                        over[section] = {**over.get(section, {}), **changed}
                    rows.append({"variant": v.name, "method": method, "point": v.point, "setting": f"s{i}",
                                 "values": values, "overrides": over})
    return rows


_load_plugins()
