"""The whole DAG's cost (issue 18, item 8): wall-clock and CPU-seconds of one Snakemake run, from a clean
clone of the committed tree, with the per-rule split from the jobs' own benchmark files.

    # the 3-seed embedded default, timed from a clean clone (hours on 2 cores)
    .venv/bin/python benchmarks/dag_cost.py --out results/benchmarks/dag_default --cores 2
    # an overlay (configfiles are relative to the repository root)
    .venv/bin/python benchmarks/dag_cost.py --out results/benchmarks/dag_two_reward --cores 2 \\
        --configfile config/config.yaml config/overlays/two_reward_lm.yaml
    # a run whose invocation was killed (session or machine gone): go on in its clone, wall-clock summed
    .venv/bin/python benchmarks/dag_cost.py --out results/benchmarks/dag_default --cores 2 --resume <workdir>
    # the report of a finished run again, from its clone (no run)
    .venv/bin/python benchmarks/dag_cost.py --out results/benchmarks/dag_default --report <workdir>
    # only the split of a run already made (no run, no clone): its results/<name>/benchmarks/
    .venv/bin/python benchmarks/dag_cost.py --out <dir> --summarize <run>/results/default_two_reward/benchmarks

A run clones HEAD into a temporary folder (``--workdir`` to keep it), links this checkout's ``.venv``
into it (``--install`` runs ``./install.sh`` there instead, timed apart) and runs
``snakemake --cores N [--configfile ...] [targets]`` there. Wall-clock is the snakemake process's (summed
over the invocations of a resumed run); CPU-seconds are user + system time of it and every job it waited
for (``RUSAGE_CHILDREN``; not known for an invocation killed from outside), so the
reward models, the base model and every training and evaluation job are counted whatever their
threads. The split: per rule (the benchmark file's stem without its wildcards), jobs, wall-seconds
and CPU-seconds summed from ``results/<name>/benchmarks/**.tsv`` (Snakemake's ``benchmark:`` files,
written by every job of the DAG that trains, scores or builds; the figure and table rules have none,
so the split sums to less than the total), those written since the run began only: the clone's
committed ones, an earlier run's, are left out. ``jobs``: the whole DAG's, the first invocation's Job stats
total. Each invocation is a part of ``dag_cost_parts.json`` in the clone, with a heartbeat every 30 s: a
run killed from outside (the session ends; give ``--workdir`` so that the clone outlives it) or failed
goes on with ``--resume <workdir>`` (snakemake ``--unlock``, then ``--rerun-incomplete``, with the run's
own command and cores), its wall-clock summed over the parts; a run still beating is refused.
``--report <workdir>`` writes a finished run's report again. Writes ``dag_cost.{json,md}`` into
``--out``: the command, the commit, the machine, the totals, the split and the share of the on-policy
training rules.
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


def split(bench_root: Path, since: float | None = None) -> list[dict]:
    """Per job kind: jobs, summed wall-seconds (``s``) and CPU-seconds (``cpu_time``) of the last row
    of every benchmark file under ``bench_root`` (a file holds one row per repeat; the DAG writes one).
    ``since``: only the files written since then (a run's start), not those the clone came with (a
    committed earlier run's)."""
    from evaluation.tables import benchmark_seconds

    agg: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0})
    for tsv in sorted(bench_root.rglob("*.tsv")):
        if since is not None and tsv.stat().st_mtime < since:
            continue
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


LEDGER = "dag_cost_parts.json"
HEARTBEAT_S = 30


def _write_ledger(work: Path, ledger: dict) -> None:
    """Atomically (a temporary file of its own, synced, then renamed): a kill or a power loss leaves
    the previous ledger or this one."""
    fd, tmp = tempfile.mkstemp(dir=work, prefix=LEDGER + ".")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(ledger, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, work / LEDGER)


def part_wall(part: dict) -> float:
    """One invocation's wall-seconds: measured when it ended, else (killed: the session or the machine
    went away) from its start to its last heartbeat, at most ``HEARTBEAT_S`` short."""
    return part["wall_s"] if part.get("wall_s") is not None else part["last_seen"] - part["started"]


