# Config loading, validation (before any job starts) and the paths every rule shares.
import hashlib
import json
import os
import sys
from pathlib import Path

import yaml

sys.path.insert(0, workflow.basedir)
from methods.core.config import ConfigError, deep_merge, validate_config  # noqa: E402
from methods.core.rewards import FOLDER_TYPES  # noqa: E402
from methods.registry import METHODS  # noqa: E402
from methods.registry import model_folder as registry_model_folder  # noqa: E402
from methods.registry import tune_rows as registry_tune_rows  # noqa: E402
from methods.registry import variants as registry_variants  # noqa: E402


def _yaml_typed(value):
    """Snakemake reads the values nested in --config 'section={"key": 5}' as strings: type them as YAML."""
    if isinstance(value, dict):
        return {k: _yaml_typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_yaml_typed(v) for v in value]
    return yaml.safe_load(value) if isinstance(value, str) else value


_cli = {
    k: _yaml_typed(v) if isinstance(v, (dict, list)) else v for k, v in dict(workflow.config_settings.config).items()
}
config.update(deep_merge(dict(config), _cli))
if "name" not in config:
    if workflow.config_settings.configfiles:  # a named config must say where its outputs go
        raise WorkflowError(
            f"config.name: missing in {', '.join(map(str, workflow.config_settings.configfiles))}; every configfile "
            f"needs a name (its outputs go to resources/<name>/ and results/<name>/); without one it would write "
            f"over the embedded default's results/default"
        )
    # no --configfile: the embedded default (plus any --config key=value)
    _default = yaml.safe_load((Path(workflow.basedir) / "config" / "config.yaml").read_text())
    config.update(deep_merge(_default, dict(config)))
try:
    CFG = validate_config(dict(config))
except ConfigError as e:
    raise WorkflowError(str(e)) from None

NAME = CFG["name"]
RES = f"resources/{NAME}"  # data and models (git-ignored)
OUT = f"results/{NAME}"  # samples, metrics, tables, figures
FIG = f"{OUT}/figures"
TABLE = f"{OUT}/tables/metrics.csv"
LOG = f"logs/{NAME}"
BENCH = f"{OUT}/benchmarks"
PY = sys.executable
# offline: true (the embedded configs) runs every job without hub access; offline: false leaves the
# user's environment alone, so hub ids download where a hub is reachable
ENV = f"PYTHONPATH={workflow.basedir}${{PYTHONPATH:+:$PYTHONPATH}} TOKENIZERS_PARALLELISM=false" + (
    " HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1" if CFG["offline"] else ""
)

# The resolved config (defaults filled in) every job of this invocation reads, content-addressed:
# resources/<name>/config/<hash>.yaml is written once (when jobs are about to run, not by a dry run,
# --lint or --report) and never rewritten, so a second `snakemake` with the same name and another
# config writes its own file and cannot change what the jobs of a running study read.
CONFIG_TEXT = yaml.safe_dump(CFG, sort_keys=False)
CONFIG_FILE = f"{RES}/config/{hashlib.sha256(CONFIG_TEXT.encode()).hexdigest()[:16]}.yaml"
# The one software environment of every rule (`--software-deployment-method conda`); its pins are
# requirements.txt's (tests/test_workflow.py checks that they agree).
CONDA_ENV = "../../environment.yml"

LENGTH = CFG["experiments"]["length"]
TWO = CFG["experiments"]["two_reward"]
# the independent signals (rewards.<r>.check) the two-reward table shows beside its two rewards
TWO_CHECKS = [c for c in (CFG["rewards"][r].get("check") for r in TWO["rewards"] if r in CFG["rewards"]) if c]

# The experiments' models, from the registry (methods/registry.py `variants`): per length band and per
# two-reward constraint point one model of every "constraints" method (l3m_len<i>, l3m_pt<i>, mm_pt<i>),
# one per weight vector of a "weights" method (mix<j>), the "single" methods (dpo, cpo) under their
# own name. VARIANTS: those trained with overrides (a model name -> (method, overrides passed as --set)).
EXPERIMENT = registry_variants(CFG)
VARIANTS = {v.name: (v.method, v.overrides) for v in EXPERIMENT.values() if v.overrides is not None}
LENGTH_MODELS = [v.name for v in EXPERIMENT.values() if v.experiment == "length"]
TWO_MODELS = [v.name for v in EXPERIMENT.values() if v.experiment == "two_reward"]
# the weight-grid models (mix<j>): the comparisons pair L3M with the one nearest each point on their
# Pareto front, and that front is drawn from their val prompts (the evaluate_val rule), not the test ones
FRONT_MODELS = [n for n in TWO_MODELS if METHODS[EXPERIMENT[n].method].grid == "weights"]
POINT_MODELS = [v.name for v in EXPERIMENT.values() if v.point is not None]
# CPO's own training log (its constraint's violation, lambda, margins) is drawn and kept per seed too
CPO_MODELS = [n for n in TWO_MODELS if EXPERIMENT[n].method == "cpo"]
MODELS = list(
    dict.fromkeys(
        CFG["evaluation"]["models"] + LENGTH_MODELS + (["base", "sft"] if TWO["enabled"] else []) + TWO_MODELS
    )
)
REWARDS = CFG["evaluation"]["rewards"]
# rewards whose folder the DAG builds (the reward_model rule), trained reward models and the shipped
# scorers' normalisation
RM_REWARDS = [n for n, r in CFG["rewards"].items() if r["type"] in FOLDER_TYPES]
PAIR_SETS = {CFG["rewards"][r]["pairs"] for r in RM_REWARDS}
# those the experiments use (evaluated, or constrained by the two-reward experiment): the default target's cards
USED_RM_REWARDS = [r for r in RM_REWARDS if r in REWARDS or (TWO["enabled"] and r in TWO["rewards"] + TWO_CHECKS)]
TRAIN_THREADS = CFG["hardware"]["train_threads"]  # Snakemake caps it at --cores

