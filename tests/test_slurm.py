"""The micro DAG through `--profile slurm` on a real single-node SLURM started on this machine
(Debian's slurm-wlm and munge, installed if missing). Skips, saying why, where that cannot run."""
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from .conftest import REPO

SCRIPT = REPO / "tests" / "slurm_cluster.sh"


def _skip(reason):
    print(f"SLURM test skipped: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if sys.platform != "linux" or os.geteuid() != 0:
        _skip("needs root on Linux to run munged, slurmctld and slurmd")
    if not shutil.which("slurmctld"):
        if not shutil.which("apt-get"):
            _skip("slurm-wlm is not installed and there is no apt-get to install it")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        p = subprocess.run(["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"], env=env, capture_output=True,
                           text=True, timeout=900)
        if p.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=900)
            p = subprocess.run(["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"], env=env,
                               capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            _skip(f"apt-get could not install slurm-wlm and munge: {p.stderr[-300:]}")
    d = tmp_path_factory.mktemp("slurm")
    p = subprocess.run(["bash", str(SCRIPT), "start", str(d)], capture_output=True, text=True, timeout=300)
    if p.returncode == 3:
        _skip(p.stderr.strip())
    assert p.returncode == 0, p.stdout + p.stderr + "".join(f.read_text() for f in (d / "log").glob("*.log"))
    yield d
    subprocess.run(["bash", str(SCRIPT), "stop", str(d)], capture_output=True, timeout=60)


def test_micro_dag_runs_through_the_slurm_profile(cluster, tmp_path):
    work = tmp_path / "dag"
    work.mkdir()
    # the profile as users run it (`--profile slurm` from the repository root), with shorter status polls
    shutil.copytree(REPO / "slurm", work / "slurm")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", SLURM_CONF=str(cluster / "slurm.conf"))
    # the micro config with one length band, one constraint point and one mixture weight: every rule of the
    # DAG goes through sbatch, 8 models instead of 12 (the whole grid runs locally in test_workflow.py)
    cfg = yaml.safe_load((REPO / "config" / "micro.yaml").read_text())
    cfg["experiments"]["length"]["bands"] = cfg["experiments"]["length"]["bands"][:1]
    cfg["experiments"]["two_reward"]["points"] = cfg["experiments"]["two_reward"]["points"][:1]
    cfg["mixture"]["weights"] = cfg["mixture"]["weights"][:1]
    cfg["seeds"] = [7]  # one training seed (the seed dimension is exercised locally in test_workflow.py)
    (work / "micro.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "all", "--profile", "slurm",
           "--seconds-between-status-checks", "2", "--slurm-init-seconds-before-status-checks", "1",
           "--configfile", str(work / "micro.yaml")]
    p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1500)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", out)
    print(f"{len(submitted)} jobs went through sbatch (SLURM job ids {submitted[0]}..{submitted[-1]})")
    assert len(submitted) >= 20  # every training and evaluation job, not the local figure rules
    root = work / "logs" / "slurm"  # one SLURM log per job: rule_<name>/<wildcards>/<slurm job id>.log
    logs = list(root.rglob("*.log"))
    assert len(logs) == len(submitted)
    assert {f.relative_to(root).parts[0] for f in logs} >= {"rule_base_model", "rule_reward_model", "rule_train",
                                                            "rule_train_variant", "rule_evaluate"}
    assert all("1 of 1 steps (100%) done" in f.read_text() for f in logs)  # each job ran to its end in SLURM
    acct = subprocess.run(["scontrol", "show", "job", submitted[-1]], env=env, capture_output=True, text=True)
    assert "JobState=COMPLETED" in acct.stdout or "Invalid job id" in acct.stderr  # finished (or already purged)
    for f in ("tables/metrics.csv", "tables/two_reward.csv", "figures/fig2_length.pdf", "figures/fig3_two_reward.png"):
        assert (work / "results" / "micro" / f).stat().st_size > 100
