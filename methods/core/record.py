"""Run records: what produced a result (config, seed, git revision, package versions, device)."""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import random
import subprocess
import time
from pathlib import Path

PACKAGES = ("torch", "transformers", "trl", "datasets", "accelerate", "tokenizers", "snakemake",
            "lm-eval", "pandas", "seaborn", "numpy")
REPO = Path(__file__).resolve().parents[2]


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not rev:
            return "unknown"
        # dirty: tracked code or config changed; results/ is left out (a run rewrites the committed
        # results it regenerates, which says nothing about the code that made them)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda x{torch.cuda.device_count()} ({torch.cuda.get_device_name(0)})"
    return f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def run_record(config: dict, seed: int | None, started: float | None = None, **extra) -> dict:
    """The provenance block stored in every result file and beside every model.

    Timing (``created``, ``wall_clock_s``) is recorded only when ``started`` is given: model run
    records carry it; metrics, samples and tables do not, so that a rerun with the same config and
    seed reproduces them byte for byte (their wall-clock is in the rules' benchmark files)."""
    rec = {
        "config": config,
        "seed": seed,
        "git_revision": git_revision(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "device": device_name(),
    }
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        rec["processes"] = int(os.environ["WORLD_SIZE"])
    if started is not None:
        rec["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        rec["wall_clock_s"] = round(time.time() - started, 3)
    rec.update(extra)
    return rec


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def tracks(cfg: dict) -> bool:
    """Whether ``logging.report_to`` asks for TensorBoard events."""
    return cfg.get("logging", {}).get("report_to", "none") == "tensorboard"


def tracking(cfg: dict, work) -> list[str]:
    """``report_to`` for HF/TRL trainers from ``logging.report_to``: TensorBoard events go to
    ``<work>/tensorboard`` (save_trained keeps them in the model folder); none: no tracker."""
    import os
    from pathlib import Path

    if not tracks(cfg):
        return []
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(work) / "tensorboard")
    return ["tensorboard"]