# Training jobs on several processes (hardware.processes > 1, one per GPU): `accelerate launch`
# (torchrun underneath, a free port per job) starts them; TRL's trainers then run DDP (or FSDP with
# hardware.fsdp) and L3M/MM split their batch over the processes. With cuda the jobs ask for that
# many GPUs (resources gpu: sbatch --gpus under the SLURM profile).
_HW = CFG["hardware"]
PROCS = _HW["processes"]
GPUS = PROCS if _HW["device"] == "cuda" else 0
TRAIN_MEM, TRAIN_TIME = _HW["train_mem_mb"], _HW["train_runtime"]
if PROCS == 1:
    TRAIN_CLI = f"{PY} -m methods.cli"
else:
    _mp = "bf16" if _HW["bf16"] and _HW["device"] == "cuda" else "no"
    TRAIN_CLI = (
        f"{PY} -m accelerate.commands.launch --multi_gpu --num_processes {PROCS} --num_machines 1 "
        f"--mixed_precision {_mp} --dynamo_backend no --main_process_port 0 -m methods.cli"
    )


def _section(path):
    node = CFG
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def fingerprint(*sections):
    """A short hash of the config sections ("section" or "section.key") a job depends on; the job
    reruns when they change."""
    blob = json.dumps({s: _section(s) for s in sections}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Seeds (config `seeds`): every trained model once per seed, under resources/<name>/seed<s>/models/, and
# its samples and metrics under results/<name>/seed<s>/. Shared by all seeds (they define the task):
# the data, the base model and the reward models, under resources/<name>/models/.
SEEDS = CFG["seeds"]


def train_fingerprint(method, overrides=None, seed="{seed}"):
    """What a training job depends on: data, hardware, the method's section and the sections its
    registry entry reads, a variant's overrides (a band, a constraint point, mixture weights) and its
    training seed (the job's, not the list of seeds: adding a seed retrains nothing that exists).
    The models every seed shares read ``seed`` (the task's seed); a model is built from them, so its
    fingerprint holds it too."""
    fp = f"{fingerprint('data', 'seed', 'hardware', method, *METHODS[method].reads)}@seed{seed}"
    return fp if overrides is None else fp + json.dumps(overrides, sort_keys=True)


def seed_fingerprint(*sections):
    """A per-seed job's fingerprint (evaluation, lm-eval): its sections plus the job's seed."""
    return lambda w: f"{fingerprint(*sections)}@seed{w.seed}"


def model_dir(name, seed="{seed}"):
    """A model's folder (registry ``model_folder``): resources/<name>/models/<model> for the shared
    ones, else resources/<name>/seed<seed>/models/<model> (``seed`` a number or the wildcard)."""
    return registry_model_folder(RES, name, seed)


def seed_out(seed="{seed}"):
    """results/<name>/seed<seed>: one seed's samples, metrics, training logs and curves."""
    return f"{OUT}/seed{seed}"


def train_benchmark(name, seed="{seed}"):
    """The Snakemake benchmark file of the job that trains model ``name`` (either train rule)."""
    return f"{BENCH}/seed{seed}/train_{name}.tsv"


def seed_set(overrides):
    """The --set of a training job: the variant's overrides plus the job's training seed."""
    return lambda w: json.dumps({**(overrides(w) if callable(overrides) else overrides or {}), "seed": int(w.seed)})


def pair_dir(name):
    return f"{RES}/data/{name}"


def write_config_file():
    """Write CONFIG_FILE once (atomically): called by the Snakefile's onstart, before any job."""
    if not Path(CONFIG_FILE).exists():
        Path(CONFIG_FILE).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{CONFIG_FILE}.{os.getpid()}.tmp")
        tmp.write_text(CONFIG_TEXT)
        tmp.replace(CONFIG_FILE)


def parent(name, levels=1, io="input"):
    """A params function: the folder ``levels`` up from the job's first ``io`` file named ``name``
    (folders the commands take are derived from the files the DAG tracks, never hard-coded)."""

    def get(wildcards, input, output):
        files = getattr(input if io == "input" else output, name)
        first = files if isinstance(files, str) else files[0]
        return str(Path(first).parents[levels - 1])

    return get


def init_model(wildcards):
    return model_dir(METHODS[wildcards.method].init_from, wildcards.seed)


def rm_backbone(wildcards):
    """A reward model's starting model as an input: the base model folder when it starts from it (a
    pre-trained backbone or a scorer needs no job before it)."""
    spec = CFG["rewards"][wildcards.reward]
    return [model_dir("base")] if spec["type"] == "reward_model" and spec["backbone"] == "base" else []


def rm_init(wildcards):
    spec = CFG["rewards"][wildcards.reward]
    return model_dir("base") if spec.get("backbone", "base") == "base" else spec["backbone"]


def reward_inputs(names):
    """The reward-model folders the given rewards need (rules and hub models need none)."""
    return [model_dir(f"rm_{n}") for n in dict.fromkeys(names) if n in RM_REWARDS]


def method_inputs(method, overrides):
    """What a training run reads besides its init model and the task data, as its registry entry
    declares it (``needs``): the reward models among its rewards, its pair sets."""
    need = METHODS[method].needs(deep_merge(CFG, overrides))
    return reward_inputs(need.get("rewards", [])) + [f"{pair_dir(n)}/train.jsonl" for n in need.get("pairs", [])]


# L3M ablations (workflow/rules/ablations.smk): one row of a Paramspace grid per setting; its keys
# come from the l3m section (the barrier's schedule, clipping) or the onpolicy one (the estimator)
ABL_L3M_KEYS = ["mu0", "mu_min", "mu_decay", "relax", "clip", "barrier_weight"]
ABL_ONPOLICY_KEYS = ["ema", "length_normalize", "pg_estimator", "baseline"]
ABL_KEYS = [
    "mu0",
    "mu_min",
    "mu_decay",
    "relax",
    "ema",
    "clip",
    "length_normalize",
    "pg_estimator",
    "baseline",
    "barrier_weight",
]  # path order


def ablation_frame():
    import pandas as pd

    rows = []
    for st in CFG["ablations"]["settings"]:
        full = {k: st.get(k, CFG["l3m" if k in ABL_L3M_KEYS else "onpolicy"][k]) for k in ABL_KEYS}
        full["relax"] = "mu2" if full["relax"] is None else full["relax"]
        rows.append({"name": st["name"], **full})
    return pd.DataFrame(rows, columns=["name"] + ABL_KEYS)


def ablation_set(wildcards):
    """The --set overrides of one ablation row: its l3m and onpolicy keys, the ablation band as the constraint."""
    inst = ABLATIONS.instance(wildcards)
    v = {k: inst[k] for k in ABL_KEYS}
    v["relax"] = None if str(v["relax"]) == "mu2" else float(v["relax"])
    v["length_normalize"] = str(v["length_normalize"]) == "True"
    for k in ("mu0", "mu_min", "ema"):
        v[k] = float(v[k])
    for k in ("mu_decay", "barrier_weight"):
        v[k] = "auto" if str(v[k]) == "auto" else float(v[k])
    cons = [{"reward": CFG["ablations"]["reward"], "band": CFG["ablations"]["band"]}]
    return {
        "l3m": {k: v[k] for k in ABL_L3M_KEYS},
        "onpolicy": {k: v[k] for k in ABL_ONPOLICY_KEYS},
        "constraints": cons,
    }


# The validation sweep (workflow/rules/tune.smk): its rows by (variant, setting), from the registry
TUNE_ROWS = {(r["variant"], r["setting"]): r for r in registry_tune_rows(CFG)}


def tune_frame(rows):
    """The validation sweep's Paramspace rows: one per (variant, setting)."""
    import pandas as pd

    return pd.DataFrame([{"variant": v, "setting": st} for v, st in rows], columns=["variant", "setting"])


def tune_row(w):
    return TUNE_ROWS[(w.variant, w.setting)]


wildcard_constraints:
    seed="[0-9]+",
    model="[A-Za-z0-9_]+",
    variant="[A-Za-z0-9_]+",
    reward="[A-Za-z0-9_]+",


# the validation sweep (tune.smk): its checkpoint decides which models are scored on test
def tune_test_inputs(wildcards):
    """The test-prompt metrics of the settings the sweep chose on val (a checkpoint: known once
    tables/tuning_choice.csv exists)."""
    from evaluation.tables import read_table

    choice = read_table(checkpoints.tune_table.get().output.choice)
    if "setting" not in choice:  # an empty sweep
        return []
    chosen = choice[choice["setting"].notna()]
    keys = sorted({f"variant~{v}_setting~{st}" for v, st in zip(chosen["variant"], chosen["setting"])})
    return expand(
        f"{TUNE_OUT}/test/seed{{seed}}/metrics/{{key}}/{{m}}.json",
        seed=TUNE_SEEDS,
        key=keys,
        m=["perplexity"] + [f"reward_{r}" for r in TUNE_REWARDS],
    )