def totals(ledger: dict) -> dict:
    """The run's wall-clock over its invocations, and its CPU-seconds where measured (a killed
    invocation's children are lost with it, so its CPU-seconds are not known)."""
    parts = ledger["parts"]
    return {"wall_s": round(sum(part_wall(p) for p in parts), 1),
            "cpu_s": round(sum(p["cpu_s"] for p in parts if p.get("cpu_s") is not None), 1),
            "invocations": len(parts), "interrupted": sum(p.get("returncode") is None for p in parts),
            "failed": sum(p.get("returncode") not in (None, 0) for p in parts)}


def _snakemake(work: Path, cmd: list[str], ledger: dict) -> int:
    """Run ``cmd`` in ``work`` as one more part of the ledger: a heartbeat every ``HEARTBEAT_S`` s, so
    that an invocation killed from outside still leaves its wall-clock; wall and CPU when it ends."""
    import threading

    part = {"started": time.time(), "last_seen": time.time(), "wall_s": None, "cpu_s": None, "returncode": None,
            "snakemake": " ".join(["snakemake", *cmd[1:]])}
    ledger["parts"].append(part)
    _write_ledger(work, ledger)
    stop, lock = threading.Event(), threading.Lock()

    def beat():
        while not stop.wait(HEARTBEAT_S):
            with lock:
                if not stop.is_set():
                    part["last_seen"] = time.time()
                    _write_ledger(work, ledger)

    heart = threading.Thread(target=beat, daemon=True)
    heart.start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(work / "dag_cost.log", "a") as log:
        p = subprocess.run(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    with lock:
        stop.set()
    heart.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    part.update(last_seen=time.time(), wall_s=round(time.time() - part["started"], 1), returncode=p.returncode,
                cpu_s=round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1))
    _write_ledger(work, ledger)
    return p.returncode


def run_dag(args) -> dict:
    """Clone, (install,) run snakemake; return the totals. With ``--resume`` continue a run whose
    invocation was killed (or failed), in its clone, with its own command and cores: snakemake
    ``--rerun-incomplete`` from where it stopped, the wall-clock summed over the invocations (the
    killed jobs' lost work included)."""
    if args.report or args.resume:  # an existing run: its clone, ledger and cores
        flag, work = ("--report", Path(args.report)) if args.report else ("--resume", Path(args.resume))
        ledger = read_ledger(work, flag)
        args.cores = int(ledger["cmd"][ledger["cmd"].index("--cores") + 1])  # the run's own, whatever was given
        finished = any(p.get("returncode") == 0 for p in ledger["parts"])
        if args.report:
            if not finished:
                raise SystemExit(f"--report {work}: the run has not finished; --resume {work} goes on with it")
            return ledger_doc(work, ledger)
        if finished:
            raise SystemExit(f"--resume {work}: the run already finished; nothing to resume (--report writes its report)")
        last = ledger["parts"][-1] if ledger["parts"] else {}
        if last.get("returncode", 0) is None and time.time() - last["last_seen"] < 2 * HEARTBEAT_S:
            raise SystemExit(f"--resume {work}: its invocation is still running (heartbeat "
                             f"{time.time() - last['last_seen']:.0f} s ago); resume only a run that was killed")
        subprocess.run([*ledger["cmd"], "--unlock"], cwd=work, capture_output=True)  # the killed one's lock
        code = _snakemake(work, [*ledger["cmd"], "--rerun-incomplete"], ledger)
    else:
        work = Path(args.workdir or tempfile.mkdtemp(prefix="dag_cost_"))
        if work.exists() and any(work.iterdir()):
            raise SystemExit(f"--workdir {work}: not empty; give an empty or new folder (a clean clone is the point)")
        subprocess.run(["git", "clone", "-q", str(REPO), str(work)], check=True)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True, check=True)
        ledger = {"commit": head.stdout.strip(), "workdir": str(work), "configfile": args.configfile, "parts": []}
        print(f"dag_cost: the run's clone is {work} (give it to --resume if this run is killed)", flush=True)
        if args.install:
            t0 = time.time()
            subprocess.run(["./install.sh"], cwd=work, check=True)
            ledger["install_wall_s"] = round(time.time() - t0, 1)
        else:
            os.symlink(REPO / ".venv", work / ".venv")
        # targets before the options: --configfile takes every word after it
        ledger["cmd"] = [str(work / ".venv" / "bin" / "snakemake"), *args.targets, "--cores", str(args.cores)]
        if args.configfile:
            ledger["cmd"] += ["--configfile", *args.configfile]
        code = _snakemake(work, ledger["cmd"], ledger)
    if code:
        raise SystemExit(f"snakemake failed (exit {code}); its log: {work / 'dag_cost.log'}; once fixed, "
                         f"--resume {work} goes on (the wall-clock so far counted)")
    return ledger_doc(work, ledger)


