"""Sampling a model on the test (or val) prompts (generation.n_prompts of them, all when 0) with the
generation settings and the config's seed: the samples every reward and length metric reads."""
from __future__ import annotations

from pathlib import Path

from methods.core.generation import sample
from methods.core.io import read_jsonl, write_json, write_jsonl
from methods.core.models import load_model
from methods.core.record import run_record


def sample_test_prompts(cfg: dict, model_dir, data_dir, out, split: str = "test") -> list[dict]:
    """Write ``out`` (JSONL: id, prompt, response, its token ids and length, finished) and
    ``out.run.json`` (its provenance); return the samples. ``split``: val for the tuning sweep and the
    nearest-mixture choice of the comparisons."""
    rows = read_jsonl(Path(data_dir) / f"{split}.jsonl")
    n = cfg["generation"]["n_prompts"]
    rows = rows[:n] if n else rows
    model, tok = load_model(model_dir, device=cfg["hardware"]["device"])
    samples = [{"id": r["id"], "prompt": r["prompt"], **{k: v for k, v in s.items() if k != "prompt_ids"}}
               for r, s in zip(rows, sample(model, tok, [r["prompt"] for r in rows], cfg["generation"], cfg["seed"]))]
    write_jsonl(out, samples)
    write_json(str(out) + ".run.json", run_record(cfg, cfg["seed"], model=str(model_dir), generation=cfg["generation"],
                                                  n_samples=len(samples), split=split))
    return samples
