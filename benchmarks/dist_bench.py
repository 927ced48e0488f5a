"""Distributed benchmark of the hand-written on-policy path: L3M steps on 2 processes (gloo on CPU;
the same script with ``--device cuda`` uses nccl, one GPU per process) against one process on the
same global batch.

    .venv/bin/python benchmarks/dist_bench.py --out results/benchmarks/dist_cpu       # about 3 min
    python benchmarks/dist_bench.py --device cuda --hidden 1024 --layers 8 --out results/benchmarks/dist_gpu

Runs (each a fresh torchrun job over the same model, data and settings):

- ``one``: one process (the reference step time);
- ``ddp_per_tensor`` / ``ddp_bucketed``: 2 processes with replicated weights, gradients averaged by one
  blocking all-reduce per tensor after each backward (``hardware.grad_bucket_mb: 0``, the path before
  issue 19) or by flattened ~25 MB buckets launched during the backward (``GradReducer``);
- ``fsdp_per_layer`` / ``fsdp_gather``: 2 processes with FSDP, sampling with an all-gather per layer per
  decoded token (``hardware.fsdp_sampling: per_layer``, before) or each layer gathered once per
  sampling phase (``gather``); checkpoints gathered on rank 0 (``hardware.checkpoint: full``, before) or
  sharded with torch.distributed.checkpoint (``sharded``).

Per run and timed step: the collectives every process issued and the bytes they carry (all-reduce:
the tensor; all-gather: the gathered output; reduce-scatter: the input; object collectives are
counted with 0 bytes), split by the phase of the L3M step they ran in (methods/core/distributed.py
``phase``: sampling, task, barrier, optimiser, with held-out evaluation and checkpoints apart), and
the median step time. After the last step each process writes one checkpoint in the run's mode and
records its peak memory above what it held before (CPU: peak RSS, reset through /proc/self/clear_refs;
GPU: torch.cuda.max_memory_allocated) and the state's size. Writes ``dist_bench.json`` and
``dist_bench.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

RUNS = {  # name: (processes, hardware overrides)
    "one": (1, {}),
    "ddp_per_tensor": (2, {"fsdp": False, "grad_bucket_mb": 0}),
    "ddp_bucketed": (2, {"fsdp": False, "grad_bucket_mb": 25}),
    "fsdp_per_layer": (2, {"fsdp": True, "fsdp_sampling": "per_layer", "checkpoint": "full"}),
    "fsdp_gather": (2, {"fsdp": True, "fsdp_sampling": "gather", "checkpoint": "sharded"}),
}
COLLECTIVES = ["all_reduce", "all_gather_single", "all_gather_into_tensor", "all_gather", "reduce_scatter_single",
               "reduce_scatter_tensor", "reduce_scatter", "broadcast", "reduce", "gather", "scatter", "barrier",
               "all_to_all_single", "all_gather_object", "gather_object", "broadcast_object_list",
               "scatter_object_list"]


class Counter:
    """Wraps torch.distributed's collectives: per phase, the number of calls and bytes carried."""

    def __init__(self):
        import torch
        import torch.distributed as dist

        from methods.core.distributed import current_phase

        self.counts: dict = {}
        for name in COLLECTIVES:
            fn = getattr(dist, name, None)
            if fn is None:
                continue

            def wrapped(*a, _fn=fn, _name=name, **kw):
                t = a[0] if a and isinstance(a[0], torch.Tensor) else None
                if _name.startswith("reduce_scatter") and len(a) > 1 and isinstance(a[1], torch.Tensor):
                    t = a[1]
                key = (current_phase(), _name)
                c = self.counts.setdefault(key, [0, 0])
                c[0] += 1
                c[1] += t.numel() * t.element_size() if t is not None else 0
                return _fn(*a, **kw)

            setattr(dist, name, wrapped)

    def take(self) -> dict:
        out, self.counts = self.counts, {}
        return out


def peak_since_reset(device: str, reset: bool) -> float:
    """``reset``: free, reset the peak counter and return the memory in use; else the peak since (MB).
    On CPU freed heap memory is first handed back to the system (glibc ``malloc_trim``): memory the
    training steps freed but the allocator kept would otherwise absorb the checkpoint's allocations
    and hide them from the peak RSS."""
    from step_bench import peak_mb, peak_reset

    if reset and device == "cpu":
        import ctypes
        import gc

        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
    return peak_reset(device) if reset else peak_mb(device)


