"""Where an on-policy training step's time goes, on a finished run's own models: what bounds the
default DAG's cost (issue 18, item 8).

    .venv/bin/python benchmarks/step_profile.py --root DIR --configfile config/config.yaml \\
        config/overlays/two_reward_lm.yaml --variant l3m_pt0 --out results/benchmarks/step_profile

``DIR`` is a clone that ran the DAG (it holds resources/<name>/ with the task data, the base model,
the reward models and, for a method from SFT, seed<s>/models/sft). The variant's training job runs
in this process exactly as the DAG runs it (its config, tuned settings, seed and ``L3M_THREADS``),
in a temporary folder, and stops after ``--warmup`` + ``--steps`` steps and one counted step. Each
step's wall-clock is split into generation and each reward's scoring (``sample_and_score``, every
on-policy method), the trainer's own phases (``methods.core.distributed.phase``, L3M: task, barrier,
optimiser; time is charged to the innermost open phase) and the rest.

To say whether a part is bound by arithmetic or by overhead, one more step runs under
``torch.utils.flop_counter.FlopCounterMode`` (the FLOPs of every matmul, convolution and attention
call, forward and backward), split over the same parts, and the process measures the matmul rate it can reach: a float32 ``torch.mm`` of the
shapes the models use, at the same number of threads (on CPU: the rate is the CPU's). ``floor_s`` = FLOPs / that rate is the time
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
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (at least 1: a step is timed from the end "
                    "of the one before)")
    ap.add_argument("--threads", type=int, default=1, help="L3M_THREADS, as the DAG gives a training job")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.warmup < 1 or a.steps < 1:
        ap.error("--warmup and --steps must be at least 1")
    os.environ["L3M_THREADS"] = str(a.threads)
    out = Path(a.out).resolve()
    configs = [str((REPO / c) if not Path(c).is_absolute() else c) for c in a.configfile]
    os.chdir(a.root)

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from methods import registry
    from methods.core import distributed
    from methods.core.config import deep_merge, read_config_files, validate_config
    from methods.core.onpolicy import OnPolicyRun

    raw = read_config_files(configs)
    if a.name:
        raw["name"] = a.name
    cfg0 = validate_config(raw, check_paths=False)
    seed = a.seed if a.seed is not None else cfg0["seeds"][0]
    v = registry.variants(cfg0)[a.variant]
    cfg = validate_config(deep_merge(raw, {**(v.overrides or {}), "seed": seed}), check_paths=False)
    cfg["onpolicy"]["eval_every"] = 0
    name, method = cfg["name"], registry.get(v.method)
    init = registry.model_folder(f"resources/{name}", method.init_from, seed)

    section, key = (method.budget[0] if method.budget else f"{v.method}.steps").split(".")
    total_steps = cfg[section].get(key)
    if not isinstance(total_steps, int) or total_steps < a.warmup + a.steps + 1:
        raise SystemExit(f"{a.variant}: {section}.{key} is {total_steps}; --warmup {a.warmup} + --steps {a.steps} + 1 "
                         f"counted step must fit in it")

    counter = FlopCounterMode(display=False)
    counting = [False]

    def meter():  # (seconds, FLOPs so far): FLOPs only while the counted step runs
        return time.perf_counter(), (counter.get_total_flops() if counting[0] else 0)

    # time and FLOPs per part: "phase:<name>" (the trainer's phase() blocks, charged to the innermost open one),
    # "reward:<name>" (each reward's call), "sas" (sample_and_score: generation and scoring)
    acc, stack = defaultdict(lambda: [0.0, 0]), []

    def charge(key, t0, f0):
        t, f = meter()
        acc[key][0] += t - t0
        acc[key][1] += f - f0
        return t, f

    base_phase = distributed.phase

    class timed(base_phase):
        def __enter__(self):
            if stack:
                stack[-1][1:] = charge(f"phase:{stack[-1][0]}", *stack[-1][1:])
            stack.append([self.name, *meter()])
            return super().__enter__()

        def __exit__(self, *exc):
            n, t0, f0 = stack.pop()
            now = charge(f"phase:{n}", t0, f0)
            if stack:
                stack[-1][1:] = now
            return super().__exit__(*exc)

    def wrap(owner, attr, key_of):
        orig = getattr(owner, attr)

        def timed_call(self, *args, **kw):
            t0, f0 = meter()
            try:
                return orig(self, *args, **kw)
            finally:
                charge(key_of(self), t0, f0)

        setattr(owner, attr, timed_call)
        return orig

    steps, marks, flop_step = [], {}, {}

    def snapshot():
        return {k: tuple(v) for k, v in acc.items()}

    def delta(before):
        return {k: (v[0] - before.get(k, (0.0, 0))[0], v[1] - before.get(k, (0.0, 0))[1]) for k, v in acc.items()}

    def hook(run):  # at the end of every step, inside the trainer's last phase (L3M: "optimiser")
        if stack:  # the open phase's time so far belongs to this step
            stack[-1][1:] = charge(f"phase:{stack[-1][0]}", *stack[-1][1:])
        step, now = run.state["step"], time.perf_counter()  # steps done
        if "t" in marks and a.warmup < step <= a.warmup + a.steps:
            steps.append({"step_s": now - marks["t"], "sample_s": run.stats.get("sample_s", 0.0),
                          "sampled_tokens": run.stats.get("sampled_tokens"), "task_tokens": run.stats.get("task_tokens"),
                          "sample_train_tokens": run.stats.get("sample_train_tokens"),
                          **{k: d[0] for k, d in delta(marks["acc"]).items()}})
        if step == a.warmup + a.steps + 1:
            flop_step.update(total=counter.get_total_flops(), step_s=now - marks["t"],
                             parts={k: d[1] for k, d in delta(marks["acc"]).items()})
            counting[0] = False
            counter.__exit__(None, None, None)
            raise Stop
        if step == a.warmup + a.steps:
            counter.__enter__()
            counting[0] = True
        marks.update(t=time.perf_counter(), acc=snapshot())

    OnPolicyRun.step_hooks = [hook]
    from methods.core import rewards as rewards_mod

    originals = [(OnPolicyRun, "sample_and_score", wrap(OnPolicyRun, "sample_and_score", lambda self: "sas")),
                 (rewards_mod.Reward, "__call__", wrap(rewards_mod.Reward, "__call__", lambda self: f"reward:{self.name}"))]
    from methods.core.models import set_threads

    set_threads(cfg["hardware"])
    threads = torch.get_num_threads()  # what the training job runs at (hardware.threads, else L3M_THREADS)
    rate = matmul_rate(threads)
    distributed.phase = timed
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            method.load().train(cfg, init, f"{tmp}/model", f"resources/{name}/data/task")
        except Stop:
            pass
        total = time.perf_counter() - t0
    distributed.phase = base_phase
    for owner, attr, orig in originals:
        setattr(owner, attr, orig)
    keys = sorted({k for s in steps for k in s})
    mean = {k: statistics.fmean(s.get(k, 0.0) for s in steps) for k in keys}
    step_s, fl = mean["step_s"], flop_step["parts"]

    def both(key):
        return mean.get(key, 0.0), fl.get(key, 0)

    # the parts of a step: within sample_and_score generation (what is not scoring) and each reward; each phase
    # of the trainer (its "sampling" phase less sample_and_score); the rest of the step
    parts = {}
    rewards_ = sorted(k for k in set(mean) | set(fl) if k.startswith("reward:"))
    sas_t, sas_f = both("sas")
    parts["generation (sampling, less scoring)"] = (sas_t - sum(both(k)[0] for k in rewards_),
                                                    sas_f - sum(both(k)[1] for k in rewards_))
    for k in rewards_:
        parts[f"scoring {k[7:]}"] = both(k)
    phases = sorted(k for k in set(mean) | set(fl) if k.startswith("phase:"))
    for k in phases:
        t, f = both(k)
        if k == "phase:sampling":
            t, f = t - sas_t, f - sas_f
        parts[f"{'sampling phase, less sample_and_score' if k == 'phase:sampling' else k[6:]}"] = (t, f)
    rest = "the rest (outside any phase)" if phases else "the rest (task NLL, log-probs, KL, forward + backward, optimiser)"
    parts[rest] = (step_s - sum(t for t, _ in parts.values()), flop_step["total"] - sum(f for _, f in parts.values()))
    gflops = rate["best"] * 1e9
    floor = flop_step["total"] / gflops
    rec = {"variant": a.variant, "method": v.method, "seed": seed, "config": configs, "root": str(a.root),
           "threads": threads, "steps_timed": len(steps), "warmup": a.warmup, "process_s": total,
           "step_s_mean": step_s, "step_s_median": statistics.median(s["step_s"] for s in steps),
           "parts": {k: {"s": t, "gflop": f / 1e9, "floor_s": f / gflops} for k, (t, f) in parts.items()},
           "flops_per_step": flop_step["total"], "flop_step_s": flop_step["step_s"], "matmul_gflops": rate,
           "floor_s": floor, "step_over_floor": step_s / floor, "per_step": steps,
           "torch": torch.__version__, "cpu": os.cpu_count()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_profile.json").write_text(json.dumps(rec, indent=1) + "\n")
    lines = [f"# {a.variant} ({v.method}), seed {seed}, {threads} thread(s): {len(steps)} steps after {a.warmup}",
             "", f"mean step {step_s:.3f} s (median {rec['step_s_median']:.3f} s); one step's arithmetic "
             f"{flop_step['total'] / 1e9:.1f} GFLOP, at the best float32 matmul rate measured here "
             f"({rate['best']:.1f} GFLOP/s) at least {floor:.3f} s: the step takes {step_s / floor:.2f}x that.",
             "", "| part | s per step | share | GFLOP (counted step) | floor s | s / floor |", "|---|---|---|---|---|---|"]
    lines += [f"| {k} | {x['s']:.3f} | {x['s'] / step_s:.0%} | {x['gflop']:.1f} | {x['floor_s']:.3f} | "
              + (f"{x['s'] / x['floor_s']:.1f} |" if x["floor_s"] > 0 else "– |") for k, x in rec["parts"].items()]
    lines += ["", "matmul GFLOP/s (m x k x n): " + ", ".join(f"{k} {x:.1f}" for k, x in rate.items())]
    (out / "step_profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