def read_ledger(work: Path, flag: str) -> dict:
    if not (work / LEDGER).is_file():
        raise SystemExit(f"{flag} {work}: no {LEDGER}; give the --workdir of a run started by dag_cost.py")
    return json.loads((work / LEDGER).read_text())


def ledger_doc(work: Path, ledger: dict) -> dict:
    """The report's facts of a finished run: its commit, command, totals over the invocations, the
    whole DAG's jobs (the first invocation's Job stats total: a resumed one counts only what was left)
    and where its benchmark files are (those written since its start count)."""
    done = re.findall(r"^total\s+(\d+)\s*$", (work / "dag_cost.log").read_text(), flags=re.M)
    name = _name(work, ledger["configfile"])
    doc = {k: ledger[k] for k in ("commit", "workdir", "install_wall_s") if k in ledger}
    doc.update(snakemake=" ".join(["snakemake", *ledger["cmd"][1:]]), **totals(ledger), parts=ledger["parts"],
               jobs=int(done[0]) if done else None, bench_root=str(work / "results" / name / "benchmarks"),
               since=ledger["parts"][0]["started"])
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
    ap.add_argument("--resume", default=None, help="continue a run whose invocation was killed or failed: its "
                    "--workdir (its own command and cores are used)")
    ap.add_argument("--report", default=None, help="no run: write the report of a finished run from its --workdir "
                    "(its ledger, log and benchmark files)")
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
    rows = split(Path(doc["bench_root"]), doc.get("since"))
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
        if not doc["interrupted"]:  # a killed invocation's CPU-seconds are not known
            ratios["cpu_s_over_cores_x_wall"] = round(doc["cpu_s"] / (args.cores * doc["wall_s"]), 3)
    run = ""
    if "wall_s" in doc:
        run = f"Wall-clock {doc['wall_s']} s, CPU {doc['cpu_s']} s, {doc['jobs']} jobs, {args.cores} cores"
        if doc["invocations"] > 1:
            run += f", in {doc['invocations']} invocations summed"
            if doc["failed"]:
                run += f" ({doc['failed']} failed, then resumed)"
            if doc["interrupted"]:
                run += (f"; killed from outside: {doc['interrupted']} (wall-clock to the last heartbeat, at most "
                        f"{HEARTBEAT_S} s short each, the killed jobs' lost work included; their CPU-seconds are "
                        f"not known, so CPU counts the other invocations only)")
        run += "."
    header = [f"# DAG cost, commit {doc['commit']}",
              (run or "The split of an existing run (no wall-clock measured here).")
              + f" Benchmarked jobs: {doc['cpu_s_in_benchmarked_jobs']} CPU-s"
              f" ({doc['perfect_packing_wall_s']} s on {args.cores} cores with perfect packing)."]
    write_report(args.out / "dag_cost", doc, rows, ratios, header)
    if not (args.summarize or args.keep or args.workdir or args.resume or args.report):
        shutil.rmtree(doc["workdir"], ignore_errors=True)


if __name__ == "__main__":
    main()
