"""Step-level speed benchmark: L3M against TRL's RLOOTrainer and GRPOTrainer and our minimax (MM),
on the same model, prompts, samples per prompt, generation length and reward, in one process.

    .venv/bin/python benchmarks/step_bench.py --out results/benchmarks/cpu            # CPU, about 3 min
    python benchmarks/step_bench.py --model DIR --device cuda --out results/benchmarks/h100
    python benchmarks/step_bench.py --model DIR --random-init --device cuda ...   # DIR's architecture only

Per method: median step time over the timed steps (after warm-up steps), sampled tokens per second
of step time, training tokens (through forward and backward) per second, mean sampled length, peak
memory (CPU: the process's peak RSS, reset before each method through /proc/self/clear_refs; GPU:
torch.cuda.max_memory_allocated, reset likewise; the peak includes what the process already held, so
the first method measured starts lowest: ``--methods`` sets the order) and, for the hand-written trainers, the share of
the step spent sampling. The ratios ``l3m_over_rloo_step`` and ``l3m_over_grpo_step`` (step time)
and ``l3m_over_rloo_peak_mem`` are what issue 7's targets read. Writes ``step_bench.json`` and
``step_bench.md`` into ``--out``.

Work per step: every method samples ``prompts x samples`` responses of at most ``new_tokens``
tokens and scores them with the length reward. L3M and MM carry the constraint "length in
[lo, hi]"; RLOO and GRPO maximise the negative distance to the band's centre, with the KL
coefficient of the mixture baseline (``mixture.beta``, a frozen reference model) as users run them.
L3M's step also includes its task NLL on ``onpolicy.batch_size`` task pairs (no other method has one),
and MM its KL to the SFT (here: initial) model.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    m = re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(m.group(1)) / 1024 if m else float("nan")


def peak_reset(device: str) -> float:
    """Reset the peak-memory counter after freeing what earlier methods left; return the memory in use."""
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return rss_mb()


def peak_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    m = re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(m.group(1)) / 1024 if m else float("nan")


def build_inputs(args, work: Path) -> tuple[str, str]:
    """The model folder (given, or a randomly initialised Llama of the default config's size with a
    tokenizer trained on chitchat) and a task-data folder of chitchat pairs."""
    from methods.core.config import load_config
    from methods.core.data import build_task_splits, chitchat_conversations
    from methods.core.models import micro_llama, train_tokenizer

    cfg = load_config(REPO / "config" / "config.yaml")
    data = work / "data"
    build_task_splits(dict(cfg["data"], n_train=2048, n_val=50, n_test=50), data)
    import torch

    if args.model and args.random_init:  # the folder's architecture and tokenizer, fresh weights
        from transformers import AutoConfig, AutoModelForCausalLM

        from methods.core.models import load_tokenizer

        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.model)).save_pretrained(work / "model")
        load_tokenizer(args.model).save_pretrained(work / "model")
        return str(work / "model"), str(data)
    if args.model:
        return args.model, str(data)

    pre = cfg["base_model"]["pretrain"]
    texts = ["\n".join(t for _, t in conv) for _, conv, _ in chitchat_conversations()[: pre["tokenizer_docs"]]]
    tok = train_tokenizer(texts, pre["vocab_size"])
    torch.manual_seed(0)
    model = micro_llama(tok, pre)
    model.save_pretrained(work / "model")
    tok.save_pretrained(work / "model")
    return str(work / "model"), str(data)


def bench_config(args) -> dict:
    from methods.core.config import deep_merge, load_config, validate_config

    base = load_config(REPO / "config" / "config.yaml")
    lo, hi = args.band
    steps = args.warmup + args.steps
    return validate_config(deep_merge(base, {
        "hardware": {"device": args.device, "bf16": args.device == "cuda", "threads": args.threads},
        "constraints": [{"reward": "length", "band": [lo, hi]}],
        "l3m": {"steps": steps, "save_steps": 10**6, "logging_steps": 10**6, "mu_every": 10**6},
        "onpolicy": {"sample_prompts": args.prompts, "samples_per_prompt": args.samples,
                     "max_new_tokens": args.new_tokens},
        "mm": {"steps": steps, "save_steps": 10**6, "logging_steps": 10**6},
        "budget": {"mode": "none"},  # the same steps for both, as given here
        "generation": {"cache": args.cache},
        "experiments": {"length": {"enabled": False}, "two_reward": {"enabled": False}},  # not run here
    }), check_paths=False)


def time_onpolicy(method: str, cfg: dict, model: str, data: str, out: Path, device: str, name: str | None = None) -> dict:
    from methods.core.onpolicy import OnPolicyRun
    from methods.registry import get

    marks, stats = [], []

    def hook(run):
        if device == "cuda":
            import torch

            torch.cuda.synchronize()
        marks.append(time.perf_counter())
        stats.append(dict(run.stats))

    OnPolicyRun.step_hooks.append(hook)
    try:
        before = peak_reset(device)
        t0 = time.perf_counter()
        get(method).load().train(cfg, model, str(out / (name or method)), data)
        mem = peak_mb(device)
    finally:
        OnPolicyRun.step_hooks.remove(hook)
    times = [b - a for a, b in zip([t0] + marks[:-1], marks)]
    return {"times": times, "stats": stats, "peak_mb": mem, "before_mb": before}


def time_trl(kind: str, cfg: dict, model_dir: str, data: str, out: Path, args) -> dict:
    """RLOOTrainer or GRPOTrainer on the same prompts, samples and reward."""
    import datasets
    import trl
    from transformers import TrainerCallback

    from methods.core.data import to_conversational
    from methods.core.io import read_jsonl
    from methods.core.models import load_model, trainer_hardware
    from methods.core.rewards import build_reward
    from methods.mixture import reward_func

    lo, hi = args.band
    centre = (lo + hi) / 2
    model, tok = load_model(model_dir, device=args.device, for_training=True)
    length = reward_func(build_reward("length", cfg["rewards"]["length"], tokenizer=tok, device=args.device), tok)

    def closeness(prompts, completions, completion_ids=None, **kw):
        return [-abs(x - centre) for x in length(prompts, completions, completion_ids)]

    rows = read_jsonl(Path(data) / "train.jsonl")
    ds = datasets.Dataset.from_list([{"prompt": r["prompt"]} for r in to_conversational(rows)])
    Config, Trainer = {"rloo": (trl.RLOOConfig, trl.RLOOTrainer), "grpo": (trl.GRPOConfig, trl.GRPOTrainer)}[kind]
    targs = Config(
        output_dir=str(out / kind), max_steps=args.warmup + args.steps,
        per_device_train_batch_size=args.prompts * args.samples, num_generations=args.samples,
        max_completion_length=args.new_tokens, temperature=1.0, top_k=0, top_p=1.0,
        learning_rate=cfg["mixture"]["lr"], beta=cfg["mixture"]["beta"], logging_steps=1, save_strategy="no",
        seed=cfg["seed"], report_to=[], **trainer_hardware(cfg["hardware"]))
    marks = {}

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if args.device == "cuda":
                import torch

                torch.cuda.synchronize()
            marks.setdefault("begin", []).append(time.perf_counter())

        def on_step_end(self, a, state, control, **kw):
            if args.device == "cuda":
                import torch

                torch.cuda.synchronize()
            marks.setdefault("end", []).append(time.perf_counter())

    before = peak_reset(args.device)
    trainer = Trainer(model=model, reward_funcs=[closeness], args=targs, train_dataset=ds, processing_class=tok,
                      callbacks=[Timer()])
    trainer.train()
    mem = peak_mb(args.device)
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    n = args.prompts * args.samples
    stats, prev = [], 0
    for h in logs:
        stats.append({"sampled_tokens": h["completions/mean_length"] * n, "train_tokens": h.get("num_tokens", 0) - prev})
        prev = h.get("num_tokens", prev)
    times = [b - a for a, b in zip(marks["begin"], marks["end"])]
    return {"times": times, "stats": stats, "peak_mb": mem, "before_mb": before}


def summarise(name: str, res: dict, warmup: int, n_params: int, device: str) -> dict:
    times, stats = res["times"][warmup:], res["stats"][warmup:]
    if not times:
        raise SystemExit(f"{name}: no timed steps (warm-up {warmup} of {len(res['times'])})")
    step = statistics.median(times)
    total = sum(times)
    sampled = sum(s.get("sampled_tokens", 0) for s in stats)
    trained = sum(s.get("train_tokens", s.get("task_tokens", 0) + s.get("sample_train_tokens", 0)) for s in stats)
    row = {"method": name, "step_s_median": round(step, 4), "steps_timed": len(times),
           "sampled_tok_per_s": round(sampled / total, 1), "train_tok_per_s": round(trained / total, 1),
           "mean_sampled_len": round(sampled / len(stats) / max(1, res.get("per_step", 1)), 2),
           "peak_mem_mb": round(res["peak_mb"], 1)}
    if stats and "sample_s" in stats[0]:
        samp = sum(s["sample_s"] for s in stats)
        row["sampling_share"] = round(samp / total, 3)
        if device == "cuda":  # update phase: 6 * params * trained tokens over the non-sampling time
            row["update_tflops"] = round(6 * n_params * trained / max(1e-9, total - samp) / 1e12, 2)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--model", default=None, help="HF model folder (default: a random Llama of config.yaml's size)")
    p.add_argument("--random-init", action="store_true",
                   help="use only the --model folder's config and tokenizer, with randomly initialised weights "
                        "(a config.json and tokenizer files are enough: no weights need to travel)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--band", type=float, nargs=2, default=[8, 16])
    p.add_argument("--steps", type=int, default=8, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--cache", default="dynamic", choices=["dynamic", "static"])
    p.add_argument("--methods", default="l3m,rloo,grpo,mm",
                   help="comma-separated: l3m, l3m_hf (L3M with generation.backend: hf), mm, rloo, grpo")
    args = p.parse_args(argv)
    import torch

    from methods.core.models import set_threads
    from methods.core.record import device_name, package_versions

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    set_threads({"threads": args.threads})
    work = Path(tempfile.mkdtemp(prefix="step_bench."))
    model, data = build_inputs(args, work)
    cfg = bench_config(args)
    from methods.core.models import load_model

    n_params = sum(x.numel() for x in load_model(model)[0].parameters())
    rows = []
    for m in args.methods.split(","):
        print(f"--- {m}", flush=True)
        if m in ("l3m", "mm"):
            res = time_onpolicy(m, cfg, model, data, work, args.device)
        elif m == "l3m_hf":  # L3M sampling through transformers' generate (generation.backend: hf)
            from methods.core.config import deep_merge

            res = time_onpolicy("l3m", deep_merge(cfg, {"generation": {"backend": "hf"}}), model, data, work,
                                args.device, name=m)
        else:
            res = time_trl(m, cfg, model, data, work, args)
        res["per_step"] = args.prompts * args.samples
        rows.append(summarise(m, res, args.warmup, n_params, args.device))
        print(rows[-1], flush=True)
    by = {r["method"]: r for r in rows}
    ratios = {}
    if "l3m" in by and "l3m_hf" in by:
        ratios["l3m_hf_over_l3m_step"] = round(by["l3m_hf"]["step_s_median"] / by["l3m"]["step_s_median"], 3)
    for peer in ("rloo", "grpo", "mm"):
        if "l3m" in by and peer in by:
            ratios[f"l3m_over_{peer}_step"] = round(by["l3m"]["step_s_median"] / by[peer]["step_s_median"], 3)
            ratios[f"l3m_over_{peer}_peak_mem"] = round(by["l3m"]["peak_mem_mb"] / by[peer]["peak_mem_mb"], 3)
    doc = {"command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])), "device": device_name(),
           "torch_threads": torch.get_num_threads(), "packages": package_versions(), "n_params": n_params,
           "settings": vars(args), "methods": rows, "ratios": ratios}
    write_report(out / "step_bench", doc, rows, ratios,
                 [f"# Step benchmark ({doc['device']}, {n_params / 1e6:.2f}M parameters, {args.prompts} prompts x "
                  f"{args.samples} samples x {args.new_tokens} new tokens)"])


def write_report(stem: Path, doc: dict, rows: list[dict], ratios: dict, header: list[str]) -> None:
    """``stem``.json (the whole document) and ``stem``.md (the header, the command, one table row per
    entry of ``rows``, the ratios); the markdown is printed too."""
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    cols = list(dict.fromkeys(k for r in rows for k in r))
    md = header[:1] + ["", f"Command: `{doc['command']}`", ""] + header[1:] + [
        "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    md += ["", "Ratios: " + ", ".join(f"{k} = {v}" for k, v in ratios.items()), ""]
    stem.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
