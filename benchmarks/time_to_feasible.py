"""End-to-end cost: wall-clock until a constraint point is met on held-out prompts, for L3M from the
base model (one stage) against SFT followed by minimax (MM) from the SFT model (two stages).

    .venv/bin/python benchmarks/time_to_feasible.py --out results/benchmarks/ttf_cpu              # default config
    .venv/bin/python benchmarks/time_to_feasible.py --config config/smollm2.yaml --out results/benchmarks/ttf_h100

For each two-reward point of the config (``experiments.two_reward.points``, or ``--points``), with
the config's own training settings, the runs are the real ``methods.cli train`` commands of the DAG,
one after another on the same machine: SFT from the base model (once, shared by every point), then
per point MM from that SFT model and L3M from the base model, both with held-out evaluation on
(``onpolicy.eval_every``/``eval_prompts``/``eval_split``: the first N prompts of the split, val by
default, sampled with the evaluation's generation settings, the constraint estimates C_i computed
on them, rank 0). A run is *feasible* at
an evaluation when every C_i <= 0 there.

Per point and method: the wall-clock of the first feasible evaluation (``first``) and of the
evaluation from which on every later one stayed feasible (``stays``), in seconds of the training
processes (set-up + steps, held-out evaluation time excluded; SFT's own periodic validation excluded
too); for SFT+MM the SFT run's wall-clock is added. The ratios ``sft_mm_over_l3m_first`` and
``sft_mm_over_l3m_stays`` are what issue 7's target (>= 1.5) reads; None where a method never got
there within its step budget. Also the held-out task NLL at that evaluation and at the end.

Needs the base model, task data and reward models of the config: built with Snakemake first when
missing. Writes ``time_to_feasible.json``, ``time_to_feasible.md`` and a figure (PNG, PDF) into
``--out``; the runs' models and logs go to ``--work`` (default resources/<name>/ttf).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run(cmd: list[str], log: Path, threads: int, cwd: Path) -> float:
    """Run one command with its output in ``log``; the wall-clock of the process."""
    env = dict(os.environ, L3M_THREADS=str(threads), PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    t = time.time()
    with open(log, "w") as f:
        p = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if p.returncode:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n--- last lines of {log}:\n"
                         + "".join(open(log).readlines()[-30:]))
    return time.time() - t


def prerequisites(cfg: dict, cfg_path: str, res: str, rewards: list[str], threads: int, log: Path, root: Path) -> None:
    """Base model, task data and the reward models the points need, from the DAG (Snakemake) if missing."""
    need = [f"{res}/models/base", f"{res}/data/task/train.jsonl"]
    need += [f"{res}/models/rm_{r}" for r in rewards if cfg["rewards"][r]["type"] == "reward_model"]
    missing = [t for t in need if not (root / t).exists()]
    if missing:
        print(f"building with Snakemake: {missing}", flush=True)
        run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", str(threads), "--configfile",
             cfg_path, "--directory", str(root), *missing], log, threads, root)


def sft_seconds(model_dir: Path) -> float:
    """SFT's wall-clock from its run record, without TRL's periodic validation passes."""
    rec = json.loads((model_dir / "l3m_run.json").read_text())
    evals = sum(x.get("eval_runtime", 0.0) for x in rec.get("log_history", []))
    return rec["wall_clock_s"] - evals


def summarise(evals: list[dict], offset: float) -> dict:
    from methods.core.onpolicy import time_to_feasible

    out = time_to_feasible(evals, offset)
    by_step = {e["step"]: e for e in evals}
    for k in ("first", "stays"):
        s = out[f"{k}_feasible_step"]
        out[f"{k}_feasible_nll"] = None if s is None else round(by_step[s]["heldout_nll"], 4)
    last = evals[-1]
    out.update(final_s=round(last["elapsed_s"] + offset, 3), final_nll=round(last["heldout_nll"], 4),
               final_C={k[10:-1]: round(v, 4) for k, v in last.items() if k.startswith("C_heldout[")},
               final_feasible=last["feasible"], start_feasible=evals[0]["feasible"])
    return out


def curve(evals: list[dict], offset: float) -> tuple[list[float], list[float]]:
    """(wall-clock, worst constraint estimate max_i C_i) per held-out evaluation."""
    return ([e["elapsed_s"] + offset for e in evals],
            [max(v for k, v in e.items() if k.startswith("C_heldout[")) for e in evals])


def ratio(a, b):
    return None if a is None or b is None or b <= 0 else round(a / b, 3)


def figure(curves: dict, points: list, out: Path) -> None:
    """Held-out max_i C_i against wall-clock, per point: L3M and SFT+MM (MM shifted by SFT's time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(points), figsize=(4 * len(points), 3.2), squeeze=False, sharey=True)
    for ax, (i, pt) in zip(axes[0], points):
        for name, color in (("l3m", "C0"), ("sft+mm", "C1")):
            xs, ys = curves[i][name]
            ax.plot(xs, ys, marker="o", ms=3, color=color, label=name.upper())
        ax.axvline(curves[i]["sft_s"], color="C1", ls=":", lw=1)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_title(f"point {i}: {tuple(pt)}")
        ax.set_xlabel("wall-clock (s)")
    axes[0][0].set_ylabel("held-out max_i C_i (<= 0: met)")
    axes[0][0].legend()
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out / f"time_to_feasible.{ext}", dpi=150)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--points", type=int, nargs="*", default=None, help="indices into two_reward.points (default all)")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-prompts", type=int, default=200)
    p.add_argument("--eval-split", default="val", choices=["val", "test"],
                   help="prompts of the held-out evaluation (test: those the evaluation rule scores)")
    p.add_argument("--mm-steps", type=int, default=None, help="MM's step budget (default: the config's mm.steps)")
    p.add_argument("--l3m-steps", type=int, default=None, help="L3M's step budget (default: the config's l3m.steps)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default=None)
    p.add_argument("--root", default=str(REPO), help="the DAG's working directory (where resources/ is)")
    args = p.parse_args(argv)

    from methods.core.config import load_config
    from methods.core.record import device_name, package_versions

    root = Path(args.root).resolve()
    cfg_path = str(Path(args.config).resolve())
    cfg = load_config(cfg_path)
    two = cfg["experiments"]["two_reward"]
    res = f"resources/{cfg['name']}"
    work = Path(args.work or root / res / "ttf").resolve()
    out = Path(args.out)
    for d in (work, out):
        d.mkdir(parents=True, exist_ok=True)
    points = [(i, two["points"][i]) for i in (args.points if args.points is not None else range(len(two["points"])))]
    prerequisites(cfg, cfg_path, res, two["rewards"], args.threads, work / "snakemake.log", root)
    data, base = f"{res}/data/task", f"{res}/models/base"
    train = [sys.executable, "-m", "methods.cli", "train", "--config", cfg_path, "--data", data]
    ev = {"eval_every": args.eval_every, "eval_prompts": args.eval_prompts, "eval_split": args.eval_split}

    sft = work / "sft"
    shutil.rmtree(sft, ignore_errors=True)
    print("--- sft", flush=True)
    run(train + ["--method", "sft", "--init", base, "--out", str(sft)], work / "sft.log", args.threads, root)
    sft_s = sft_seconds(sft)
    rows, curves = [], {}
    for i, pt in points:
        cons = [{"reward": r, "bound": b, "direction": ">="} for r, b in zip(two["rewards"], pt)]
        per = {}
        for method, init, steps in (("mm", str(sft), args.mm_steps), ("l3m", base, args.l3m_steps)):
            over = {"constraints": cons, "onpolicy": ev}
            if method == "l3m" and steps:
                over["l3m"] = {"steps": steps}
            if method == "mm" and steps:
                over["mm"] = {"steps": steps}
            if steps:  # a step count given here replaces the config's budget rule
                over["budget"] = {"mode": "none"}
            dest = work / f"{method}_pt{i}"
            shutil.rmtree(dest, ignore_errors=True)
            print(f"--- {method} point {i} {pt}", flush=True)
            run(train + ["--method", method, "--init", init, "--out", str(dest), "--set", json.dumps(over)],
                work / f"{method}_pt{i}.log", args.threads, root)
            evals = [json.loads(x) for x in open(dest / "eval_log.jsonl")]
            per[method] = (evals, json.loads((dest / "l3m_run.json").read_text())["steps"])
        l3m = summarise(per["l3m"][0], 0.0)
        mm = summarise(per["mm"][0], sft_s)
        curves[i] = {"sft_s": sft_s, "l3m": curve(per["l3m"][0], 0.0), "sft+mm": curve(per["mm"][0], sft_s)}
        rows.append({"point": i, "bounds": pt, "l3m": dict(l3m, steps=per["l3m"][1]),
                     "sft_mm": dict(mm, mm_steps=per["mm"][1], sft_s=round(sft_s, 3)),
                     "sft_mm_over_l3m_first": ratio(mm["first_feasible_s"], l3m["first_feasible_s"]),
                     "sft_mm_over_l3m_stays": ratio(mm["stays_feasible_s"], l3m["stays_feasible_s"])})
        print(json.dumps(rows[-1]), flush=True)
    doc = {"command": " ".join([f"benchmarks/{Path(__file__).name}"] + (argv if argv is not None else sys.argv[1:])),
           "device": device_name(), "packages": package_versions(), "config": cfg, "settings": vars(args),
           "rewards": two["rewards"], "sft_s": round(sft_s, 3), "points": rows}
    (out / "time_to_feasible.json").write_text(json.dumps(doc, indent=2) + "\n")
    figure(curves, points, out)
    fmt = lambda x: "never" if x is None else f"{x:.0f} s"  # noqa: E731
    md = [f"# Time to feasible ({doc['device']}, config {cfg['name']}, rewards {two['rewards']}, "
          f"{args.eval_prompts} held-out {args.eval_split} prompts every {args.eval_every} steps)", "", f"Command: `{doc['command']}`", "",
          f"SFT: {sft_s:.0f} s (added to MM's times).", "",
          "| point | L3M first | L3M stays | SFT+MM first | SFT+MM stays | ratio first | ratio stays "
          "| NLL L3M / SFT+MM at first | final NLL L3M / SFT+MM | final met L3M / SFT+MM |", "|" + "---|" * 10]
    for r in rows:
        a, b = r["l3m"], r["sft_mm"]
        md.append(f"| {r['point']} {tuple(r['bounds'])} | {fmt(a['first_feasible_s'])} | {fmt(a['stays_feasible_s'])} "
                  f"| {fmt(b['first_feasible_s'])} | {fmt(b['stays_feasible_s'])} | {r['sft_mm_over_l3m_first']} "
                  f"| {r['sft_mm_over_l3m_stays']} | {a['first_feasible_nll']} / {b['first_feasible_nll']} "
                  f"| {a['final_nll']} / {b['final_nll']} | {a['final_feasible']} / {b['final_feasible']} |")
    (out / "time_to_feasible.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
