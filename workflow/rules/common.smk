# Config loading, validation (before any job starts) and the paths every rule shares.
import hashlib
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, workflow.basedir)
from methods.core.config import ConfigError, deep_merge, validate_config  # noqa: E402
from methods.registry import METHODS  # noqa: E402

if "name" not in config:  # no --configfile: the embedded default (plus any --config key=value)
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
ENV = f"PYTHONPATH={workflow.basedir}${{PYTHONPATH:+:$PYTHONPATH}} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false"

# The resolved config (defaults filled in) every job reads; rewritten only when it changes.
CONFIG_FILE = f"{RES}/config.resolved.yaml"
_text = yaml.safe_dump(CFG, sort_keys=False)
if not Path(CONFIG_FILE).exists() or Path(CONFIG_FILE).read_text() != _text:
    Path(CONFIG_FILE).parent.mkdir(parents=True, exist_ok=True)
    Path(CONFIG_FILE).write_text(_text)

LENGTH = CFG["experiments"]["length"]
LENGTH_MODELS = [f"l3m_len{i}" for i in range(len(LENGTH["bands"]))] if LENGTH["enabled"] else []
MODELS = CFG["evaluation"]["models"] + LENGTH_MODELS
REWARDS = CFG["evaluation"]["rewards"]
TRAIN_THREADS = min(CFG["hardware"]["train_threads"], workflow.cores)


def fingerprint(*sections):
    """A short hash of the config sections a rule depends on: a rule reruns when they change."""
    blob = json.dumps({s: CFG.get(s) for s in sections}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def model_dir(name):
    return f"{RES}/models/{name}"


wildcard_constraints:
    model="[A-Za-z0-9_]+",
    reward="[A-Za-z0-9_]+",
