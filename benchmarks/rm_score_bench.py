"""Reward-model scoring speed: length-sorted buckets against one padded batch, on real samples.

    .venv/bin/python benchmarks/rm_score_bench.py --rm resources/default_two_reward/models/rm_coherence \\
        --samples results/default_two_reward/seed1234/samples/l3m_pt0.jsonl --out results/benchmarks/cpu_rm_score

Scores the samples' (prompt, response) pairs with ``methods.core.rewards.score_ids`` as training
does (consecutive batches of ``--batch`` samples: one L3M/MM step's draws) and as evaluation does
(every sample in one call, ``--eval-batch`` at a time), each way with ``bucket`` 0 (input order:
every batch pads to its longest sequence, the code before buckets) and with each ``--buckets`` value.
Per setting: median seconds per call over ``--repeats`` passes, the real and the padded tokens fed
to the model, and the largest score difference from bucket 0 (float rounding only). The ratio
``bucketN_over_bucket0`` (time) is what the cost claim reads. Writes ``rm_score_bench.{json,md}``
into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def padded_tokens(lengths: list[int], n: int, bucket: int) -> int:
    """Tokens the model reads when ``score_ids`` scores sequences of these ``lengths``."""
    from methods.core.rewards import score_batches

    return sum(len(b) * max(lengths[i] for i in b) for b in score_batches(lengths, n, bucket))


def main(argv: list[str] | None = None) -> None:
    import torch

    from benchmarks.step_bench import write_report
    from methods.core.io import read_jsonl
    from methods.core.record import device_name, git_revision, package_versions
    from methods.core.rewards import HFClassifierReward, rm_encode, score_ids

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rm", required=True, help="a reward-model folder the DAG built")
    ap.add_argument("--samples", required=True, help="a samples .jsonl the evaluate rule wrote (prompt, response)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=32, help="samples per training step (onpolicy: 8 prompts x 4)")
    ap.add_argument("--eval-batch", type=int, default=64, help="the reward's batch_size at evaluation")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--buckets", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    rm = HFClassifierReward("bench", args.rm, max_length=args.max_length)
    rows = read_jsonl(args.samples)
    seqs = [rm_encode(rm.tok, r["prompt"], r["response"], rm.max_length) for r in rows]
    lengths = [len(q) for q in seqs]
    out, ratios, ref = [], {}, {}
    for mode, n in (("train", args.batch), ("eval", args.eval_batch)):
        calls = [seqs[i:i + args.batch] for i in range(0, len(seqs), args.batch)] if mode == "train" else [seqs]
        base = None
        for bucket in [0, *args.buckets]:
            score_ids(rm.model, calls[0], rm.tok.pad_token_id, n, bucket)  # warm-up
            times, scores = [], None
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                scores = torch.cat([score_ids(rm.model, c, rm.tok.pad_token_id, n, bucket) for c in calls])
                times.append((time.perf_counter() - t0) / len(calls))
            if bucket == 0:
                ref[mode] = scores
            sec = statistics.median(times)
            base = base or sec
            padded = sum(padded_tokens([len(q) for q in c], n, bucket) for c in calls)
            out.append({"mode": mode, "bucket": bucket, "rows_per_call": len(calls[0]), "calls": len(calls),
                        "s_per_call": round(sec, 4), "real_tokens": sum(lengths), "padded_tokens": padded,
                        "max_abs_diff_vs_bucket0": float((scores - ref[mode]).abs().max())})
            if bucket:
                ratios[f"{mode}_bucket{bucket}_over_bucket0"] = round(sec / base, 3)
    doc = {"command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])), "device": device_name(),
           "threads": args.threads, "git_revision": git_revision(), "packages": package_versions(),
           "rm": args.rm, "samples": args.samples, "n_samples": len(seqs),
           "length_mean": statistics.mean(lengths), "length_max": max(lengths), "rows": out, "ratios": ratios}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    n_params = sum(p.numel() for p in rm.model.parameters())
    write_report(Path(args.out) / "rm_score_bench", doc, out, ratios,
                 [f"# Reward-model scoring ({doc['device']}, {args.threads} thread(s), {n_params / 1e6:.1f}M parameters, "
                  f"{len(seqs)} samples, mean {doc['length_mean']:.1f} tokens)"])


if __name__ == "__main__":
    main()