def worker(cfg_path: str, model: str, data: str, out: str, record: str) -> None:
    """One process of a run (plainly, or under torchrun): L3M for the config's steps, counting."""
    import yaml

    import methods.l3m as l3m
    from methods.core.distributed import phase, shutdown
    from methods.core.onpolicy import OnPolicyRun

    cfg = yaml.safe_load(Path(cfg_path).read_text())
    device = cfg["hardware"]["device"]
    counter = Counter() if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    steps, marks, ckpt = [], [time.perf_counter()], {}

    def hook(run):
        if device == "cuda":
            import torch

            torch.cuda.synchronize()
        marks.append(time.perf_counter())
        steps.append({"counts": counter.take() if counter else {}, "stats": dict(run.stats)})
        if run.state["step"] == run.steps:  # after the last step: one checkpoint in the run's mode
            before = peak_since_reset(device, reset=True)
            t0 = time.perf_counter()
            with phase("checkpoint"):
                run.save_checkpoint()
            ckpt.update(peak_above_mb=round(peak_since_reset(device, reset=False) - before, 2),
                        seconds=round(time.perf_counter() - t0, 3),
                        state_mb=round(sum(f.stat().st_size for f in run.work.rglob("*") if f.is_file()) / 2**20, 2),
                        counts=counter.take() if counter else {})
            marks.append(time.perf_counter())  # the checkpoint is not step time

    OnPolicyRun.step_hooks.append(hook)
    try:
        l3m.train(cfg, model, out, data)
    finally:
        shutdown()
    times = [b - a for a, b in zip(marks[:-1], marks[1:])][: len(steps)]
    rank = os.environ.get("RANK", "0")
    Path(f"{record}.rank{rank}.json").write_text(json.dumps(
        {"times": times, "steps": [{"counts": [[k[0], k[1], *v] for k, v in s["counts"].items()],
                                    "stats": s["stats"]} for s in steps],
         "checkpoint": {**ckpt, "counts": [[k[0], k[1], *v] for k, v in ckpt.get("counts", {}).items()]}}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(args, work: Path) -> tuple[str, str]:
    """A randomly initialised Llama of the default config's architecture (or --hidden/--layers),
    its tokenizer trained on chitchat, and a folder of chitchat task pairs."""
    import torch

    from methods.core.config import load_config
    from methods.core.data import build_task_splits, chitchat_conversations
    from methods.core.models import micro_llama, train_tokenizer

    cfg = load_config(REPO / "config" / "config.yaml")
    build_task_splits(dict(cfg["data"], n_train=512, n_val=16, n_test=16), work / "data")
    pre = dict(cfg["base_model"]["pretrain"])
    pre.update({k: v for k, v in (("hidden_size", args.hidden), ("intermediate_size", args.intermediate),
                                  ("num_layers", args.layers)) if v})
    texts = ["\n".join(t for _, t in conv) for _, conv, _ in chitchat_conversations()[: pre["tokenizer_docs"]]]
    tok = train_tokenizer(texts, pre["vocab_size"])
    torch.manual_seed(0)
    micro_llama(tok, pre).save_pretrained(work / "model")
    tok.save_pretrained(work / "model")
    return str(work / "model"), str(work / "data")


def run_config(args, hw: dict, processes: int) -> dict:
    from methods.core.config import deep_merge, load_config, validate_config

    lo, hi = args.band
    base = load_config(REPO / "config" / "config.yaml")
    return validate_config(deep_merge(base, {
        "hardware": {"device": args.device, "bf16": False, "processes": processes, **hw},
        "constraints": [{"reward": "length", "band": [lo, hi]}],
        "l3m": {"steps": args.warmup + args.steps, "save_steps": 10**6, "logging_steps": 1, "mu_every": 10**6},
        "onpolicy": {"batch_size": args.batch, "sample_prompts": args.prompts, "samples_per_prompt": args.samples,
                     "max_new_tokens": args.new_tokens, "eval_every": 0},
        "budget": {"mode": "none"},
        "experiments": {"length": {"enabled": False}, "two_reward": {"enabled": False}},
    }), check_paths=False)


def summarise(name: str, processes: int, docs: list[dict], warmup: int, n_layers: int) -> dict:
    """Per-step means over the timed steps (rank 0's counts: every rank issues the same collectives)."""
    d0 = docs[0]
    timed = d0["steps"][warmup:]
    phases: dict = {}
    for s in timed:
        for ph, fn, n, b in s["counts"]:
            p = phases.setdefault(ph, {"collectives": 0, "bytes": 0, "all_gathers": 0})
            p["collectives"] += n / len(timed)
            p["bytes"] += b / len(timed)
            if fn.startswith("all_gather"):
                p["all_gathers"] += n / len(timed)
    tokens = statistics.mean(s["stats"]["sampled_tokens"] for s in timed) * processes
    row = {"run": name, "processes": processes, "step_s_median": round(statistics.median(d0["times"][warmup:]), 4),
           "sampled_tokens_per_step": round(tokens, 1),
           "collectives_per_step": round(sum(p["collectives"] for p in phases.values()), 1),
           "mb_per_step": round(sum(p["bytes"] for p in phases.values()) / 2**20, 3)}
    for ph in ("sampling", "task", "barrier", "optimiser"):
        p = phases.get(ph, {"collectives": 0, "bytes": 0, "all_gathers": 0})
        row[f"{ph}_collectives"] = round(p["collectives"], 1)
        row[f"{ph}_mb"] = round(p["bytes"] / 2**20, 3)
    row["sampling_all_gathers"] = round(phases.get("sampling", {}).get("all_gathers", 0), 1)
    row["layers"] = n_layers
    for r, d in enumerate(docs):
        c = d["checkpoint"]
        row[f"ckpt_peak_mb_rank{r}"] = c.get("peak_above_mb")
        row[f"ckpt_s_rank{r}"] = c.get("seconds")
    row["ckpt_state_mb"] = docs[0]["checkpoint"].get("state_mb")
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--hidden", type=int, default=None, help="hidden size (default: config.yaml's base model)")
    p.add_argument("--intermediate", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--batch", type=int, default=16, help="task pairs per step (global)")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--band", type=float, nargs=2, default=[8, 16])
    p.add_argument("--steps", type=int, default=3, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--runs", default=",".join(RUNS))
    p.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":  # one process of a run
        return worker(*argv[1:6])
    args = p.parse_args(argv)
    import yaml

    from methods.core.models import load_model
    from methods.core.record import device_name, package_versions

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dist_bench."))
    model, data = build(args, work)
    m = load_model(model)[0]
    n_params, n_layers = sum(x.numel() for x in m.parameters()), m.config.num_hidden_layers
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", L3M_THREADS="1")
    env.pop("WORLD_SIZE", None)
    rows = []
    for name in args.runs.split(","):
        procs, hw = RUNS[name]
        cfg_path = work / f"{name}.yaml"
        cfg_path.write_text(yaml.safe_dump(run_config(args, hw, procs)))
        me = [str(Path(__file__).resolve()), "--worker", str(cfg_path), model, data, str(work / name), str(work / name)]
        launch = [sys.executable] + (["-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_addr",
                                      "127.0.0.1", "--master_port", str(_free_port())] if procs > 1 else []) + me
        print(f"--- {name}", flush=True)
        t0 = time.time()
        res = subprocess.run(launch, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"{name} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        docs = [json.loads(Path(f"{work / name}.rank{r}.json").read_text()) for r in range(procs)]
        rows.append(summarise(name, procs, docs, args.warmup, n_layers) | {"wall_s": round(time.time() - t0, 1)})
        print(rows[-1], flush=True)
    by = {r["run"]: r for r in rows}
    ratios = {}
    for a, b in (("ddp_bucketed", "one"), ("ddp_per_tensor", "one"), ("fsdp_gather", "one"), ("fsdp_per_layer", "one"),
                 ("ddp_bucketed", "ddp_per_tensor"), ("fsdp_gather", "fsdp_per_layer")):
        if a in by and b in by:
            ratios[f"{a}_over_{b}_step"] = round(by[a]["step_s_median"] / by[b]["step_s_median"], 3)
    doc = {"command": " ".join([Path(sys.argv[0]).name] + argv), "device": device_name(),
           "packages": package_versions(), "n_params": n_params, "layers": n_layers, "settings": vars(args),
           "runs": rows, "ratios": ratios}
    from step_bench import write_report

    write_report(out / "dist_bench", doc, rows, ratios, [
        f"# Distributed L3M step benchmark ({doc['device']}, {n_params / 1e6:.2f}M parameters, {n_layers} layers; "
        f"global batch {args.batch} task pairs, {args.prompts} prompts x {args.samples} samples x "
        f"{args.new_tokens} new tokens)",
        "Per timed step (rank 0; every rank issues the same collectives). ckpt_peak_mb: a checkpoint's peak "
        "memory above what the process held before it.", ""])


if __name__ == "__main__":
    main()
