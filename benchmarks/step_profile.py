"""Where an on-policy training step's time goes, on a finished run's own models: what bounds the
default DAG's cost (issue 18, item 8).

    .venv/bin/python benchmarks/step_profile.py --root DIR --configfile config/config.yaml \\
        config/overlays/two_reward_lm.yaml --variant l3m_pt0 --out results/benchmarks/step_profile

``DIR`` is a clone that ran the DAG (it holds resources/<name>/ with the task data, the base model,
the reward models and, for a method from SFT, seed<s>/models/sft). The variant's training job runs
in this process exactly as the DAG runs it (its config, tuned settings, seed and ``L3M_THREADS``),
in a temporary folder, and stops after ``--steps`` steps. Each step's wall-clock is split by the
trainer's own phases (``methods.core.distributed.phase``: task, sampling, barrier, optimiser) and
within sampling into generation and each reward's scoring.

To say whether a part is bound by arithmetic or by overhead, one more step runs under
``torch.utils.flop_counter.FlopCounterMode`` (the FLOPs of every matmul, convolution and attention
call), and the process measures the matmul rate it can reach: a float32 ``torch.mm`` of the
shapes the models use, at the same number of threads. ``floor_s`` = FLOPs / that rate is the time
the step's arithmetic needs at least on this machine; ``step_s / floor_s`` is how far the step is
from it. Writes ``step_profile.json`` and ``step_profile.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Stop(Exception):
    pass


def matmul_rate(threads: int, shapes=((512, 384, 1536), (512, 1536, 384), (1024, 128, 4096), (2048, 128, 384))) -> dict:
    """GFLOP/s of float32 torch.mm at ``threads`` threads for each (m, k, n) (median of 20 after 3
    warm-ups); ``best`` is the highest: the rate the arithmetic floor divides by."""
    import torch

    torch.set_num_threads(threads)
    out = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        ts = []
        for _ in range(20):
            t = time.perf_counter()
            a @ b
            ts.append(time.perf_counter() - t)
        out[f"{m}x{k}x{n}"] = 2 * m * k * n / statistics.median(ts) / 1e9
    out["best"] = max(out.values())
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="a clone that ran the DAG (holds resources/<name>/)")
    ap.add_argument("--configfile", nargs="+", default=["config/config.yaml"])
    ap.add_argument("--variant", default="l3m_pt0")
    ap.add_argument("--name", default=None, help="the run name whose resources/<name>/ to use (default: the config's)")
    ap.add_argument("--seed", type=int, default=None, help="training seed (default: the config's first)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="L3M_THREADS, as the DAG gives a training job")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    os.environ["L3M_THREADS"] = str(a.threads)
    out = Path(a.out).resolve()
    configs = [str((REPO / c) if not Path(c).is_absolute() else c) for c in a.configfile]
    os.chdir(a.root)

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from methods import registry
    from methods.core import distributed
    from methods.core.config import deep_merge, read_config_file, validate_config
    from methods.core.onpolicy import OnPolicyRun

    raw = {}
    for c in configs:
        raw = deep_merge(raw, read_config_file(c))
    if a.name:
        raw["name"] = a.name
    cfg0 = validate_config(raw, check_paths=False)
    seed = a.seed if a.seed is not None else cfg0["seeds"][0]
    v = registry.variants(cfg0)[a.variant]
    cfg = validate_config(deep_merge(raw, {**(v.overrides or {}), "seed": seed}), check_paths=False)
    cfg["onpolicy"]["eval_every"] = 0
    name, method = cfg["name"], registry.get(v.method)
    init = registry.model_folder(f"resources/{name}", method.init_from, seed)

    # per-phase wall-clock: the trainer's phase() blocks, timed (they nest: time is charged to the innermost)
    spent, stack = defaultdict(float), []
    base_phase = distributed.phase

    class timed(base_phase):
        def __enter__(self):
            now = time.perf_counter()
            if stack:
                spent[stack[-1][0]] += now - stack[-1][1]
            stack.append([self.name, now])
            return super().__enter__()

        def __exit__(self, *exc):
            now = time.perf_counter()
            n, t0 = stack.pop()
            spent[n] += now - t0
            if stack:
                stack[-1][1] = now
            return super().__exit__(*exc)

    distributed.phase = timed
    steps, marks, flops = [], {}, {}
    counter = FlopCounterMode(display=False)

    def hook(run):
        step = run.state["step"]  # steps done
        now = time.perf_counter()
        if "t" in marks and step > a.warmup and step <= a.warmup + a.steps:
            steps.append({"step_s": now - marks["t"], "generation_s": run.stats.get("sample_s", 0.0),
                          "sampled_tokens": run.stats.get("sampled_tokens"), "task_tokens": run.stats.get("task_tokens"),
                          "sample_train_tokens": run.stats.get("sample_train_tokens"),
                          **{f"phase_{k}": spent[k] - marks["spent"].get(k, 0.0) for k in spent},
                          **{f"reward_{k}": rt[k] - marks["rt"].get(k, 0.0) for k in rt}})
        if step == a.warmup + a.steps:
            counter.__enter__()
        if step == a.warmup + a.steps + 1:
            counter.__exit__(None, None, None)
            by = {k: sum(v.values()) for k, v in counter.get_flop_counts().items() if k != "Global" and "." not in k}
            flops.update(total=counter.get_total_flops(), step_s=now - marks["t"], by_model=by)
            raise Stop
        marks.update(t=time.perf_counter(), spent=dict(spent), rt=dict(rt))

    rt = defaultdict(float)
    OnPolicyRun.step_hooks = [hook]
    sas = OnPolicyRun.sample_and_score

    def timed_sas(self, *args, **kw):  # sampling and scoring, in every on-policy method
        t = time.perf_counter()
        try:
            return sas(self, *args, **kw)
        finally:
            rt["(sample_and_score)"] += time.perf_counter() - t

    OnPolicyRun.sample_and_score = timed_sas
    from methods.core import rewards as rewards_mod

    call = rewards_mod.Reward.__call__

    def timed_call(self, *args, **kw):
        t = time.perf_counter()
        try:
            return call(self, *args, **kw)
        finally:
            rt[self.name] += time.perf_counter() - t

    rewards_mod.Reward.__call__ = timed_call
    rate = matmul_rate(a.threads)
    from methods.core.models import set_threads

    set_threads(cfg["hardware"])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            method.load().train(cfg, init, f"{tmp}/model", f"resources/{name}/data/task")
        except Stop:
            pass
        total = time.perf_counter() - t0
    distributed.phase = base_phase
    for s in steps:  # the wrapper's key among the rewards' times: its own column
        s["sample_and_score_s"] = s.pop("reward_(sample_and_score)")
    med = {k: statistics.median(s[k] for s in steps) for k in steps[0] if isinstance(steps[0][k], (int, float))}
    mean = {k: statistics.fmean(s[k] for s in steps) for k in med}
    step_s = mean["step_s"]
    sampling = mean["sample_and_score_s"]
    scoring = {f"scoring {k[7:]}": v for k, v in mean.items() if k.startswith("reward_")}
    parts = {"generation": mean["generation_s"], **scoring,
             "sampling other": sampling - mean["generation_s"] - sum(scoring.values())}
    if "phase_task" in mean:  # a trainer that names its phases (L3M): sampling runs inside its "sampling" phase
        parts.update({"task NLL (forward + backward)": mean.get("phase_task", 0.0),
                      "barrier (sample log-probs, forward + backward)": mean.get("phase_barrier", 0.0),
                      "optimiser, log": mean.get("phase_optimiser", 0.0)})
        parts["other"] = step_s - sampling - sum(v for k, v in parts.items() if not k.startswith(("generation", "scoring",
                                                                                                   "sampling")))
    else:
        parts["the rest: log-probs, forward + backward, optimiser"] = step_s - sampling
        parts["other"] = 0.0
    floor = flops["total"] / (rate["best"] * 1e9)
    rec = {"variant": a.variant, "method": v.method, "seed": seed, "config": configs, "root": str(a.root),
           "threads": a.threads, "steps_timed": len(steps), "warmup": a.warmup, "process_s": total,
           "step_s_mean": step_s, "step_s_median": med["step_s"], "parts_s_mean": parts,
           "flops_per_step": flops["total"], "flops_by_model": flops["by_model"], "flop_step_s": flops["step_s"],
           "matmul_gflops": rate,
           "floor_s": floor, "step_over_floor": step_s / floor, "per_step": steps,
           "torch": torch.__version__, "cpu": os.cpu_count()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_profile.json").write_text(json.dumps(rec, indent=1) + "\n")
    lines = [f"# {a.variant} ({v.method}), seed {seed}, {a.threads} thread(s): {len(steps)} steps after {a.warmup}",
             "", f"mean step {step_s:.3f} s (median {med['step_s']:.3f} s); one step's arithmetic "
             f"{flops['total'] / 1e9:.1f} GFLOP, at the best float32 matmul rate measured here "
             f"({rate['best']:.1f} GFLOP/s) at least {floor:.3f} s: the step takes {step_s / floor:.2f}x that.",
             "", "| part | s per step | share |", "|---|---|---|"]
    lines += [f"| {k} | {x:.3f} | {x / step_s:.0%} |" for k, x in parts.items()]
    lines += ["", "GFLOP per step by model (forward and backward; the top-level modules FlopCounterMode saw): "
              + ", ".join(f"{k} {x / 1e9:.1f} ({x / (rate['best'] * 1e9):.3f} s at the best rate)"
                          for k, x in flops["by_model"].items())]
    lines += ["", "matmul GFLOP/s (m x k x n): " + ", ".join(f"{k} {x:.1f}" for k, x in rate.items())]
    (out / "step_profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
