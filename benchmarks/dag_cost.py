"""The whole DAG's cost (issue 18, item 8): wall-clock and CPU-seconds of one Snakemake run, from a clean
clone of the committed tree, with the per-rule split from the jobs' own benchmark files.

    # the 3-seed embedded default, timed from a clean clone (hours on 2 cores)
    .venv/bin/python benchmarks/dag_cost.py --out results/benchmarks/dag_default --cores 2
    # an overlay (configfiles are relative to the repository root)
    .venv/bin/python benchmarks/dag_cost.py --out results/benchmarks/dag_two_reward --cores 2 \\
        --configfile config/config.yaml config/overlays/two_reward_lm.yaml
    # only the split of a run already made (no run, no clone): its results/<name>/benchmarks/
    .venv/bin/python benchmarks/dag_cost.py --out <dir> --summarize <run>/results/default_two_reward/benchmarks

A run clones HEAD into a temporary folder (``--workdir`` to keep it), links this checkout's ``.venv``
into it (``--install`` runs ``./install.sh`` there instead, timed apart) and runs
``snakemake --cores N [--configfile ...] [targets]`` there. Wall-clock is the snakemake process's;
CPU-seconds are user + system time of it and every job it waited for (``RUSAGE_CHILDREN``), so the
reward models, the base model and every training and evaluation job are counted whatever their
threads. The split: per rule (the benchmark file's stem without its wildcards), jobs, wall-seconds
and CPU-seconds summed from ``results/<name>/benchmarks/**.tsv`` (Snakemake's ``benchmark:`` files,
written by every job of the DAG that trains, scores or builds; the figure and table rules have none,
so the split sums to less than the total). Writes ``dag_cost.{json,md}`` into ``--out``: the command,
the commit, the machine, the totals, the split and the share of the on-policy training rules.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# the rules whose jobs train on policy samples (L3M, MM, the mixture; DPO and CPO train on fixed pairs)
ONPOLICY = re.compile(r"^train_(l3m|mm|mix)")


def rule_of(tsv: Path) -> str:
    """A benchmark file's job kind: its stem with the model's index cut off, e.g. train_l3m_pt0 ->
    train_l3m_pt, evaluate_mm_pt3 -> evaluate_mm_pt, reward_model_rating -> reward_model_rating."""
    return re.sub(r"\d+$", "", tsv.stem)


def split(bench_root: Path) -> list[dict]:
    """Per job kind: jobs, summed wall-seconds (``s``) and CPU-seconds (``cpu_time``) of the last row
    of every benchmark file under ``bench_root`` (a file holds one row per repeat; the DAG writes one)."""
    from evaluation.tables import benchmark_seconds

    agg: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0})
    for tsv in sorted(bench_root.rglob("*.tsv")):
        seconds = benchmark_seconds(tsv)
        if seconds is None:
            continue
        a = agg[rule_of(tsv)]
        a["jobs"] += 1
        a["wall_s"] += seconds[0]
        a["cpu_s"] += seconds[1]
    out = [{"job": k, "jobs": v["jobs"], "wall_s": round(v["wall_s"], 1), "cpu_s": round(v["cpu_s"], 1)}
           for k, v in agg.items()]
    return sorted(out, key=lambda r: -r["cpu_s"])


def run_dag(args) -> dict:
    """Clone, (install,) run snakemake; return the totals."""
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dag_cost_"))
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"--workdir {work}: not empty; give an empty or new folder (a clean clone is the point)")
    subprocess.run(["git", "clone", "-q", str(REPO), str(work)], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True, check=True)
    doc = {"commit": head.stdout.strip(), "workdir": str(work)}
    if args.install:
        t0 = time.time()
        subprocess.run(["./install.sh"], cwd=work, check=True)
        doc["install_wall_s"] = round(time.time() - t0, 1)
    else:
        os.symlink(REPO / ".venv", work / ".venv")
    # targets before the options: --configfile takes every word after it
    cmd = [str(work / ".venv" / "bin" / "snakemake"), *args.targets, "--cores", str(args.cores)]
    if args.configfile:
        cmd += ["--configfile", *args.configfile]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    with open(work / "dag_cost.log", "w") as log:
        p = subprocess.run(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise SystemExit(f"snakemake failed (exit {p.returncode}); its log: {work / 'dag_cost.log'}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    log_text = (work / "dag_cost.log").read_text()
    done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", log_text)
    name = _name(work, args.configfile)
    doc.update(snakemake=" ".join(["snakemake", *cmd[1:]]), wall_s=round(wall, 1), cpu_s=round(cpu, 1),
               jobs=int(done[-1][1]) if done else None, bench_root=str(work / "results" / name / "benchmarks"))
    return doc


def _name(work: Path, configfiles: list[str] | None) -> str:
    """config.name as the run resolved it (the configfiles merged as Snakemake merges them; without
    any, the embedded default's)."""
    from methods.core.config import read_config_files

    return read_config_files(work / f for f in configfiles or ["config/config.yaml"]).get("name", "default")


def main(argv: list[str] | None = None) -> None:
    from benchmarks.step_bench import write_report
    from methods.core.record import device_name, git_revision, package_versions

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--configfile", nargs="*", default=None, help="relative to the repository root")
    ap.add_argument("--targets", nargs="*", default=[])
    ap.add_argument("--workdir", default=None, help="where to clone (empty or new); default a temporary folder")
    ap.add_argument("--install", action="store_true", help="./install.sh in the clone instead of linking .venv")
    ap.add_argument("--keep", action="store_true", help="keep the clone (default: removed after the split)")
    ap.add_argument("--summarize", type=Path, default=None,
                    help="no run: only the split of an existing results/<name>/benchmarks folder")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.summarize:
        if not args.summarize.is_dir():
            raise SystemExit(f"--summarize {args.summarize}: no such folder; give a results/<name>/benchmarks folder")
        doc = {"commit": git_revision(), "bench_root": str(args.summarize), "summarized_only": True}
    else:
        doc = run_dag(args)
    rows = split(Path(doc["bench_root"]))
    if not rows:
        raise SystemExit(f"{doc['bench_root']}: no benchmark files with cpu_time; nothing to split")
    cpu_jobs = sum(r["cpu_s"] for r in rows)
    onpolicy = sum(r["cpu_s"] for r in rows if ONPOLICY.match(r["job"]))
    doc.update(cores=args.cores, device=device_name(), cpus=os.cpu_count(), packages=package_versions(),
               command=" ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
               split=rows, cpu_s_in_benchmarked_jobs=round(cpu_jobs, 1),
               onpolicy_share_of_benchmarked_cpu=round(onpolicy / cpu_jobs, 3),
               perfect_packing_wall_s=round(cpu_jobs / args.cores, 1))
    ratios = {"onpolicy_share_of_benchmarked_cpu": doc["onpolicy_share_of_benchmarked_cpu"]}
    if "wall_s" in doc:
        ratios["wall_over_60min_target"] = round(doc["wall_s"] / 3600, 3)
        ratios["cpu_s_over_cores_x_wall"] = round(doc["cpu_s"] / (args.cores * doc["wall_s"]), 3)
    header = [f"# DAG cost, commit {doc['commit']}",
              (f"Wall-clock {doc['wall_s']} s, CPU {doc['cpu_s']} s, {doc['jobs']} jobs, {args.cores} cores."
               if "wall_s" in doc else "The split of an existing run (no wall-clock measured here).")
              + f" Benchmarked jobs: {doc['cpu_s_in_benchmarked_jobs']} CPU-s"
              f" ({doc['perfect_packing_wall_s']} s on {args.cores} cores with perfect packing)."]
    write_report(args.out / "dag_cost", doc, rows, ratios, header)
    if not args.summarize and not args.keep and not args.workdir:
        shutil.rmtree(doc["workdir"], ignore_errors=True)


if __name__ == "__main__":
    main()
