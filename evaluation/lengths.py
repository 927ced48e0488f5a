"""Response-length statistics of sampled responses (tokens of the sampling model's tokenizer)."""
from __future__ import annotations

import numpy as np


def length_stats(samples: list[dict], band: tuple[float, float] | None = None) -> dict:
    n = np.array([s["n_tokens"] for s in samples], dtype=float)
    q = np.percentile(n, [5, 25, 50, 75, 95]) if len(n) else [float("nan")] * 5
    out = {"n": int(len(n)), "mean": float(n.mean()), "std": float(n.std(ddof=1)) if len(n) > 1 else 0.0,
           "se": float(n.std(ddof=1) / np.sqrt(len(n))) if len(n) > 1 else 0.0,
           "p05": q[0], "q1": q[1], "median": q[2], "q3": q[3], "p95": q[4],
           "min": float(n.min()), "max": float(n.max()),
           "frac_finished": float(np.mean([s["finished"] for s in samples])),
           "frac_empty": float(np.mean([s["n_tokens"] == 0 for s in samples]))}
    if band is not None:
        lo, hi = band
        out["band"] = [lo, hi]
        out["frac_in_band"] = float(np.mean((n >= lo) & (n <= hi)))
    return {k: float(v) if isinstance(v, np.floating) else v for k, v in out.items()}
